// compile_seccomp against the host's kernel: each filter is loaded in a forked
// child (with no_new_privs, so no privilege is needed) and its effect checked there.
#include "agent/seccomp_filter.h"

#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <functional>

namespace husk::agent {
namespace {

// Runs `check` in a child under `program`; the child's exit status is check's result.
int run_filtered(const SeccompProgram& program, const std::function<int()>& check) {
    pid_t pid = ::fork();
    if (pid == 0) {
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || !load_seccomp(program)) ::_exit(100);
        // exit_group itself: a sanitized build's _exit would first look for leaks, which takes calls the
        // filter under test may deny.
        ::syscall(SYS_exit_group, check());
    }
    // A filter that denies what the child needs could leave it spinning: it gets 30 s, then SIGKILL (209).
    int status = 0;
    for (int tenths = 0; ::waitpid(pid, &status, WNOHANG) == 0; ++tenths) {
        if (tenths == 300) ::kill(pid, SIGKILL);
        ::usleep(100'000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status);
}

Seccomp allow_by_default() {
    Seccomp s;
    s.default_action = SeccompAction::Allow;
    s.architectures = {"x86_64", "x86", "x32"};
    return s;
}

TEST(Seccomp, AnErrnoRuleAnswersItsSyscallsOnlyAndUnknownNamesAreLeftOut) {
    Seccomp s = allow_by_default();
    s.rules.push_back({{"mkdir", "mkdirat", "no_such_syscall"}, SeccompAction::Errno, 77, {}});
    auto program = compile_seccomp(s);
    ASSERT_TRUE(program) << program.error().message();
    EXPECT_EQ(program.value().unknown_syscalls, std::vector<std::string>{"no_such_syscall"});
    EXPECT_EQ(run_filtered(program.value(), [] { return ::mkdir("/nonexistent/x", 0755) < 0 ? errno : 0; }), 77);
    EXPECT_EQ(run_filtered(program.value(), [] { return ::getppid() > 0 ? 0 : 1; }), 0);
}

// As runc builds them: arguments on one index are alternatives, on distinct indices all must match.
TEST(Seccomp, ArgumentsOnOneIndexAreAlternativesOnDistinctOnesAllMustMatch) {
    Seccomp s = allow_by_default();
    s.rules.push_back(
        {{"dup"}, SeccompAction::Errno, 55, {{0, 100, 0, SeccompOp::Equal}, {0, 101, 0, SeccompOp::Equal}}});
    s.rules.push_back(
        {{"dup3"}, SeccompAction::Errno, 55, {{0, 100, 0, SeccompOp::Equal}, {1, 200, 0, SeccompOp::Equal}}});
    auto program = compile_seccomp(s);
    ASSERT_TRUE(program) << program.error().message();
    auto errno_of = [](std::function<int()> call) { return [call] { return call() < 0 ? errno : 0; }; };
    EXPECT_EQ(run_filtered(program.value(), errno_of([] { return ::dup(100); })), 55);
    EXPECT_EQ(run_filtered(program.value(), errno_of([] { return ::dup(101); })), 55);
    EXPECT_EQ(run_filtered(program.value(), errno_of([] { return ::dup(102); })), EBADF);
    EXPECT_EQ(run_filtered(program.value(), errno_of([] { return ::dup3(100, 200, 0); })), 55);
    EXPECT_EQ(run_filtered(program.value(), errno_of([] { return ::dup3(100, 201, 0); })), EBADF);
}

// Docker's profile is an allow list under a default of EPERM, with rules that repeat the default.
TEST(Seccomp, ADenyByDefaultProfileAllowsItsListAndSkipsRulesEqualToTheDefault) {
    Seccomp s;
    s.default_action = SeccompAction::Errno;
    s.default_errno = EPERM;
    s.rules.push_back({{"exit_group", "exit", "getppid"}, SeccompAction::Allow, 0, {}});
    s.rules.push_back({{"getuid"}, SeccompAction::Errno, EPERM, {}});  // the default again
    auto program = compile_seccomp(s);
    ASSERT_TRUE(program) << program.error().message();
    EXPECT_EQ(run_filtered(program.value(), [] { return ::getppid() > 0 ? 0 : 1; }), 0);
    EXPECT_EQ(run_filtered(program.value(), [] { return ::syscall(SYS_getuid) < 0 ? errno : 0; }), EPERM);
}

TEST(Seccomp, AnUnknownArchitectureIsRefusedByName) {
    Seccomp s = allow_by_default();
    s.architectures = {"vax"};
    auto program = compile_seccomp(s);
    ASSERT_FALSE(program);
    EXPECT_NE(program.error().message().find("unknown architecture `vax`"), std::string::npos)
        << program.error().message();
}

}  // namespace
}  // namespace husk::agent
