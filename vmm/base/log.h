// Logging to stderr: "husk-vmm: message" lines, or JSON lines with --log-format json.
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace husk::log {

enum class Level { Debug, Info, Warn, Error };
enum class Format { Text, Json };

void configure(std::string_view program, Level min_level, Format format);
// Where lines go (stderr by default); the caller keeps the fd open.
void set_output(int fd);
void write(Level level, std::string_view message);
// An error line from a signal handler: no lock, no allocation. `message` must
// need no JSON escaping (plain ASCII without quotes or backslashes).
void write_from_signal_handler(const char* message);
// Whether messages of `level` are written; checked before formatting.
bool enabled(Level level);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::Debug)) write(Level::Debug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::Info)) write(Level::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::Warn)) write(Level::Warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::Error)) write(Level::Error, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace husk::log
