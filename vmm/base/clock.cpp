#include "vmm/base/clock.h"

#include <time.h>

namespace husk::clock {
namespace {

uint64_t g_start = 0;

// Priority 101: runs before other static constructors, as close to exec as user code gets.
[[gnu::constructor(101)]] void capture_start() { g_start = now_ns(); }

}  // namespace

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

uint64_t process_start_ns() { return g_start; }

}  // namespace husk::clock
