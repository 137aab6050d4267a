// A deadline for each test of a binary that drives real engines and VMs:
// a test still running after HUSK_TEST_DEADLINE seconds (default 600) is
// reported as failed, with the processes then running, and the binary exits
// with status 124. tests/run treats that status as it treats a rig that
// stopped making progress: the tests that had not finished go on in a fresh
// rig, and the one that hung counts as failed. Without it, one hung test
// holds its rig until the suite's timeout and the others never run.
//
// Linked into rig_tests; registers itself before main() runs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "tests/lib/subprocess.h"

namespace husk::test {
namespace {

using Clock = std::chrono::steady_clock;

int deadline_seconds() {
    std::string s = env_or("HUSK_TEST_DEADLINE");
    int n = s.empty() ? 600 : std::atoi(s.c_str());
    return n > 0 ? n : 600;
}

// The watch and what it watches. Never destroyed: gtest deletes its
// listeners at exit, while the watching thread still waits on this.
struct Watch {
    const int seconds = deadline_seconds();
    std::mutex mutex;
    std::condition_variable changed;
    std::string name;
    Clock::time_point started;
    bool running = false;

    [[noreturn]] void run() {
        std::unique_lock lock(mutex);
        for (;;) {
            changed.wait(lock, [&] { return running; });
            auto deadline = started + std::chrono::seconds(seconds);
            std::string test = name;
            if (changed.wait_until(lock, deadline, [&] { return !running || name != test; })) continue;
            // gtest's own output is on stdout: flush it before ours.
            std::fflush(stdout);
            auto ps = shell("ps -eo pid,ppid,etimes,stat,wchan:24,args --forest | cut -c1-200", "", 30);
            std::printf(
                "\n[deadline] %s still running after %d s (HUSK_TEST_DEADLINE); the processes now:\n%s"
                "[  FAILED  ] %s (%d ms)\n",
                test.c_str(), seconds, ps.out.c_str(), test.c_str(), seconds * 1000);
            std::fflush(stdout);
            _exit(124);
        }
    }
};

class Deadline : public ::testing::EmptyTestEventListener {
public:
    Deadline() : m_watch(new Watch) {
        std::thread([watch = m_watch] { watch->run(); }).detach();
    }
    void OnTestStart(const ::testing::TestInfo& info) override {
        std::lock_guard lock(m_watch->mutex);
        m_watch->name = std::string(info.test_suite_name()) + "." + info.name();
        m_watch->started = Clock::now();
        m_watch->running = true;
        m_watch->changed.notify_all();
    }
    void OnTestEnd(const ::testing::TestInfo&) override {
        std::lock_guard lock(m_watch->mutex);
        m_watch->running = false;
    }

private:
    Watch* m_watch;
};

[[maybe_unused]] const bool registered = [] {
    ::testing::UnitTest::GetInstance()->listeners().Append(new Deadline);
    return true;
}();

}  // namespace
}  // namespace husk::test
