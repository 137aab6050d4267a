#include "vmm/base/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "vmm/base/clock.h"
#include "vmm/base/json_text.h"

namespace husk::log {
namespace {

std::mutex g_lock;
std::string g_program = "husk";
Level g_min = Level::Info;
Format g_format = Format::Text;
int g_fd = STDERR_FILENO;
// Copies a signal handler may read without the lock.
std::atomic<int> g_signal_fd{STDERR_FILENO};
std::atomic<bool> g_signal_json{false};
char g_signal_program[32] = "husk";

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
    g_signal_json = format == Format::Json;
    size_t n = std::min(program.size(), sizeof g_signal_program - 1);
    std::memcpy(g_signal_program, program.data(), n);
    g_signal_program[n] = '\0';
}

void set_output(int fd) {
    std::lock_guard guard(g_lock);
    g_fd = fd;
    g_signal_fd = fd;
}

void write_from_signal_handler(const char* message) {
    char line[512];
    size_t used = 0;
    auto put = [&](const char* s) {
        while (*s && used < sizeof line - 2) line[used++] = *s++;
    };
    if (g_signal_json) {
        put("{\"level\":\"error\",\"msg\":\"");
        put(message);
        put("\"}");
    } else {
        put(g_signal_program);
        put(": error: ");
        put(message);
    }
    line[used++] = '\n';
    [[maybe_unused]] ssize_t n = ::write(g_signal_fd, line, used);
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
        line = json_text(j) + "\n";
    } else {
        line = g_program + ": " + (level >= Level::Warn ? std::string(level_name(level)) + ": " : "") +
               std::string(message) + "\n";
    }
    // One write per line keeps lines whole when threads log at once.
    [[maybe_unused]] ssize_t n = ::write(g_fd, line.data(), line.size());
}

}  // namespace husk::log
