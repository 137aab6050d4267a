#include "vmm/seccomp/seccomp.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <malloc.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>

#include "vmm/base/log.h"
#include "vmm/kvm/kvm_abi.h"

namespace husk::seccomp {
namespace {

std::atomic<Mode> g_mode{Mode::Off};
std::atomic<int> g_selftest{-1};
std::atomic<bool> g_file_sharing{false};
std::atomic<bool> g_dns_forward{false};

// Names for the SIGSYS handler, resolved before any filter is installed
// (libseccomp's lookup allocates; a signal handler must not).
constexpr int kMaxSyscall = 512;
std::array<std::array<char, 32>, kMaxSyscall> g_names{};
thread_local const char* t_thread = "helper";  // a thread that inherited its creator's filter

struct Rule {
    int nr;
    std::vector<scmp_arg_cmp> args;  // all must hold; several rules for one call are alternatives
};

using Rules = std::vector<Rule>;

void add(Rules& rules, std::initializer_list<int> calls) {
    for (int nr : calls) rules.push_back({nr, {}});
}

// ioctl with only these requests (compared as the kernel does: 32 bits).
void add_ioctls(Rules& rules, std::initializer_list<unsigned long> requests) {
    for (unsigned long r : requests) rules.push_back({SCMP_SYS(ioctl), {SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, r)}});
}

// What every thread needs: its own I/O on fds it was given, memory for
// malloc (never executable), futexes, signals to this process only, time.
void add_common(Rules& rules, pid_t pid) {
    add(rules, {SCMP_SYS(read),
                SCMP_SYS(write),
                SCMP_SYS(readv),
                SCMP_SYS(writev),
                SCMP_SYS(pread64),
                SCMP_SYS(pwrite64),
                SCMP_SYS(close),
                SCMP_SYS(futex),
                SCMP_SYS(rt_sigreturn),
                SCMP_SYS(rt_sigprocmask),
                SCMP_SYS(exit),
                SCMP_SYS(exit_group),
                SCMP_SYS(clock_gettime),
                SCMP_SYS(clock_nanosleep),
                SCMP_SYS(nanosleep),
                SCMP_SYS(gettid),
                SCMP_SYS(getpid),
                SCMP_SYS(madvise),
                SCMP_SYS(munmap),
                SCMP_SYS(mremap),
                SCMP_SYS(brk),
                SCMP_SYS(sched_yield),
                SCMP_SYS(restart_syscall),
                SCMP_SYS(getrandom),
                SCMP_SYS(poll),
                SCMP_SYS(ppoll),
                SCMP_SYS(rseq),
                SCMP_SYS(set_robust_list),
                SCMP_SYS(sigaltstack)});
    // Anonymous and file mappings, but nothing executable.
    rules.push_back({SCMP_SYS(mmap), {SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)}});
    rules.push_back({SCMP_SYS(mprotect), {SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)}});
    // Sanitizer builds (tests only): what the sanitizer runtimes call on any
    // thread (a pipe to probe memory, /proc/self/maps for a report) and
    // LeakSanitizer's check at exit (a helper task that ptraces every thread).
    if (kSanitizerBuild)
        add(rules,
            {SCMP_SYS(pipe), SCMP_SYS(pipe2), SCMP_SYS(open), SCMP_SYS(openat), SCMP_SYS(getdents), SCMP_SYS(readlink),
             SCMP_SYS(newfstatat), SCMP_SYS(fstat), SCMP_SYS(getdents64), SCMP_SYS(prlimit64), SCMP_SYS(getrlimit),
             SCMP_SYS(sched_getaffinity), SCMP_SYS(mincore), SCMP_SYS(prctl), SCMP_SYS(rt_sigaction), SCMP_SYS(clone),
             SCMP_SYS(ptrace), SCMP_SYS(wait4), SCMP_SYS(getppid)});
    // Kicks and wake-ups go to this process's own threads.
    rules.push_back({SCMP_SYS(kill), {SCMP_A0(SCMP_CMP_EQ, uint64_t(pid))}});
    rules.push_back({SCMP_SYS(tgkill), {SCMP_A0(SCMP_CMP_EQ, uint64_t(pid))}});
}

// Host sockets: AF_UNIX only (the API, vsock's host side, the agent session).
void add_unix_sockets(Rules& rules) {
    rules.push_back({SCMP_SYS(socket), {SCMP_A0(SCMP_CMP_EQ, AF_UNIX)}});
    add(rules, {SCMP_SYS(connect), SCMP_SYS(accept4), SCMP_SYS(sendmsg), SCMP_SYS(recvmsg), SCMP_SYS(sendto),
                SCMP_SYS(recvfrom), SCMP_SYS(shutdown), SCMP_SYS(getsockopt), SCMP_SYS(setsockopt),
                SCMP_SYS(getsockname), SCMP_SYS(getpeername), SCMP_SYS(fcntl), SCMP_SYS(eventfd2), SCMP_SYS(newfstatat),
                SCMP_SYS(fstat), SCMP_SYS(lseek)});
}

// vsock.dns_forward: TCP streams to the container's DNS server, in the
// container's own network namespace (which the guest reaches anyway).
void add_dns_forward(Rules& rules) {
    rules.push_back({SCMP_SYS(socket), {SCMP_A0(SCMP_CMP_EQ, AF_INET), SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_STREAM)}});
}

// virtio-fs's FUSE server (devices/virtio/fs/fuse_server.cpp), on the event
// loop: file system calls relative to the fds it holds on the shared trees
// (the ring's READV and WRITEV move READ and WRITE data straight to and from guest
// memory, on a duplicate fd: fcntl F_DUPFD_CLOEXEC; pread and pwrite through the
// device's buffer when the guest's buffers are more than one call takes).
// Its confinement is its own (openat2 RESOLVE_BENEATH, no device nodes); the
// filter keeps everything else (exec, sockets other than AF_UNIX, mounts) out.
void add_file_sharing(Rules& rules) {
    add(rules,
        {SCMP_SYS(openat),    SCMP_SYS(openat2),    SCMP_SYS(newfstatat), SCMP_SYS(fstat),        SCMP_SYS(statx),
         SCMP_SYS(fstatfs),   SCMP_SYS(readlinkat), SCMP_SYS(mkdirat),    SCMP_SYS(mknodat),      SCMP_SYS(symlinkat),
         SCMP_SYS(linkat),    SCMP_SYS(unlinkat),   SCMP_SYS(renameat2),  SCMP_SYS(renameat),     SCMP_SYS(fchownat),
         SCMP_SYS(fchown),    SCMP_SYS(fchmodat),   SCMP_SYS(fchmod),     SCMP_SYS(utimensat),    SCMP_SYS(ftruncate),
         SCMP_SYS(fallocate), SCMP_SYS(fsync),      SCMP_SYS(fdatasync),  SCMP_SYS(getdents64),   SCMP_SYS(lseek),
         SCMP_SYS(fgetxattr), SCMP_SYS(fsetxattr),  SCMP_SYS(flistxattr), SCMP_SYS(fremovexattr), SCMP_SYS(fcntl),
         SCMP_SYS(pread64),   SCMP_SYS(pwrite64),   SCMP_SYS(preadv),     SCMP_SYS(pwritev)});
}

Rules rules_for(Thread kind, pid_t pid) {
    Rules rules;
    add_common(rules, pid);
    if (g_file_sharing && kind != Thread::Vcpu) add_file_sharing(rules);
    switch (kind) {
        case Thread::Vcpu:
            // KVM_RUN, and the serial port's interrupt line (PIO exits are handled
            // here); its own registers for a crash report.
            add_ioctls(rules, {KVM_RUN, KVM_IRQ_LINE, KVM_GET_REGS, KVM_GET_SREGS});
            // virtio-net's activation (the guest's DRIVER_OK) tells the TAP which offloads the guest took.
            add_ioctls(rules, {TUNSETOFFLOAD});
            // A device the guest sets up through MMIO hands its first reads to
            // the event loop's ring. The ring takes only the operations its
            // restrictions list (vmm/io/event_loop.cpp), so it is no way around this filter.
            add(rules, {SCMP_SYS(io_uring_enter)});
            break;
        case Thread::EventLoop:
            add(rules, {SCMP_SYS(io_uring_enter), SCMP_SYS(fallocate)});
            add_unix_sockets(rules);
            if (g_dns_forward) add_dns_forward(rules);
            add_ioctls(rules, {KVM_IRQ_LINE, FIONREAD});
            break;
        case Thread::Control:
            add(rules, {SCMP_SYS(io_uring_enter), SCMP_SYS(fallocate)});
            add_unix_sockets(rules);
            // The event loop's threads start under this filter too (filters stack).
            if (g_dns_forward) add_dns_forward(rules);
            // Snapshots, the API socket, /proc/self for statistics.
            add(rules, {SCMP_SYS(openat),
                        SCMP_SYS(mkdir),
                        SCMP_SYS(mkdirat),
                        SCMP_SYS(rename),
                        SCMP_SYS(renameat),
                        SCMP_SYS(unlink),
                        SCMP_SYS(unlinkat),
                        SCMP_SYS(fsync),
                        SCMP_SYS(fdatasync),
                        SCMP_SYS(ftruncate),
                        SCMP_SYS(statx),
                        SCMP_SYS(getdents64),
                        SCMP_SYS(readlink),
                        SCMP_SYS(faccessat),
                        SCMP_SYS(faccessat2),
                        SCMP_SYS(access),
                        SCMP_SYS(memfd_create),
                        SCMP_SYS(bind),
                        SCMP_SYS(listen),
                        SCMP_SYS(dup),
                        SCMP_SYS(dup3),
                        SCMP_SYS(pipe2),
                        SCMP_SYS(rt_sigtimedwait),
                        SCMP_SYS(rt_sigaction),
                        SCMP_SYS(sched_getaffinity),
                        SCMP_SYS(prctl),
                        SCMP_SYS(getuid),
                        SCMP_SYS(geteuid),
                        SCMP_SYS(getgid),
                        SCMP_SYS(getegid),
                        SCMP_SYS(uname),
                        SCMP_SYS(sysinfo),
                        SCMP_SYS(epoll_create1),
                        SCMP_SYS(epoll_ctl),
                        SCMP_SYS(epoll_wait),
                        SCMP_SYS(epoll_pwait)});
            // New threads only (helper threads, the session's relays), never processes.
            rules.push_back({SCMP_SYS(clone), {SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)}});
            // Sanitizer builds (tests only): LeakSanitizer's check at exit stops
            // the world from a helper task that ptraces every thread.
            if (kSanitizerBuild) add(rules, {SCMP_SYS(clone), SCMP_SYS(ptrace), SCMP_SYS(wait4), SCMP_SYS(getppid)});
            // A thread started here narrows its inherited filter with its own
            // (seccomp can only ever add restrictions).
            add(rules, {SCMP_SYS(set_tid_address), SCMP_SYS(seccomp)});
            add_ioctls(rules,
                       {// vCPU and VM state for snapshots, restore and reset.
                        KVM_RUN, KVM_IRQ_LINE, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_SET_FPU,
                        KVM_GET_LAPIC, KVM_SET_LAPIC, kvm_abi::kGetMsrs, kvm_abi::kSetMsrs, kvm_abi::kGetMsrIndexList,
                        kvm_abi::kGetCpuid2, kvm_abi::kSetCpuid2, kvm_abi::kGetXsave, kvm_abi::kSetXsave,
                        KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, KVM_GET_XCRS,
                        KVM_SET_XCRS, KVM_GET_MP_STATE, KVM_SET_MP_STATE, KVM_GET_TSC_KHZ, KVM_SET_TSC_KHZ,
                        KVM_GET_CLOCK, KVM_SET_CLOCK, KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, KVM_GET_PIT2, KVM_SET_PIT2,
                        KVM_GET_DIRTY_LOG, KVM_SET_USER_MEMORY_REGION, KVM_IOEVENTFD, KVM_IRQFD, KVM_CHECK_EXTENSION,
                        // The terminal's size for a container's tty; fd flags.
                        TIOCGWINSZ, TCGETS, FIONREAD, FIONBIO,
                        // virtio-net re-activated by a restore or reset: the TAP's offloads.
                        TUNSETOFFLOAD});
            break;
    }
    return rules;
}

void on_sigsys(int, siginfo_t* info, void* context) {
    int nr = info->si_syscall;
    char message[256];
    size_t used = 0;
    auto put = [&](const char* s) {
        while (*s && used < sizeof message - 1) message[used++] = *s++;
    };
    auto put_number = [&](unsigned long value, int base) {
        char digits[24];
        int n = 0;
        do {
            digits[n++] = "0123456789abcdef"[value % unsigned(base)];
            value /= unsigned(base);
        } while (value && n < 24);
        while (n) {
            char c[2] = {digits[--n], 0};
            put(c);
        }
    };
    put("seccomp: the ");
    put(t_thread);
    put(" thread made a forbidden system call: ");
    if (nr >= 0 && nr < kMaxSyscall && g_names[size_t(nr)][0])
        put(g_names[size_t(nr)].data());
    else
        put("unknown");
    put(" (");
    put_number(unsigned(nr), 10);
    put(")");
    if (nr == SCMP_SYS(ioctl) && context) {
        auto* uc = static_cast<ucontext_t*>(context);
        put(", request 0x");
        put_number(static_cast<unsigned long>(uc->uc_mcontext.gregs[REG_RSI]) & 0xffffffffu, 16);
    }
    // Which file: the path names what the thread was doing.
    if (nr == SCMP_SYS(openat) && context) {
        auto* uc = static_cast<ucontext_t*>(context);
        const char* path = reinterpret_cast<const char*>(uc->uc_mcontext.gregs[REG_RSI]);
        char shown[96] = {};
        for (size_t i = 0; path && i < sizeof shown - 1 && path[i]; ++i) shown[i] = path[i];
        put(", path `");
        put(shown);
        put("`");
    }
    put("; husk-vmm is killed (--no-seccomp turns the filters off, for debugging only)");
    message[used] = '\0';
    log::write_from_signal_handler(message);
    // SA_RESETHAND put the default action back: this SIGSYS ends the process.
    ::syscall(SYS_tgkill, ::getpid(), ::syscall(SYS_gettid), SIGSYS);
}

}  // namespace

Result<Mode> parse_mode(std::string_view text) {
    if (text == "enforce") return Mode::Enforce;
    if (text == "log") return Mode::Log;
    if (text == "off") return Mode::Off;
    return Error::from_string("seccomp mode `" + std::string(text) + "`: expected enforce, log or off");
}

std::string_view mode_name(Mode mode) {
    switch (mode) {
        case Mode::Enforce:
            return "enforce";
        case Mode::Log:
            return "log";
        case Mode::Off:
            return "off";
    }
    return "off";
}

void set_selftest(Thread kind) {
    g_selftest = int(kind);
}

Result<Thread> parse_thread(std::string_view text) {
    if (text == "vcpu") return Thread::Vcpu;
    if (text == "loop") return Thread::EventLoop;
    if (text == "control") return Thread::Control;
    return Error::from_string("thread `" + std::string(text) + "`: expected vcpu, loop or control");
}

std::string_view thread_name(Thread kind) {
    switch (kind) {
        case Thread::Control:
            return "control";
        case Thread::EventLoop:
            return "event loop";
        case Thread::Vcpu:
            return "vCPU";
    }
    return "control";
}

Result<void> configure(Mode mode) {
    if (mode != Mode::Off) {
        // One malloc arena for every thread. glibc's per-thread arenas read
        // /proc/sys/vm/overcommit_memory the first time one shrinks, an open
        // no filtered thread may make; the main arena shrinks with brk.
        // husk-vmm has a handful of threads, so the shared lock costs little.
        // (A sanitizer's allocator, in test builds, ignores this and needs it not.)
        (void)::mallopt(M_ARENA_MAX, 1);
        for (int nr = 0; nr < kMaxSyscall; ++nr) {
            char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
            if (!name) continue;
            std::strncpy(g_names[size_t(nr)].data(), name, g_names[size_t(nr)].size() - 1);
            std::free(name);
        }
    }
    if (mode == Mode::Enforce) {
        struct sigaction sa {};
        sa.sa_sigaction = on_sigsys;
        sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        if (::sigaction(SIGSYS, &sa, nullptr) < 0) return Error::from_errno(errno, "sigaction SIGSYS");
        // A core of husk-vmm would hold the guest's memory.
        rlimit none{0, 0};
        if (::setrlimit(RLIMIT_CORE, &none) < 0) return Error::from_errno(errno, "setrlimit RLIMIT_CORE");
    }
    g_mode = mode;
    return {};
}

Mode mode() {
    return g_mode;
}

void allow_file_sharing() {
    g_file_sharing = true;
}

void allow_dns_forward() {
    g_dns_forward = true;
}

Result<void> install(Thread kind) {
    Mode m = g_mode;
    if (m == Mode::Off) return {};
    uint32_t deny = m == Mode::Enforce ? SCMP_ACT_TRAP : SCMP_ACT_LOG;
    scmp_filter_ctx ctx = seccomp_init(deny);
    if (!ctx) return Error::from_string("seccomp_init failed", ENOMEM);
    struct Release {
        scmp_filter_ctx ctx;
        ~Release() { seccomp_release(ctx); }
    } release{ctx};
    std::string what = "seccomp filter for the " + std::string(thread_name(kind)) + " thread";
    // no_new_privs is what lets an unprivileged process load a filter.
    if (int r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1); r < 0)
        return Error::from_errno(-r, what + ": no_new_privs");
    // glibc tries clone3 first and falls back to clone, whose flags a filter can read.
    if (kind == Thread::Control)
        if (int r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0); r < 0)
            return Error::from_errno(-r, what + ": clone3");
    for (const Rule& rule : rules_for(kind, ::getpid())) {
        int r = rule.args.empty() ? seccomp_rule_add(ctx, SCMP_ACT_ALLOW, rule.nr, 0)
                                  : seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, rule.nr, unsigned(rule.args.size()),
                                                           rule.args.data());
        if (r < 0) {
            char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, rule.nr);
            Error e = Error::from_errno(-r, what + ": rule for " + (name ? name : std::to_string(rule.nr)));
            std::free(name);
            return e;
        }
    }
    t_thread = thread_name(kind).data();
    if (int r = seccomp_load(ctx); r < 0) return Error::from_errno(-r, what + ": load");
    int expected = int(kind);
    if (g_selftest.compare_exchange_strong(expected, -1)) {
        log::warn("--seccomp-selftest: the {} thread now makes a forbidden call", thread_name(kind));
        // A datagram socket: no thread may make one (dns_forward lets the event loop make TCP streams).
        int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) ::close(fd);
        return Error::from_string("--seccomp-selftest: socket(AF_INET, SOCK_DGRAM) was allowed (seccomp mode " +
                                  std::string(mode_name(m)) + ")");
    }
    return {};
}

std::vector<std::string> allowed(Thread kind) {
    std::vector<std::string> names;
    for (const Rule& rule : rules_for(kind, ::getpid())) {
        char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, rule.nr);
        names.emplace_back(name ? name : std::to_string(rule.nr));
        std::free(name);
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    return names;
}

}  // namespace husk::seccomp
