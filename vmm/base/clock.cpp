#include "vmm/base/clock.h"

#include <time.h>

#include <cstdio>
#include <ctime>

namespace husk::clock {
namespace {

uint64_t g_start = 0;

// Priority 101: runs before other static constructors, as close to exec as user code gets.
[[gnu::constructor(101)]] void capture_start() {
    g_start = now_ns();
}

}  // namespace

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

uint64_t process_start_ns() {
    return g_start;
}

std::string rfc3339_now() {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    tm utc{};
    ::gmtime_r(&now.tv_sec, &utc);
    char stamp[64];
    std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", utc.tm_year + 1900, utc.tm_mon + 1,
                  utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, now.tv_nsec);
    return stamp;
}

}  // namespace husk::clock
