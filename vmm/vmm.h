// Vmm: one microVM — built from a VmConfig by Vmm::create (builder.cpp, the
// one place where everything is wired, for boot and restore), driven by
// VM-wide operations (vm_operations.cpp), and run to completion on its vCPU
// threads (vmm.cpp).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "vmm/api/api_command.h"
#include "vmm/api/api_reply.h"
#include "vmm/api/api_server.h"
#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"
#include "vmm/config/vm_config.h"
#include "vmm/container/container_session.h"
#include "vmm/container/link_watch.h"
#include "vmm/devices/bus.h"
#include "vmm/devices/legacy/serial.h"
#include "vmm/devices/virtio/balloon/balloon.h"
#include "vmm/devices/virtio/mmio/mmio_transport.h"
#include "vmm/devices/virtio/vsock/vsock.h"
#include "vmm/io/event_loop.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/vcpu.h"
#include "vmm/kvm/vm.h"
#include "vmm/memory/guest_memory.h"
#include "vmm/snapshot/snapshot.h"
#include "vmm/vstate/vcpu_runner.h"

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

    // VM-wide operations — pause, resume, snapshot, reset/restore, balloon —
    // run one at a time (m_operation_lock), whichever thread asks: a resume
    // from the API cannot let the vCPUs go in the middle of a snapshot.

    // Stops every vCPU outside the guest (returns once all are parked), and lets them go again.
    Result<void> pause();
    void resume();

    // Writes `dir/vmstate` and `dir/memory` (the VM pauses meanwhile).
    Result<api::SnapshotReply> take_snapshot(const std::string& dir);
    // Rolls a restored VM back to its snapshot in place, reverting only pages
    // written since; with `other`, moves it to that snapshot of the same machine.
    Result<api::ResetReply> reset_to_snapshot(const std::string& other = {});
    api::StatsReply stats();
    // The balloon's state; with `target_mib`, moves its target first. With
    // fresh_stats, asks the guest for new statistics (waits at most 1 s).
    Result<api::BalloonReply> balloon(std::optional<uint32_t> target_mib, bool fresh_stats);
    // Shows the guest the NICs it was started without (vm.toml net.unplugged).
    Result<void> plug_net();

private:
    explicit Vmm(Kvm kvm, Vm vm, GuestMemory memory);

    // KVM, memory slots, irqchip, devices: what boot and restore share.
    static Result<std::unique_ptr<Vmm>> build(const VmConfig& config, GuestMemory memory);
    static Result<std::unique_ptr<Vmm>> restore(const VmConfig& config);
    Result<std::vector<kvm_cpuid_entry2>> guest_cpuid(uint32_t vcpu_id);
    // The one place vCPUs are made, for boot and restore alike: config.vcpus of
    // them, each given `cpuid_of(id)` (this host's table, or the snapshot's).
    // Their registers are the caller's: boot's entry state or the snapshot's.
    Result<void> create_vcpus(const std::function<Result<std::vector<kvm_cpuid_entry2>>(uint32_t)>& cpuid_of);
    Result<void> start_api();
    // jail.enabled: enters the jail (vmm/jail/jail.h) keeping the directories the VM still uses.
    Result<void> enter_jail();
    // The container's specs file (container.specs), written by the runtime.
    static Result<std::optional<agent::Specs>> read_container(const VmConfig& config);
    Result<void> attach_container(std::optional<agent::Specs> container);
    Result<void> load_device_state(const snapshot::Snapshot& snap);
    // Every virtio transport's lock, once none has host I/O in flight (at most 2 s).
    Result<std::vector<std::unique_lock<std::mutex>>> hold_idle_devices();
    bool is_paused();
    // pause() and resume() for an operation that already holds m_operation_lock.
    Result<void> pause_vcpus();
    void resume_vcpus();
    // A vCPU's run ended: what that means for the VM (vmm/EXIT_STATUS.md).
    void vcpu_ended(const VcpuRunner::Exit& exit);
    Result<api::SnapshotReply> take_snapshot_locked(const std::string& dir);
    Result<api::ResetReply> reset_to_snapshot_locked(const std::string& other);
    void join_helper_threads();
    // Host entropy into the guest's RNG through husk-agent (Reseed).
    Result<void> reseed_guest();

    Result<void> setup_devices(const VmConfig& config);
    // virtio-mmio devices; returns their virtio_mmio.device= command-line entries.
    Result<std::string> setup_virtio(const VmConfig& config);
    void console_input_thread();
    // The guest reset the machine: reboot, power-off or panic, told apart by the console.
    void guest_reset(const std::string& how);
    // husk-agent reported the container's exit status (the one event the
    // guest's other processes cannot forge).
    bool container_exit_reported();
    // Interrupts the main thread's sigwaitinfo (kWakeSignal): the VM ended, or a snapshot is due.
    void wake_main_thread();
    // First caller wins: records the outcome and wakes the main thread.
    void request_exit(int status, const std::string& reason);
    // The control socket's handler: JSON in and out here only (vmm/api/api_command.h).
    nlohmann::json api_request(const nlohmann::json& request);
    Result<api::Reply> handle(const api::Command& command);
    // "running", "paused", or the container's state (vmm/api/API.md, `state`).
    std::string status();

    Kvm m_kvm;
    Vm m_vm;
    GuestMemory m_memory;
    VmConfig m_config;
    std::string m_virtio_args;
    std::vector<kvm_cpuid_entry2> m_supported_cpuid;
    std::vector<uint32_t> m_msr_indices;
    std::vector<std::vector<kvm_cpuid_entry2>> m_cpuid;  // what each vCPU was given
    // Set on a restored VM: what `reset` goes back to.
    std::unique_ptr<snapshot::Snapshot> m_snapshot;
    std::string m_snapshot_dir;
    double m_restore_ms = 0;
    uint64_t m_resets = 0;
    double m_last_reset_us = 0;
    std::mutex m_threads_lock;      // guards the two threads below
    std::thread m_snapshot_thread;  // snapshot.on_ready
    std::thread m_reseed_thread;    // after --restore of an agent guest
    std::vector<Vcpu> m_vcpus;
    // Made in run() before any thread that uses it starts.
    std::unique_ptr<VcpuRunner> m_runner;
    std::mutex m_operation_lock;  // one VM-wide operation at a time (see pause())
    Bus m_pio{"pio"};
    Bus m_mmio{"mmio"};
    std::shared_ptr<Serial> m_serial;
    // The loop outlives the devices whose callbacks it holds (members die in reverse order).
    std::unique_ptr<EventLoop> m_loop;
    std::thread m_loop_thread;
    std::vector<std::shared_ptr<virtio::MmioTransport>> m_virtio;
    std::shared_ptr<virtio::MmioTransport> m_balloon_transport;
    virtio::Balloon* m_balloon = nullptr;  // owned by m_balloon_transport
    std::shared_ptr<virtio::MmioTransport> m_vsock_transport;
    virtio::Vsock* m_vsock = nullptr;  // owned by m_vsock_transport
    std::vector<std::shared_ptr<virtio::MmioTransport>> m_net_transports;
    std::unique_ptr<LinkWatch> m_link_watch;  // its reads are on m_loop, which outlives it
    UniqueFd m_console_file;
    bool m_console_stdin = false;
    UniqueFd m_input_stop;
    std::thread m_input_thread;

    std::atomic<bool> m_stopping{false};
    std::atomic<bool> m_init_reached{false};
    std::atomic<bool> m_snapshot_due{false};  // init reached with snapshot.on_ready: main starts the snapshot
    std::mutex m_exit_lock;
    int m_exit_status = 0;
    std::string m_exit_reason;
    std::optional<int> m_container_status;
    std::unique_ptr<ApiServer> m_api;
    // Last member: destroyed first, while everything its threads call into still exists.
    std::unique_ptr<ContainerSession> m_container;
};

}  // namespace husk
