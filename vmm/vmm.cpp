// Vmm: running a built VM (builder.cpp) to its end — the main thread's
// signal loop, the vCPUs' endings, the guest's resets and power-offs, and
// husk-vmm's exit status (vmm/EXIT_STATUS.md). VM-wide operations are in
// vm_operations.cpp.
#include "vmm/vmm.h"

#include <linux/capability.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <filesystem>

#include "vmm/base/clock.h"
#include "vmm/base/guarded_thread.h"
#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/jail/jail.h"
#include "vmm/seccomp/seccomp.h"

namespace husk {
namespace {

constexpr int kKickSignal = SIGUSR1;  // interrupts KVM_RUN on a vCPU thread
constexpr int kWakeSignal = SIGUSR2;  // wakes the main thread: the VM ended, or a snapshot is due

void ignore_signal(int) {}

// " (rip=... rsp=... cr0=... cr3=... cr4=... efer=...)": where a vCPU was when
// the guest crashed; empty if KVM will not say.
std::string crash_registers(const Vcpu& vcpu) {
    auto regs = vcpu.regs();
    auto sregs = vcpu.sregs();
    if (regs.is_error() || sregs.is_error()) return {};
    // KVM on AMD re-initializes a vCPU after a shutdown: what is left is the
    // reset state (real mode at 0xfff0), not where the guest was.
    if (regs.value().rip == 0xfff0 && !(sregs.value().cr0 & 1) && sregs.value().cr3 == 0)
        return " (its registers are gone: KVM reset the vCPU on the fault, as it does on AMD)";
    return fmt::format(" (rip=0x{:x} rsp=0x{:x} cr0=0x{:x} cr3=0x{:x} cr4=0x{:x} efer=0x{:x})", regs.value().rip,
                       regs.value().rsp, sregs.value().cr0, sregs.value().cr3, sregs.value().cr4, sregs.value().efer);
}

}  // namespace

Vmm::Vmm(Kvm kvm, Vm vm, GuestMemory memory)
    : m_kvm(std::move(kvm)), m_vm(std::move(vm)), m_memory(std::move(memory)) {}

Vmm::~Vmm() {
    m_stopping = true;
    if (m_runner) m_runner->stop();
    join_helper_threads();
    if (m_runner) m_runner->join();
    if (m_loop) m_loop->stop();
    if (m_loop_thread.joinable()) m_loop_thread.join();
    if (m_input_stop) {
        uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(m_input_stop.get(), &one, sizeof one);
    }
    if (m_input_thread.joinable()) m_input_thread.join();
}

void Vmm::join_helper_threads() {
    std::thread snapshot, reseed;
    {
        std::lock_guard guard(m_threads_lock);
        snapshot = std::move(m_snapshot_thread);
        reseed = std::move(m_reseed_thread);
    }
    if (snapshot.joinable()) snapshot.join();
    if (reseed.joinable()) reseed.join();
}

Result<void> Vmm::enter_jail() {
    jail::Options o;
    auto keep = [&](const std::string& path, bool is_dir) {
        if (path.empty()) return;
        std::string dir = is_dir ? path : std::filesystem::path(path).parent_path().string();
        if (dir.empty() || dir == "/") return;
        if (std::find(o.writable_dirs.begin(), o.writable_dirs.end(), dir) == o.writable_dirs.end())
            o.writable_dirs.push_back(dir);
    };
    // What the running VM still opens by path: its sockets (created, removed,
    // and vsock's <socket>_<port> for guest connections) and a template's directory.
    keep(m_config.api_socket, false);
    keep(m_config.vsock_socket, false);
    if (!m_config.snapshot_on_ready.empty())
        keep(m_config.snapshot_on_ready, std::filesystem::is_directory(m_config.snapshot_on_ready));
    if (!m_config.jail_user.empty()) {
        auto [uid, gid] = TRY(jail::parse_user(m_config.jail_user));
        o.uid = uid;
        o.gid = gid;
    }
    o.cgroup = m_config.jail_cgroup;
    o.max_files = 4096;
    if (m_config.fs) {
        // virtio-fs acts for the guest's root on the shared trees (its own
        // checks confine it to them): owners, modes and permissions of files
        // that are not husk-vmm's. Each share holds at most 4096 fds.
        o.keep_capabilities = 1ull << CAP_CHOWN | 1ull << CAP_DAC_OVERRIDE | 1ull << CAP_FOWNER | 1ull << CAP_FSETID;
        o.max_files += 4096 * m_config.shares.size();
    }
    sys::open_proc_self();  // `stats` reads them; the jail has no /proc
    TRY(jail::enter(o).context("jail"));
    log::info("in the jail: {} director{} kept{}", o.writable_dirs.size(), o.writable_dirs.size() == 1 ? "y" : "ies",
              o.uid ? fmt::format(", uid {} gid {}", *o.uid, *o.gid) : "");
    return {};
}

void Vmm::guest_reset(const std::string& how) {
    // A container VM ends cleanly once husk-agent reported the container's
    // exit: the agent's power-off is a reset (below). Before that report a
    // reset is a crash, whatever the console says (vmm/EXIT_STATUS.md).
    if (m_container) {
        if (container_exit_reported())
            return request_exit(0, "guest powered off after its container exited (" + how + ")");
        std::string what = m_serial->saw_kernel_panic() ? "the guest kernel panicked and reset" : "the guest reset";
        return request_exit(kExitGuestCrash, what + " (" + how + ") before its agent reported the container's exit");
    }
    // Without a container the console is all there is: a power-off shows as a
    // panic after "reboot: Power down" (init exits once the kernel finds no
    // way to power off); that is a clean exit.
    if (m_serial->saw_power_down())
        request_exit(0, "guest powered off (" + how + ")");
    else if (m_serial->saw_kernel_panic())
        request_exit(kExitGuestCrash, "guest kernel panicked (" + how + ")");
    else
        request_exit(0, "guest rebooted (" + how + ")");
}

bool Vmm::container_exit_reported() {
    std::lock_guard guard(m_exit_lock);
    return m_container_status.has_value();
}

void Vmm::request_exit(int status, const std::string& reason) {
    {
        std::lock_guard guard(m_exit_lock);
        if (m_stopping.exchange(true)) return;
        m_exit_status = status;
        m_exit_reason = reason;
    }
    if (m_runner) m_runner->stop();
    wake_main_thread();
}

void Vmm::vcpu_ended(const VcpuRunner::Exit& exit) {
    using Ending = VcpuRunner::Ending;
    switch (exit.ending) {
        case Ending::Halted:
            return request_exit(0, "guest halted");
        case Ending::TripleFault:
            // A crash, unless Linux was already on its way down.
            if (m_serial->saw_power_down() || m_serial->saw_kernel_panic() || m_serial->saw_restart())
                return guest_reset("triple fault");
            return request_exit(kExitGuestCrash, fmt::format("guest triple-faulted on vCPU {}{}", exit.vcpu,
                                                             crash_registers(m_vcpus[exit.vcpu])));
        case Ending::GuestShutdown:
            return request_exit(0, "guest shut down");
        case Ending::GuestCrashReport:
            return request_exit(kExitGuestCrash, "guest reported a crash");
        case Ending::EntryFailed:
            return request_exit(kExitGuestCrash,
                                fmt::format("KVM could not enter the guest on vCPU {} ({})", exit.vcpu, exit.detail));
        case Ending::KvmInternalError:
            return request_exit(kExitGuestCrash,
                                fmt::format("KVM internal error on vCPU {} ({})", exit.vcpu, exit.detail));
        case Ending::UnhandledExit:
            return request_exit(kExitGuestCrash, fmt::format("unhandled KVM {} on vCPU {}", exit.detail, exit.vcpu));
        case Ending::HostError:
            return request_exit(kExitVmmError, exit.detail);
    }
}

void Vmm::console_input_thread() {
    pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {m_input_stop.get(), POLLIN, 0}};
    uint8_t buf[256];
    for (;;) {
        int n = ::poll(fds, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || (fds[1].revents & POLLIN)) return;
        if (fds[0].revents & (POLLIN | POLLHUP)) {
            ssize_t got = ::read(STDIN_FILENO, buf, sizeof buf);
            if (got <= 0) return;  // EOF: the guest just stops getting input
            m_serial->enqueue_input(std::span(buf, size_t(got)));
        }
        if (fds[0].revents & (POLLERR | POLLNVAL)) return;
    }
}

Result<int> Vmm::run() {
    // Still one thread: the jail's namespaces can only be entered now.
    if (m_config.jail) TRY(enter_jail());
    // A thread that fails on an exception stops the VM instead of aborting husk-vmm.
    auto stop_vm = [this] { request_exit(kExitVmmError, "a husk-vmm thread failed (logged above)"); };
    m_runner = std::make_unique<VcpuRunner>(
        m_vcpus, m_pio, m_mmio, kKickSignal,
        VcpuRunner::Handlers{[this](const VcpuRunner::Exit& exit) { vcpu_ended(exit); }, stop_vm});
    // Before any vCPU runs: every thread started from here on inherits this
    // filter, and the vCPU and event-loop threads narrow it further.
    TRY(seccomp::install(seccomp::Thread::Control));
    if (m_api) m_api->start();
    // Signals the main thread waits for; blocked everywhere so the vCPU threads never take them.
    sigset_t wait_set;
    sigemptyset(&wait_set);
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGWINCH, kWakeSignal}) sigaddset(&wait_set, s);
    sigset_t blocked = wait_set;
    sigaddset(&blocked, kKickSignal);
    pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
    struct sigaction sa {};
    sa.sa_handler = ignore_signal;  // no SA_RESTART: KVM_RUN returns EINTR
    sigaction(kKickSignal, &sa, nullptr);

    if (m_console_stdin) {
        m_input_stop = TRY(sys::eventfd(0, EFD_NONBLOCK));
        m_input_thread = std::thread([this] { run_guarded("console input", [this] { console_input_thread(); }); });
    }
    // vCPUs first: the guest needs its devices only well into boot, the CPU at once.
    m_runner->start();
    if (m_loop)
        m_loop_thread = std::thread([this, stop_vm] {
            run_guarded(
                "event loop",
                [this] {
                    if (auto r = seccomp::install(seccomp::Thread::EventLoop); r.is_error()) {
                        request_exit(kExitVmmError, r.error().message());
                        return;
                    }
                    m_loop->run();
                },
                stop_vm);
        });
    if (m_container) m_container->start();
    // A restored agent guest holds the snapshot's RNG state; a container
    // session reseeds it itself, otherwise husk-vmm does.
    std::unique_lock threads(m_threads_lock);
    if (m_snapshot && m_config.agent && !m_container)
        m_reseed_thread = std::thread([this] {
            run_guarded("reseed", [this] {
                if (auto r = reseed_guest(); r.is_error())
                    log::warn("could not reseed the restored guest's RNG: {}", r.error().message());
                else
                    log::debug("guest RNG reseeded after restore");
            });
        });
    threads.unlock();

    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&wait_set, &info);
        if (sig < 0) {
            if (errno == EINTR) continue;
            request_exit(kExitVmmError, "sigwaitinfo failed");
            break;
        }
        if (sig == kWakeSignal) {
            if (m_stopping) break;
            if (m_snapshot_due.exchange(false)) {
                std::lock_guard guard(m_threads_lock);
                m_snapshot_thread = std::thread([this, stop_vm] {
                    run_guarded(
                        "snapshot",
                        [this] {
                            auto r = take_snapshot(m_config.snapshot_on_ready);
                            if (r)
                                request_exit(0, "snapshot written to " + m_config.snapshot_on_ready);
                            else
                                request_exit(kExitVmmError, "snapshot on ready: " + r.error().message());
                        },
                        stop_vm);
                });
            }
            continue;
        }
        if (sig == SIGWINCH) {
            if (m_container) m_container->terminal_resized();
            continue;
        }
        // A container's process gets husk-vmm's signals, as it would get runc's (its pid is ours).
        if (m_container && m_container->forward_signal(sig)) continue;
        request_exit(kExitSignalBase + sig, std::string("stopped by ") + strsignal(sig));
        break;
    }
    m_runner->stop();
    join_helper_threads();
    m_runner->join();
    // What the guest sent just before it stopped (vsock data a host reader was
    // slow to take) still goes out: the event loop runs on, for at most 2 s.
    for (int waited = 0; waited < 2000; waited += 5) {
        bool pending = false;
        for (auto& t : m_virtio) pending = pending || t->has_pending_output();
        if (!pending) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    m_api.reset();
    bool container_vm = m_container != nullptr;
    m_container.reset();  // ends its threads before the devices they talk through
    std::lock_guard guard(m_exit_lock);
    if (m_exit_status == kExitGuestCrash || m_exit_status == kExitVmmError) log::error("{}", m_exit_reason);
    // A crash's best witness is the guest's console, which may not have been shown.
    if (m_exit_status == kExitGuestCrash && m_serial) {
        if (std::string tail = m_serial->recent_output(); !tail.empty())
            log::error("the guest console's last lines:\n{}", tail);
    } else
        log::info("{}", m_exit_reason);
    // The container's process exited and the guest powered off after it: that status is ours.
    if (m_container_status && m_exit_status == 0) return *m_container_status;
    // A container VM that stopped "cleanly" without its agent's report of the
    // process's exit did not stop cleanly: whatever the guest said, it is a crash.
    if (container_vm && m_exit_status == 0) {
        log::error("the guest stopped ({}) before its agent reported the container's exit", m_exit_reason);
        return kExitGuestCrash;
    }
    return m_exit_status;
}

void Vmm::wake_main_thread() {
    ::kill(::getpid(), kWakeSignal);
}

}  // namespace husk
