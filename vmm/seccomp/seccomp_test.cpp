// The filters themselves, in forked children (a filter cannot be taken off):
// each kind of thread keeps what it needs, a forbidden call kills the process
// with SIGSYS and the log names the call (and an ioctl's request).
#include "vmm/seccomp/seccomp.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "vmm/base/log.h"

namespace husk::seccomp {
namespace {

struct Outcome {
    int status = 0;
    std::string log;
};

// Runs `body` in a child under `mode` and `kind`'s filter (`before` runs in the
// child first, unfiltered); the child exits 0 if body returns.
Outcome in_child(
    Mode mode, Thread kind, const std::function<void()>& body, const std::function<void()>& before = [] {}) {
    int pipe_fds[2];
    EXPECT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close(pipe_fds[0]);
        log::configure("husk-vmm", log::Level::Info, log::Format::Text);
        log::set_output(pipe_fds[1]);
        before();
        if (configure(mode).is_error() || install(kind).is_error()) ::_exit(100);
        body();
        ::_exit(0);
    }
    ::close(pipe_fds[1]);
    Outcome out;
    char buf[512];
    for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) out.log.append(buf, size_t(n));
    ::close(pipe_fds[0]);
    ::waitpid(pid, &out.status, 0);
    return out;
}

bool killed_by_sigsys(const Outcome& o) {
    return WIFSIGNALED(o.status) && WTERMSIG(o.status) == SIGSYS;
}

TEST(Seccomp, EachThreadKeepsWhatItNeeds) {
    for (Thread kind : {Thread::Vcpu, Thread::EventLoop, Thread::Control}) {
        auto o = in_child(Mode::Enforce, kind, [] {
            int efd = ::eventfd(0, EFD_CLOEXEC);
            uint64_t one = 1;
            if (efd < 0 || ::write(efd, &one, sizeof one) != sizeof one) ::_exit(1);
            void* p = ::mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED || ::madvise(p, 1 << 20, MADV_DONTNEED) != 0) ::_exit(2);
            ::munmap(p, 1 << 20);
            std::string s(1 << 20, 'x');  // malloc
            ::kill(::getpid(), 0);
        });
        // The vCPU list has no eventfd2: it only writes to eventfds it was given.
        if (kind == Thread::Vcpu) {
            EXPECT_TRUE(killed_by_sigsys(o)) << o.log;
            EXPECT_NE(o.log.find("forbidden system call: eventfd2"), std::string::npos) << o.log;
        } else {
            EXPECT_TRUE(WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0) << thread_name(kind) << ": " << o.log;
        }
    }
}

// glibc reads /proc/sys/vm/overcommit_memory the first time a thread's own
// arena shrinks; under the thread's filter that open killed husk-vmm (seen
// when a container's output streamed through vsock to a slow reader). With
// the filters on, every thread allocates from the one main arena, which
// shrinks with brk. In a fresh process, as husk-vmm's: this one's earlier
// tests have made arenas (and may have read the file) already.
TEST(Seccomp, MuchFreedOnAFilteredThreadOpensNothing) {
    // A sanitizer's allocator replaces glibc's arenas.
    if (kSanitizerBuild) GTEST_SKIP() << "glibc's allocator is not the one in use";
    pid_t pid = ::fork();
    if (pid == 0) {
        ::setenv("HUSK_SECCOMP_CHURN", "1", 1);
        ::execl("/proc/self/exe", "vmm_unit_tests", "--gtest_filter=SeccompFreshProcess.FreeMuchOnTheEventLoop",
                nullptr);
        ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "status " << status << (WIFSIGNALED(status) ? " (killed by a signal)" : "");
}

// Run only by the test above, in a process of its own.
TEST(SeccompFreshProcess, FreeMuchOnTheEventLoop) {
    if (!std::getenv("HUSK_SECCOMP_CHURN")) GTEST_SKIP() << "run by Seccomp.MuchFreedOnAFilteredThreadOpensNothing";
    ASSERT_FALSE(configure(Mode::Enforce).is_error());
    std::thread churn([] {
        if (install(Thread::EventLoop).is_error()) ::_exit(101);
        for (int round = 0; round < 4; ++round) {
            std::vector<void*> blocks;
            for (int i = 0; i < 64; ++i) blocks.push_back(::malloc(64 << 10));
            for (void* b : blocks) ::free(b);
        }
    });
    churn.join();
}

TEST(Seccomp, ControlThreadsStartThreadsButNoProcesses) {
    auto threads = in_child(Mode::Enforce, Thread::Control, [] {
        int x = 0;
        std::thread([&] { x = 1; }).join();
        if (x != 1) ::_exit(1);
    });
    EXPECT_TRUE(WIFEXITED(threads.status) && WEXITSTATUS(threads.status) == 0) << threads.log;
    if (kSanitizerBuild) GTEST_SKIP() << "sanitizer builds let control threads clone (LeakSanitizer needs it)";
    auto fork = in_child(Mode::Enforce, Thread::Control, [] { (void)::fork(); });
    EXPECT_TRUE(killed_by_sigsys(fork)) << fork.log;
    EXPECT_NE(fork.log.find("forbidden system call: clone (56)"), std::string::npos) << fork.log;
}

TEST(Seccomp, AForbiddenCallKillsAndIsNamed) {
    auto o = in_child(Mode::Enforce, Thread::Vcpu, [] { (void)::connect(0, nullptr, 0); });
    EXPECT_TRUE(killed_by_sigsys(o)) << o.log;
    EXPECT_NE(o.log.find("the vCPU thread made a forbidden system call: connect (42)"), std::string::npos) << o.log;
}

TEST(Seccomp, IoctlsAreFilteredByRequest) {
    int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    // KVM_RUN on a non-KVM fd fails (ENOTTY) but is let through.
    auto allowed = in_child(Mode::Enforce, Thread::Vcpu, [fd] {
        if (::ioctl(fd, KVM_RUN, 0) != -1) ::_exit(1);
    });
    EXPECT_TRUE(WIFEXITED(allowed.status) && WEXITSTATUS(allowed.status) == 0) << allowed.log;
    auto refused = in_child(Mode::Enforce, Thread::Vcpu, [fd] { (void)::ioctl(fd, KVM_CREATE_VM, 0); });
    EXPECT_TRUE(killed_by_sigsys(refused)) << refused.log;
    char request[32];
    snprintf(request, sizeof request, "request 0x%lx", static_cast<unsigned long>(KVM_CREATE_VM));
    EXPECT_NE(refused.log.find(std::string("ioctl (16), ") + request), std::string::npos) << refused.log;
    ::close(fd);
}

TEST(Seccomp, ArgumentFilters) {
    // No executable memory.
    auto exec = in_child(Mode::Enforce, Thread::Control, [] {
        (void)::mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    });
    EXPECT_TRUE(killed_by_sigsys(exec)) << exec.log;
    EXPECT_NE(exec.log.find("mmap"), std::string::npos) << exec.log;
    // Unix sockets only.
    auto unix_socket = in_child(Mode::Enforce, Thread::Control, [] {
        if (::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) < 0) ::_exit(1);
    });
    EXPECT_TRUE(WIFEXITED(unix_socket.status) && WEXITSTATUS(unix_socket.status) == 0) << unix_socket.log;
    auto inet = in_child(Mode::Enforce, Thread::Control, [] { (void)::socket(AF_INET, SOCK_STREAM, 0); });
    EXPECT_TRUE(killed_by_sigsys(inet)) << inet.log;
    // Signals only to this process.
    auto other = in_child(Mode::Enforce, Thread::Control, [] { (void)::kill(1, 0); });
    EXPECT_TRUE(killed_by_sigsys(other)) << other.log;
    EXPECT_NE(other.log.find("kill (62)"), std::string::npos) << other.log;
}

// vsock.dns_forward: the event loop, under the control filter it starts with
// and its own, makes TCP sockets; datagram ones stay forbidden.
TEST(Seccomp, ADnsForwardLetsTheEventLoopMakeTcpSocketsOnly) {
    auto body = [](int type) {
        return [type] {
            if (install(Thread::EventLoop).is_error()) ::_exit(101);
            if (::socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) < 0) ::_exit(1);
        };
    };
    auto tcp = in_child(Mode::Enforce, Thread::Control, body(SOCK_STREAM), [] { allow_dns_forward(); });
    EXPECT_TRUE(WIFEXITED(tcp.status) && WEXITSTATUS(tcp.status) == 0) << tcp.status << " " << tcp.log;
    auto udp = in_child(Mode::Enforce, Thread::Control, body(SOCK_DGRAM), [] { allow_dns_forward(); });
    EXPECT_TRUE(killed_by_sigsys(udp)) << udp.log;
    // Without it, not even TCP.
    auto none = in_child(Mode::Enforce, Thread::Control, body(SOCK_STREAM));
    EXPECT_TRUE(killed_by_sigsys(none)) << none.log;
}

TEST(Seccomp, LogModeLetsTheCallThrough) {
    auto o = in_child(Mode::Log, Thread::Vcpu, [] {
        int fd = ::open("/dev/null", O_RDONLY);
        if (fd < 0) ::_exit(1);
    });
    EXPECT_TRUE(WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0) << o.log;
}

TEST(Seccomp, OffInstallsNothing) {
    auto o = in_child(Mode::Off, Thread::Vcpu, [] {
        if (::socket(AF_INET, SOCK_STREAM, 0) < 0) ::_exit(1);
    });
    EXPECT_TRUE(WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0) << o.log;
}

TEST(Seccomp, ListsAreNestedAndLeaveOutTheDangerousCalls) {
    auto control = allowed(Thread::Control);
    for (Thread kind : {Thread::Vcpu, Thread::EventLoop}) {
        for (const auto& name : allowed(kind))
            EXPECT_TRUE(std::binary_search(control.begin(), control.end(), name))
                << thread_name(kind) << " allows " << name << " and control does not: it would be refused";
    }
    for (Thread kind : {Thread::Vcpu, Thread::EventLoop, Thread::Control}) {
        auto names = allowed(kind);
        if (kSanitizerBuild) continue;  // ptrace for LeakSanitizer
        for (const char* bad : {"execve",           "execveat",        "fork",    "vfork",
                                "ptrace",           "mount",           "umount2", "pivot_root",
                                "chroot",           "setns",           "unshare", "init_module",
                                "finit_module",     "kexec_load",      "bpf",     "process_vm_writev",
                                "process_vm_readv", "perf_event_open", "keyctl",  "userfaultfd"})
            EXPECT_FALSE(std::binary_search(names.begin(), names.end(), bad)) << thread_name(kind) << ": " << bad;
    }
    auto vcpu = allowed(Thread::Vcpu);
    for (const char* bad : {"openat", "socket", "connect", "clone", "io_uring_register", "fallocate"}) {
        if (kSanitizerBuild && (std::string_view(bad) == "openat" || std::string_view(bad) == "clone")) continue;
        EXPECT_FALSE(std::binary_search(vcpu.begin(), vcpu.end(), bad)) << "vCPU: " << bad;
    }
}

TEST(Seccomp, ModesAndThreadsParse) {
    EXPECT_EQ(parse_mode("enforce").value(), Mode::Enforce);
    EXPECT_EQ(parse_mode("log").value(), Mode::Log);
    EXPECT_EQ(parse_mode("off").value(), Mode::Off);
    auto bad = parse_mode("strict");
    ASSERT_TRUE(bad.is_error());
    EXPECT_NE(bad.error().message().find("expected enforce, log or off"), std::string::npos);
    EXPECT_EQ(parse_thread("vcpu").value(), Thread::Vcpu);
    EXPECT_TRUE(parse_thread("main").is_error());
}

}  // namespace
}  // namespace husk::seccomp
