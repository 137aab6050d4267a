// Monotonic timestamps relative to the process start (captured before main()).
#pragma once

#include <cstdint>

namespace husk::clock {

uint64_t now_ns();
// Nanoseconds at process start (static initialisation, before main).
uint64_t process_start_ns();
inline double ms_since_start() { return double(now_ns() - process_start_ns()) / 1e6; }

}  // namespace husk::clock
