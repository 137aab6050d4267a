// Native tier: husk-vmm under its seccomp filters. Every thread of a running
// VMM is filtered; a forbidden call on any kind of thread kills husk-vmm with
// SIGSYS and the log names the call.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include "tests/lib/subprocess.h"

namespace husk::test {
namespace {

std::string vmm() {
    return env_or("HUSK_VMM");
}
std::string guest(const std::string& name) {
    return env_or("HUSK_GUESTS") + "/" + name + ".elf";
}

std::string read_text(const std::string& path) {
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

TEST(VmmSeccomp, AForbiddenCallOnEachKindOfThreadKillsTheVmmAndIsNamed) {
    for (const auto& [flag, name] : {std::pair{"vcpu", "vCPU"}, {"loop", "event loop"}, {"control", "control"}}) {
        auto r = run_process({vmm(), "--kernel", guest("hello"), "--memory", "32", "--seccomp-selftest", flag});
        EXPECT_EQ(r.exit_status, 128 + SIGSYS) << flag << ": " << r.err;
        EXPECT_NE(r.err.find(std::string("the ") + name + " thread made a forbidden system call: socket (41)"),
                  std::string::npos)
            << r.err;
        // The vCPU filter is in place before the first KVM_RUN and the
        // control one before any vCPU starts, so the guest never ran; the
        // event loop starts after the vCPUs, and a guest may print first.
        if (std::string_view(flag) != "loop") {
            EXPECT_EQ(r.out.find("Hello from a husk guest"), std::string::npos) << flag << ": the guest ran on";
        }
    }
}

TEST(VmmSeccomp, EveryThreadOfARunningVmmIsFiltered) {
    std::string log = "/tmp/husk-seccomp-native.log";
    std::string api = "/tmp/husk-seccomp-native.sock";
    ::unlink(log.c_str());
    pid_t pid = ::fork();
    if (pid == 0) {
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ::dup2(fd, STDERR_FILENO);
        int null = ::open("/dev/null", O_RDWR);
        ::dup2(null, STDOUT_FILENO);
        ::dup2(null, STDIN_FILENO);
        ::execl(vmm().c_str(), vmm().c_str(), "--kernel", guest("halt").c_str(), "--memory", "32", "--vcpus", "2",
                "--api", api.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ASSERT_GT(pid, 0);
    ASSERT_TRUE(wait_until([&] { return read_text(log).find("guest init reached") != std::string::npos; }, 30))
        << read_text(log);
    std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
    DIR* dir = ::opendir(task_dir.c_str());
    ASSERT_NE(dir, nullptr);
    int tasks = 0;
    while (dirent* e = ::readdir(dir)) {
        if (e->d_name[0] == '.') continue;
        std::string status = read_text(task_dir + "/" + e->d_name + "/status");
        ++tasks;
        EXPECT_NE(status.find("Seccomp:\t2"), std::string::npos) << "task " << e->d_name << " is not filtered";
        EXPECT_NE(status.find("NoNewPrivs:\t1"), std::string::npos) << "task " << e->d_name;
    }
    ::closedir(dir);
    // main, API, event loop, two vCPUs.
    EXPECT_GE(tasks, 5);
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGTERM) << read_text(log);
    ::unlink(log.c_str());
}

TEST(VmmSeccomp, TurningTheFiltersOffIsLoudAndBadModesAreRefused) {
    auto off = run_process({vmm(), "--kernel", guest("hello"), "--memory", "32", "--no-seccomp"});
    EXPECT_EQ(off.exit_status, 0) << off.err;
    EXPECT_NE(off.err.find("seccomp is off"), std::string::npos) << off.err;
    EXPECT_NE(off.err.find("for debugging only"), std::string::npos) << off.err;
    auto bad = run_process({vmm(), "--kernel", guest("hello"), "--seccomp", "strict"});
    EXPECT_EQ(bad.exit_status, 1);
    EXPECT_NE(bad.err.find("--seccomp: seccomp mode `strict`: expected enforce, log or off"), std::string::npos)
        << bad.err;
    auto thread = run_process({vmm(), "--kernel", guest("hello"), "--seccomp-selftest", "main"});
    EXPECT_EQ(thread.exit_status, 1);
    EXPECT_NE(thread.err.find("expected vcpu, loop or control"), std::string::npos) << thread.err;
}

}  // namespace
}  // namespace husk::test
