#include "vmm/base/log.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "vmm/base/clock.h"

namespace husk::log {
namespace {

std::mutex g_lock;
std::string g_program = "husk";
Level g_min = Level::Info;
Format g_format = Format::Text;
int g_fd = STDERR_FILENO;

const char* level_name(Level l) {
    switch (l) {
        case Level::Debug:
            return "debug";
        case Level::Info:
            return "info";
        case Level::Warn:
            return "warning";
        case Level::Error:
            return "error";
    }
    return "info";
}

}  // namespace

void configure(std::string_view program, Level min_level, Format format) {
    std::lock_guard guard(g_lock);
    g_program = program;
    g_min = min_level;
    g_format = format;
}

void set_output(int fd) {
    std::lock_guard guard(g_lock);
    g_fd = fd;
}

bool enabled(Level level) {
    std::lock_guard guard(g_lock);
    return level >= g_min;
}

void write(Level level, std::string_view message) {
    std::lock_guard guard(g_lock);
    if (level < g_min) return;
    std::string line;
    if (g_format == Format::Json) {
        // The fields runc writes ("level", "msg", "time"), which containerd's shim reads back.
        nlohmann::json j = {{"level", level_name(level)},
                            {"msg", message},
                            {"time", clock::rfc3339_now()},
                            {"t_ms", clock::ms_since_start()}};
        line = j.dump() + "\n";
    } else {
        line = g_program + ": " + (level >= Level::Warn ? std::string(level_name(level)) + ": " : "") +
               std::string(message) + "\n";
    }
    // One write per line keeps lines whole when threads log at once.
    [[maybe_unused]] ssize_t n = ::write(g_fd, line.data(), line.size());
}

}  // namespace husk::log
