// Monotonic timestamps relative to the process start (captured before main()).
#pragma once

#include <cstdint>
#include <string>

namespace husk::clock {

uint64_t now_ns();
// Nanoseconds at process start (static initialisation, before main).
uint64_t process_start_ns();
inline double ms_since_start() {
    return double(now_ns() - process_start_ns()) / 1e6;
}
// Wall-clock time as RFC 3339 with nanoseconds, UTC: "2026-11-25T06:37:07.332078850Z".
std::string rfc3339_now();

}  // namespace husk::clock
