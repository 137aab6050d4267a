// Vmm: one microVM — built from a VmConfig by Vmm::create (the one place
// where everything is wired), then run to completion on its vCPU threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "vmm/api/api_server.h"
#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"
#include "vmm/config/vm_config.h"
#include "vmm/container/container_session.h"
#include "vmm/devices/bus.h"
#include "vmm/devices/legacy/serial.h"
#include "vmm/devices/virtio/mmio/mmio_transport.h"
#include "vmm/io/event_loop.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/vcpu.h"
#include "vmm/kvm/vm.h"
#include "vmm/memory/guest_memory.h"

namespace husk {

// husk-vmm's exit statuses besides the guest's own (0 or the debug port's byte).
inline constexpr int kExitVmmError = 1;      // configuration or host error
inline constexpr int kExitGuestCrash = 2;    // triple fault, kernel panic, KVM internal error
inline constexpr int kExitSignalBase = 128;  // killed by a signal: 128 + signal number

class Vmm {
public:
    static Result<std::unique_ptr<Vmm>> create(const VmConfig& config);
    ~Vmm();

    // Runs the guest until it powers off, crashes, asks to exit, or the
    // process gets SIGTERM/SIGINT/SIGHUP. Returns husk-vmm's exit status.
    // The calling thread must be the process's main thread.
    Result<int> run();

    // Stops every vCPU outside the guest (returns once all are parked), and lets them go again.
    Result<void> pause();
    void resume();

private:
    explicit Vmm(Kvm kvm, Vm vm, GuestMemory memory);

    Result<void> setup_devices(const VmConfig& config);
    // virtio-mmio devices; returns their virtio_mmio.device= command-line entries.
    Result<std::string> setup_virtio(const VmConfig& config);
    void vcpu_thread(size_t index);
    void handle_pio(Vcpu& vcpu);
    void handle_mmio(Vcpu& vcpu);
    void console_input_thread();
    // The guest reset the machine: reboot, power-off or panic, told apart by the console.
    void guest_reset(const std::string& how);
    // First caller wins: records the outcome and wakes the main thread.
    void request_exit(int status, const std::string& reason);
    void kick_all_vcpus();
    nlohmann::json api_request(const nlohmann::json& request);
    // A vCPU thread's stop while paused: waits until resumed or stopping.
    void park_if_paused();

    Kvm m_kvm;
    Vm m_vm;
    GuestMemory m_memory;
    std::vector<Vcpu> m_vcpus;
    std::vector<std::thread> m_threads;
    Bus m_pio{"pio"};
    Bus m_mmio{"mmio"};
    std::shared_ptr<Serial> m_serial;
    // The loop outlives the devices whose callbacks it holds (members die in reverse order).
    std::unique_ptr<EventLoop> m_loop;
    std::thread m_loop_thread;
    std::vector<std::shared_ptr<virtio::MmioTransport>> m_virtio;
    UniqueFd m_console_file;
    bool m_console_stdin = false;
    UniqueFd m_input_stop;
    std::thread m_input_thread;

    std::atomic<bool> m_stopping{false};
    std::atomic<bool> m_init_reached{false};
    std::mutex m_exit_lock;
    int m_exit_status = 0;
    std::string m_exit_reason;
    std::optional<int> m_container_status;
    std::mutex m_pause_lock;
    std::condition_variable m_pause_changed;
    bool m_paused = false;
    size_t m_parked = 0;
    std::unique_ptr<ApiServer> m_api;
    // Last member: destroyed first, while everything its threads call into still exists.
    std::unique_ptr<ContainerSession> m_container;
};

}  // namespace husk
