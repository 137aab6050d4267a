#include "vmm/vstate/vcpu_runner.h"

#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <span>

#include "vmm/base/clock.h"
#include "vmm/base/guarded_thread.h"
#include "vmm/base/log.h"
#include "vmm/seccomp/seccomp.h"

namespace husk {
namespace {

std::vector<kvm_run*> run_pages(const std::vector<Vcpu>& vcpus) {
    std::vector<kvm_run*> pages;
    for (const auto& vcpu : vcpus) pages.push_back(vcpu.run_data());
    return pages;
}

}  // namespace

VcpuRunner::VcpuRunner(std::vector<Vcpu>& vcpus, Bus& pio, Bus& mmio, int kick_signal, Handlers handlers)
    : m_vcpus(vcpus),
      m_pio(pio),
      m_mmio(mmio),
      m_handlers(std::move(handlers)),
      m_kicker(run_pages(vcpus), kick_signal),
      m_kick_signal(kick_signal) {}

VcpuRunner::~VcpuRunner() {
    stop();
    join();
}

void VcpuRunner::start() {
    for (size_t i = 0; i < m_vcpus.size(); ++i)
        m_threads.emplace_back([this, i] {
            run_guarded(
                "vCPU", [this, i] { run_vcpu(i); }, [this] { m_handlers.thread_failed(); });
        });
}

void VcpuRunner::stop() {
    m_stopping.store(true, std::memory_order_release);
    {
        std::lock_guard guard(m_lock);
        m_changed.notify_all();
    }
    m_kicker.kick_all();
}

void VcpuRunner::join() {
    for (auto& t : m_threads)
        if (t.joinable()) t.join();
    m_threads.clear();
}

void VcpuRunner::run_vcpu(size_t index) {
    Vcpu& vcpu = m_vcpus[index];
    sigset_t kick;
    sigemptyset(&kick);
    sigaddset(&kick, m_kick_signal);
    pthread_sigmask(SIG_UNBLOCK, &kick, nullptr);
    m_kicker.register_self(index);
    // Unregistered on every way out: a thread that ended is never signalled.
    struct Unregister {
        VcpuKicker& kicker;
        size_t index;
        ~Unregister() { kicker.unregister_self(index); }
    } unregister{m_kicker, index};
    auto end = [&](Ending ending, std::string detail) { m_handlers.ended({index, ending, std::move(detail)}); };
    if (auto r = seccomp::install(seccomp::Thread::Vcpu); r.is_error())
        return end(Ending::HostError, r.error().message());

    kvm_run* run = vcpu.run_data();
    while (!m_stopping.load(std::memory_order_acquire)) {
        if (index == 0 && m_first_run_ns.load() == 0) m_first_run_ns = clock::now_ns();
        if (auto r = vcpu.run(); r.is_error()) return end(Ending::HostError, r.error().message());
        switch (run->exit_reason) {
            case KVM_EXIT_IO:
                handle_pio(vcpu);
                break;
            case KVM_EXIT_MMIO:
                handle_mmio(vcpu);
                break;
            case KVM_EXIT_INTR:
                park_if_paused();
                break;
            case KVM_EXIT_HLT:
                return end(Ending::Halted, {});
            case KVM_EXIT_SHUTDOWN:
                return end(Ending::TripleFault, {});
            case KVM_EXIT_SYSTEM_EVENT:
                return end(
                    run->system_event.type == KVM_SYSTEM_EVENT_CRASH ? Ending::GuestCrashReport : Ending::GuestShutdown,
                    {});
            case KVM_EXIT_FAIL_ENTRY:
                return end(Ending::EntryFailed,
                           fmt::format("hardware reason 0x{:x}", run->fail_entry.hardware_entry_failure_reason));
            case KVM_EXIT_INTERNAL_ERROR:
                return end(Ending::KvmInternalError, fmt::format("suberror {}", run->internal.suberror));
            default:
                return end(Ending::UnhandledExit, fmt::format("exit reason {}", run->exit_reason));
        }
    }
}

void VcpuRunner::handle_pio(Vcpu& vcpu) {
    auto& io = vcpu.run_data()->io;
    auto* base = reinterpret_cast<uint8_t*>(vcpu.run_data()) + io.data_offset;
    // count > 1 for REP INS/OUTS: the data buffer holds `count` elements.
    for (uint32_t i = 0; i < io.count; ++i) {
        std::span<uint8_t> data(base + size_t(i) * io.size, io.size);
        if (io.direction == KVM_EXIT_IO_OUT)
            m_pio.write(io.port, data);
        else
            m_pio.read(io.port, data);
    }
}

void VcpuRunner::handle_mmio(Vcpu& vcpu) {
    auto& mmio = vcpu.run_data()->mmio;
    uint32_t len = std::min<uint32_t>(mmio.len, sizeof mmio.data);
    std::span<uint8_t> data(mmio.data, len);
    if (mmio.is_write)
        m_mmio.write(mmio.phys_addr, data);
    else
        m_mmio.read(mmio.phys_addr, data);
}

void VcpuRunner::park_if_paused() {
    std::unique_lock lock(m_lock);
    if (m_paused && !m_stopping) {
        ++m_parked;
        m_changed.notify_all();
        m_changed.wait(lock, [this] { return !m_paused || m_stopping.load(); });
        --m_parked;
    }
    // A kick leaves immediate_exit set on every vCPU; cleared here unless the
    // VM is stopping (then the next KVM_RUN must not enter the guest).
    for (auto& vcpu : m_vcpus)
        if (!m_stopping) vcpu.run_data()->immediate_exit = 0;
}

Result<void> VcpuRunner::pause(std::chrono::milliseconds timeout) {
    std::unique_lock lock(m_lock);
    if (m_paused) return {};
    m_paused = true;
    lock.unlock();
    m_kicker.kick_all();
    lock.lock();
    if (!m_changed.wait_for(lock, timeout, [this] { return m_parked == m_vcpus.size() || m_stopping.load(); })) {
        m_paused = false;
        m_changed.notify_all();
        return Error::from_string(fmt::format("the vCPUs did not stop within {} ms", timeout.count()), ETIMEDOUT);
    }
    if (m_stopping) {
        m_paused = false;
        return Error::from_string("the VM is stopping", ESHUTDOWN);
    }
    log::debug("paused");
    return {};
}

void VcpuRunner::resume() {
    std::lock_guard guard(m_lock);
    if (!m_paused) return;
    ++m_resumes;
    m_paused = false;
    m_changed.notify_all();
    log::debug("resumed");
}

bool VcpuRunner::paused() {
    std::lock_guard guard(m_lock);
    return m_paused;
}

uint64_t VcpuRunner::resumes() {
    std::lock_guard guard(m_lock);
    return m_resumes;
}

Result<void> VcpuRunner::check_still_paused(uint64_t resumes_at_pause) {
    std::lock_guard guard(m_lock);
    if (m_paused && m_resumes == resumes_at_pause) return {};
    return Error::from_string("the vCPUs ran in the middle of a VM-wide operation; its result is discarded", EBUSY);
}

}  // namespace husk
