#include "vmm/base/log.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

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
    case Level::Debug: return "debug";
    case Level::Info: return "info";
    case Level::Warn: return "warning";
    case Level::Error: return "error";
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
        timespec now{};
        ::clock_gettime(CLOCK_REALTIME, &now);
        tm utc{};
        ::gmtime_r(&now.tv_sec, &utc);
        char stamp[64];
        std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", utc.tm_year + 1900, utc.tm_mon + 1,
                      utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, now.tv_nsec);
        nlohmann::json j = {
            {"level", level_name(level)}, {"msg", message}, {"time", stamp}, {"t_ms", clock::ms_since_start()}};
        line = j.dump() + "\n";
    } else {
        line = g_program + ": " + (level >= Level::Warn ? std::string(level_name(level)) + ": " : "") +
               std::string(message) + "\n";
    }
    // One write per line keeps lines whole when threads log at once.
    [[maybe_unused]] ssize_t n = ::write(g_fd, line.data(), line.size());
}

}  // namespace husk::log
