// The test support library itself: a child that dies must fail a test, not
// kill the test binary.
#include "tests/lib/subprocess.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

namespace husk::test {
namespace {

TEST(Subprocess, WritingToAChildThatHasExitedReturnsFalse) {
    RunningProcess p({"true"}, true);
    ASSERT_GT(p.pid(), 0);
    ASSERT_EQ(p.wait_exit(10), 0);
    // Larger than a pipe's buffer: the write meets the closed end for sure.
    EXPECT_FALSE(p.write_stdin(std::string(1 << 20, 'x')));
    EXPECT_FALSE(p.write_stdin("again\n"));
}

TEST(Subprocess, StdinDataForAChildThatIgnoresItIsDropped) {
    RunOptions o;
    o.stdin_data = std::string(1 << 20, 'x');
    ProcessResult r = run_process({"true"}, o);
    EXPECT_EQ(r.exit_status, 0);
}

// The wait is by the clock: tries that take 300 ms each fit a 1 s wait a few
// times, not the ten a count of 100 ms steps would make.
TEST(Subprocess, WaitUntilEndsByTheClockHoweverLongEachTryTakes) {
    int tries = 0;
    EXPECT_FALSE(wait_until(
        [&] {
            ++tries;
            usleep(300 * 1000);
            return false;
        },
        1));
    EXPECT_LE(tries, 4);  // a slow machine makes fewer tries, never more
}

}  // namespace
}  // namespace husk::test
