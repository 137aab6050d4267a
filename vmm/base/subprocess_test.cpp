#include "vmm/base/subprocess.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <string>

namespace husk::sys {
namespace {

// Everything a pipe's write end will ever carry, once the writers are gone.
std::string drain(int fd) {
    std::string text;
    char buf[512];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, size_t(n));
    ::close(fd);
    return text;
}

TEST(Spawn, AProgramThatCannotRunIsAnErrorNamingIt) {
    auto r = spawn({"/nonexistent/husk-no-such-program"});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("exec /nonexistent/husk-no-such-program"), std::string::npos)
        << r.error().message();
    EXPECT_EQ(r.error().code(), ENOENT);
}

TEST(Spawn, StdioGoWhereAskedEvenCrosswise) {
    int out[2];
    ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
    SpawnOptions o;
    o.stderr_fd = out[1];  // the child's stderr on the pipe, its stdout on /dev/null
    auto pid = spawn({"sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"}, o);
    ASSERT_TRUE(pid) << pid.error().message();
    ::close(out[1]);
    EXPECT_EQ(drain(out[0]), "to-stderr\n");
    EXPECT_EQ(wait_exit_status(pid.value()), 3);
}

TEST(Spawn, BeforeExecFailureIsReportedWithItsErrno) {
    SpawnOptions o;
    o.before_exec = [] { return EPERM; };
    o.before_exec_what = "enter the namespace";
    auto r = spawn({"true"}, o);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), EPERM);
    EXPECT_NE(r.error().message().find("enter the namespace"), std::string::npos) << r.error().message();
}

TEST(Spawn, TheProgramStartsWithDefaultSignalsAndItsOwnEnvironment) {
    // A parent that blocks signals (husk-vmm's threads do) must not hand that on.
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    ::pthread_sigmask(SIG_BLOCK, &term, &old);
    int out[2];
    ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
    SpawnOptions o;
    o.stdout_fd = out[1];
    std::vector<std::string> env = {"HUSK_SPAWN_TEST=given", "PATH=/usr/bin:/bin"};
    o.env = &env;
    auto pid = spawn({"sh", "-c", "grep SigBlk /proc/self/status; echo $HUSK_SPAWN_TEST"}, o);
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ASSERT_TRUE(pid) << pid.error().message();
    ::close(out[1]);
    EXPECT_EQ(drain(out[0]), "SigBlk:\t0000000000000000\ngiven\n");
    EXPECT_EQ(wait_exit_status(pid.value()), 0);
}

TEST(Spawn, ASignalDeathIs128PlusTheSignal) {
    auto pid = spawn({"sh", "-c", "kill -KILL $$"});
    ASSERT_TRUE(pid) << pid.error().message();
    int signal = 0;
    EXPECT_EQ(wait_exit_status(pid.value(), &signal), 128 + SIGKILL);
    EXPECT_EQ(signal, SIGKILL);
}

}  // namespace
}  // namespace husk::sys
