// VcpuRunner: a VM's vCPU threads and their run / pause / stop state — the
// one KVM_RUN loop, whether the VM booted or was restored.
//
// Port and MMIO exits go to the two buses. An exit that ends a vCPU's run
// for good (halt, triple fault, a system event, a KVM failure) is reported
// once through `ended`, on that vCPU's thread; what it means for the VM (a
// clean power-off, a crash) is the caller's to decide.
//
// pause() kicks every vCPU out of KVM_RUN and returns once each is parked
// outside the guest; resume() lets them go. stop() is final: every loop
// ends, parked vCPUs included. The caller serializes pause and resume
// (Vmm's operation lock); stop() may come from any thread at any time.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/devices/bus.h"
#include "vmm/kvm/vcpu.h"
#include "vmm/kvm/vcpu_kicker.h"

namespace husk {

class VcpuRunner {
public:
    // How a vCPU's run ended.
    enum class Ending {
        Halted,            // HLT with interrupts off
        TripleFault,       // KVM_EXIT_SHUTDOWN
        GuestShutdown,     // KVM_SYSTEM_EVENT_SHUTDOWN / RESET
        GuestCrashReport,  // KVM_SYSTEM_EVENT_CRASH
        EntryFailed,       // KVM_EXIT_FAIL_ENTRY
        KvmInternalError,  // KVM_EXIT_INTERNAL_ERROR
        UnhandledExit,     // an exit reason this loop does not know
        HostError,         // KVM_RUN failed, or the thread's set-up (its seccomp filter) did
    };
    struct Exit {
        size_t vcpu;
        Ending ending;
        std::string detail;  // what KVM said (hardware reason, suberror, errno text); may be empty
    };
    struct Handlers {
        std::function<void(const Exit&)> ended;
        // A vCPU thread ended on an exception (logged): the VM cannot go on.
        std::function<void()> thread_failed;
    };

    // `vcpus` outlives the runner; `kick_signal` interrupts KVM_RUN (its
    // handler installed by the caller, without SA_RESTART).
    VcpuRunner(std::vector<Vcpu>& vcpus, Bus& pio, Bus& mmio, int kick_signal, Handlers handlers);
    ~VcpuRunner();  // stop() and join()
    VcpuRunner(const VcpuRunner&) = delete;
    VcpuRunner& operator=(const VcpuRunner&) = delete;

    // One thread per vCPU, each under the vCPU seccomp filter.
    void start();
    void stop();
    void join();

    Result<void> pause(std::chrono::milliseconds timeout = std::chrono::seconds(5));
    void resume();
    bool paused();
    // Times the vCPUs were let go. An operation that paused them reads it,
    // does its work, then check_still_paused() fails if a resume came in its
    // middle: what it captured would not be one moment of the VM.
    uint64_t resumes();
    Result<void> check_still_paused(uint64_t resumes_at_pause);

    // When vCPU 0 first entered the guest (clock::now_ns), 0 before.
    uint64_t first_run_ns() const { return m_first_run_ns.load(); }

private:
    void run_vcpu(size_t index);
    void park_if_paused();
    void handle_pio(Vcpu& vcpu);
    void handle_mmio(Vcpu& vcpu);

    std::vector<Vcpu>& m_vcpus;
    Bus& m_pio;
    Bus& m_mmio;
    Handlers m_handlers;
    // Only the thread that calls start() and join() touches m_threads; any
    // other kicks through m_kicker, whose slots never move.
    VcpuKicker m_kicker;
    int m_kick_signal;
    std::vector<std::thread> m_threads;
    std::atomic<bool> m_stopping{false};
    std::atomic<uint64_t> m_first_run_ns{0};

    std::mutex m_lock;
    std::condition_variable m_changed;
    bool m_paused = false;
    size_t m_parked = 0;
    uint64_t m_resumes = 0;
};

}  // namespace husk
