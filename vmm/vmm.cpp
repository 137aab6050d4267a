#include "vmm/vmm.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <filesystem>

#include "vmm/api/api_command.h"
#include "vmm/api/api_reply.h"
#include "vmm/arch/x86/boot.h"
#include "vmm/arch/x86/cpuid.h"
#include "vmm/arch/x86/layout.h"
#include "vmm/arch/x86/loader.h"
#include "vmm/arch/x86/regs.h"
#include "vmm/base/clock.h"
#include "vmm/base/guarded_thread.h"
#include "vmm/base/json_text.h"
#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/container/container_session.h"
#include "vmm/devices/legacy/debug_port.h"
#include "vmm/devices/legacy/i8042.h"
#include "vmm/devices/virtio/block/block.h"
#include "vmm/devices/virtio/net/net.h"
#include "vmm/devices/virtio/rng/rng.h"
#include "vmm/devices/virtio/vsock/vsock.h"
#include "vmm/jail/jail.h"
#include "vmm/snapshot/dirty_pages.h"
#include "vmm/snapshot/snapshot.h"

namespace husk {
namespace {

constexpr int kKickSignal = SIGUSR1;  // interrupts KVM_RUN on a vCPU thread
constexpr int kWakeSignal = SIGUSR2;  // tells the main thread the VM ended

void ignore_signal(int) {}

constexpr uint32_t kFirstVirtioGsi = 5;  // IOAPIC pins 5..23 (4 is the UART, 1 the i8042, 0 the PIT)

void phase(const char* what) {
    log::debug("{:8.3f} ms  {}", clock::ms_since_start(), what);
}

// Kernel arguments go before " -- " (what follows is for init).
std::string with_kernel_args(const std::string& cmdline, const std::string& extra) {
    if (extra.empty()) return cmdline;
    size_t dashes = cmdline.find(" -- ");
    if (dashes == std::string::npos) return cmdline + " " + extra;
    return cmdline.substr(0, dashes) + " " + extra + cmdline.substr(dashes);
}

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

Result<std::unique_ptr<Vmm>> Vmm::create(const VmConfig& config) {
    TRY(validate(config));
    if (!config.restore.empty()) return restore(config);
    phase("create: start");
    // Read the inputs first: a bad path or config fails before any KVM object exists.
    auto container = TRY(read_container(config));
    auto kernel_image = TRY(sys::read_file(config.kernel).context("read kernel"));
    std::string initramfs;
    if (!config.initramfs.empty()) initramfs = TRY(sys::read_file(config.initramfs).context("read initramfs"));

    auto memory =
        TRY(GuestMemory::create(uint64_t(config.memory_mib) << 20, config.hugepages ? HugePages::On : HugePages::Off));
    phase("inputs read, guest memory mapped");
    auto vmm = TRY(build(config, std::move(memory)));
    std::string virtio_args = vmm->m_virtio_args;

    auto pref = config.entry == BootEntry::Pvh       ? x86::EntryPreference::Pvh
                : config.entry == BootEntry::Linux64 ? x86::EntryPreference::Linux64
                                                     : x86::EntryPreference::Auto;
    auto image = std::span(reinterpret_cast<const uint8_t*>(kernel_image.data()), kernel_image.size());
    auto loaded = TRY(x86::load_kernel(vmm->m_memory, image, pref).context("load kernel `" + config.kernel + "`"));
    x86::BootInputs inputs;
    inputs.cmdline = with_kernel_args(config.cmdline, virtio_args);
    inputs.initramfs = std::span(reinterpret_cast<const uint8_t*>(initramfs.data()), initramfs.size());
    inputs.vcpu_count = config.vcpus;
    uint64_t boot_struct = TRY(x86::write_boot_structures(vmm->m_memory, loaded, inputs));
    phase("kernel loaded, boot structures written");

    TRY(vmm->create_vcpus([&](uint32_t id) { return vmm->guest_cpuid(id); }));
    for (uint32_t id = 0; id < config.vcpus; ++id) {
        Vcpu& vcpu = vmm->m_vcpus[id];
        if (id == 0)
            TRY(x86::setup_boot_vcpu(vcpu, loaded.mode, loaded.entry, boot_struct).context("set up boot vCPU"));
        else
            TRY(x86::setup_ap_vcpu(vcpu).context("set up vCPU " + std::to_string(id)));
    }
    phase("vCPUs created and set up");
    log::debug("kernel entry 0x{:x} ({}), {} vCPUs, {} MiB", loaded.entry,
               loaded.mode == x86::EntryMode::Pvh ? "PVH" : "64-bit", config.vcpus, config.memory_mib);

    TRY(vmm->attach_container(std::move(container)));
    TRY(vmm->start_api());
    return vmm;
}

Result<std::optional<agent::Specs>> Vmm::read_container(const VmConfig& config) {
    if (config.container_specs.empty()) return std::optional<agent::Specs>();
    if (config.vsock_socket.empty()) return Error::from_string("a container needs the vsock device (vsock.socket)");
    if (config.drives.empty()) return Error::from_string("a container needs its rootfs as the first drive");
    // Two whole agent frames at most, and a little for the header.
    const std::string& path = config.container_specs;
    auto bytes = TRY(sys::read_file(path, 2 * agent::kMaxPayload + 4096).context("read the container specs"));
    return std::optional<agent::Specs>(TRY(agent::decode_specs_file(bytes).context("`" + path + "`")));
}

Result<void> Vmm::attach_container(std::optional<agent::Specs> container) {
    const VmConfig& config = m_config;
    if (!container) return {};
    if (config.container_wait_for_start && config.api_socket.empty())
        return Error::from_string("container.wait_for_start needs the API socket (api.socket) to hear `start` on");
    Vmm* self = this;
    m_container = std::make_unique<ContainerSession>(
        std::move(*container), agent::Endpoint{config.vsock_socket, true, agent::kPort},
        ContainerSession::Options{config.container_wait_for_start, config.ready_fd},
        ContainerSession::Callbacks{
            [self](int status, const std::string& reason) { self->request_exit(status, reason); },
            [self](int status) {
                std::lock_guard guard(self->m_exit_lock);
                self->m_container_status = status;
            }});
    return {};
}

Result<std::unique_ptr<Vmm>> Vmm::build(const VmConfig& config, GuestMemory memory) {
    auto kvm = TRY(Kvm::open());
    TRY(kvm.check_required_capabilities());
    phase("KVM opened");
    auto vm_object = TRY(Vm::create(kvm));
    phase("VM created");
    std::unique_ptr<Vmm> vmm(new Vmm(std::move(kvm), std::move(vm_object), std::move(memory)));
    vmm->m_config = config;
    Vm& vm = vmm->m_vm;

    // Memory slots go in before the irqchip: once the irqchip exists, every
    // slot change waits for an SRCU grace period (measured: ~4 ms per
    // KVM_SET_USER_MEMORY_REGION after KVM_CREATE_IRQCHIP, ~0.05 ms before).
    // A restored VM logs dirty pages: `reset` reverts exactly those.
    uint32_t flags = vmm->m_memory.snapshot_backed() ? KVM_MEM_LOG_DIRTY_PAGES : 0;
    uint32_t slot = 0;
    for (const auto& r : vmm->m_memory.regions())
        TRY(vm.set_user_memory_region(slot++, r.guest_phys, r.size, vmm->m_memory.host_base() + r.file_offset, flags));
    phase("memory slots set");
    TRY(vm.set_tss_and_identity_map(x86::kTssAddr, x86::kIdentityMapAddr));
    TRY(vm.create_irqchip_and_pit());
    phase("irqchip and PIT created");

    vmm->m_virtio_args = TRY(vmm->setup_virtio(config));
    phase("virtio devices set up");
    TRY(vmm->setup_devices(config));
    return vmm;
}

Result<void> Vmm::create_vcpus(const std::function<Result<std::vector<kvm_cpuid_entry2>>(uint32_t)>& cpuid_of) {
    for (uint32_t id = 0; id < m_config.vcpus; ++id) {
        auto vcpu = TRY(m_vm.create_vcpu(id));
        auto cpuid = TRY(cpuid_of(id));
        TRY(vcpu.set_cpuid(cpuid).context("set CPUID of vCPU " + std::to_string(id)));
        m_cpuid.push_back(std::move(cpuid));
        m_vcpus.push_back(std::move(vcpu));
    }
    return {};
}

Result<std::vector<kvm_cpuid_entry2>> Vmm::guest_cpuid(uint32_t id) {
    if (m_supported_cpuid.empty()) m_supported_cpuid = TRY(m_kvm.supported_cpuid());
    const bool tsc_deadline = m_kvm.check_extension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    return x86::normalize_cpuid(m_supported_cpuid,
                                {id, m_config.vcpus, tsc_deadline, m_config.cpu_template == CpuTemplate::Baseline});
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
    sys::open_proc_self();  // `stats` reads them; the jail has no /proc
    TRY(jail::enter(o).context("jail"));
    log::info("in the jail: {} director{} kept{}", o.writable_dirs.size(), o.writable_dirs.size() == 1 ? "y" : "ies",
              o.uid ? fmt::format(", uid {} gid {}", *o.uid, *o.gid) : "");
    return {};
}

Result<void> Vmm::start_api() {
    if (m_config.api_socket.empty()) return {};
    m_api = TRY(ApiServer::create(m_config.api_socket, [this](const nlohmann::json& r) { return api_request(r); }));
    return {};
}

Result<std::unique_ptr<Vmm>> Vmm::restore(const VmConfig& given) {
    phase("restore: start");
    const std::string dir = given.restore;
    auto snap = TRY(snapshot::read_state(dir));
    VmConfig config = given;
    nlohmann::json machine;
    try {
        machine = nlohmann::json::parse(snap.machine.config);
    } catch (const nlohmann::json::exception& e) {
        return Error::from_string("snapshot `" + dir + "`: its machine description is not JSON", EINVAL);
    }
    TRY(machine_from_json(machine, config).context("snapshot `" + dir + "`"));
    TRY(validate(config).context("snapshot `" + dir + "`"));
    if ((uint64_t(config.memory_mib) << 20) != snap.machine.memory_bytes || config.vcpus != snap.machine.vcpus)
        return Error::from_string("snapshot `" + dir + "`: its machine description and state disagree", EINVAL);
    auto container = TRY(read_container(config));
    auto memory = TRY(GuestMemory::from_file(dir + "/" + snapshot::kMemoryFile, snap.machine.memory_bytes));
    memory.track_vmm_writes();
    phase("snapshot read, memory mapped");
    auto vmm = TRY(build(config, std::move(memory)));

    auto host_cpuid = TRY(vmm->guest_cpuid(0));
    TRY(snapshot::check_cpu(snap.machine, snap.vcpus[0].cpuid, host_cpuid).context("snapshot `" + dir + "`"));
    TRY(vmm->create_vcpus([&](uint32_t id) { return snap.vcpus[id].cpuid; }));
    TRY(snapshot::restore_machine(vmm->m_vm, vmm->m_vcpus, snap, true));
    TRY(vmm->load_device_state(snap));
    // The balloon's target is the snapshot's unless this restore names its own.
    if (vmm->m_balloon && config.balloon_target_mib) {
        auto held = vmm->m_balloon_transport->hold();
        vmm->m_balloon->set_target(config.balloon_target_mib * virtio::Balloon::kPagesPerMib);
    }
    vmm->m_snapshot = std::make_unique<snapshot::Snapshot>(std::move(snap));
    vmm->m_snapshot_dir = dir;
    vmm->m_restore_ms = clock::ms_since_start();
    phase("restored");
    log::info("restored from {} in {:.3f} ms", dir, vmm->m_restore_ms);
    TRY(vmm->attach_container(std::move(container)));
    TRY(vmm->start_api());
    return vmm;
}

Result<void> Vmm::load_device_state(const snapshot::Snapshot& snap) {
    std::vector<std::pair<std::string, uint32_t>> present;
    for (const auto& t : m_virtio) present.emplace_back(t->id(), t->device().device_type());
    auto states = TRY(snapshot::match_devices(snap.devices, present));
    TRY(m_serial->load_state(snap.serial));
    for (size_t i = 0; i < m_virtio.size(); ++i)
        TRY(m_virtio[i]->load_state(states[i]->state).context("device `" + m_virtio[i]->id() + "`"));
    return {};
}

Result<std::vector<std::unique_lock<std::mutex>>> Vmm::hold_idle_devices() {
    // Checked with every device lock held: a queue notification the event
    // loop takes between a check and the lock could start new I/O.
    for (int waited = 0; waited < 2000; ++waited) {
        std::vector<std::unique_lock<std::mutex>> held;
        bool busy = false;
        for (auto& t : m_virtio) {
            held.push_back(t->hold());
            busy = busy || t->busy_locked();
        }
        if (!busy) return held;
        held.clear();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return Error::from_string("device I/O did not finish within 2 s", ETIMEDOUT);
}

Result<api::SnapshotReply> Vmm::take_snapshot(const std::string& dir) {
    std::lock_guard operation(m_operation_lock);
    return take_snapshot_locked(dir);
}

Result<api::SnapshotReply> Vmm::take_snapshot_locked(const std::string& dir) {
    if (dir.empty()) return Error::from_string("snapshot needs a \"path\": the directory to write", EINVAL);
    if (::mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST)
        return Error::from_errno(errno, "create snapshot directory `" + dir + "`");
    uint64_t t0 = clock::now_ns();
    bool was_paused = is_paused();
    TRY(pause_vcpus());
    uint64_t resumes = m_runner->resumes();
    auto result = [&]() -> Result<api::SnapshotReply> {
        // The devices' locks stay held until guest memory is written: host
        // data arriving meanwhile waits instead of changing queues already saved.
        auto held = TRY(hold_idle_devices());
        snapshot::Snapshot snap;
        if (m_msr_indices.empty()) m_msr_indices = TRY(m_kvm.msr_index_list());
        for (size_t i = 0; i < m_vcpus.size(); ++i) {
            snap.vcpus.push_back(TRY(snapshot::capture_vcpu(m_vcpus[i], m_msr_indices)));
            snap.vcpus.back().cpuid = m_cpuid[i];
        }
        snap.vm = TRY(snapshot::capture_vm(m_vm));
        snap.serial = m_serial->save_state();
        for (auto& t : m_virtio) snap.devices.push_back({t->id(), t->device().device_type(), t->save_state_locked()});
        if (m_supported_cpuid.empty()) m_supported_cpuid = TRY(m_kvm.supported_cpuid());
        snap.machine = {m_memory.size(), uint32_t(m_vcpus.size()), x86::vendor_string(m_supported_cpuid),
                        to_string(m_config.cpu_template), json_text(machine_to_json(m_config))};
        std::string memory_path = dir + "/" + snapshot::kMemoryFile;
        TRY(m_memory.save(memory_path + ".tmp"));
        // An old vmstate goes first: a crash from here on leaves no pair that
        // does not belong together (a missing vmstate is refused).
        if (::unlink((dir + "/" + snapshot::kStateFile).c_str()) < 0 && errno != ENOENT)
            return Error::from_errno(errno, "remove the old vmstate in `" + dir + "`");
        if (::rename((memory_path + ".tmp").c_str(), memory_path.c_str()) < 0)
            return Error::from_errno(errno, "rename `" + memory_path + ".tmp`");
        held.clear();
        TRY(m_runner->check_still_paused(resumes));
        TRY(snapshot::write_state(dir, snap));
        double ms = double(clock::now_ns() - t0) / 1e6;
        log::info("snapshot written to {} in {:.1f} ms", dir, ms);
        return api::SnapshotReply{dir, ms, m_memory.size()};
    }();
    if (!was_paused) resume_vcpus();
    return result;
}

Result<api::ResetReply> Vmm::reset_to_snapshot(const std::string& other) {
    std::lock_guard operation(m_operation_lock);
    return reset_to_snapshot_locked(other);
}

Result<api::ResetReply> Vmm::reset_to_snapshot_locked(const std::string& other) {
    if (!m_snapshot)
        return Error::from_string("this VM was not restored from a snapshot: there is nothing to reset to");
    std::unique_ptr<snapshot::Snapshot> replacement;
    if (!other.empty()) {
        replacement = std::make_unique<snapshot::Snapshot>(TRY(snapshot::read_state(other)));
        TRY(snapshot::check_same_machine(*m_snapshot, *replacement, m_cpuid, other));
    }
    uint64_t t0 = clock::now_ns();
    bool was_paused = is_paused();
    TRY(pause_vcpus());
    uint64_t resumes = m_runner->resumes();
    uint64_t t_paused = clock::now_ns(), t_reverted = 0, t_state = 0;
    uint64_t dirty = 0;
    auto result = [&]() -> Result<void> {
        // Devices stop first, so nothing writes guest memory behind the revert.
        {
            auto held = TRY(hold_idle_devices());
            for (auto& t : m_virtio) t->quiesce_locked();
        }
        dirty = TRY(snapshot::reset_memory(m_vm, m_memory,
                                           replacement ? other + "/" + snapshot::kMemoryFile : std::string()));
        if (replacement) {
            m_snapshot = std::move(replacement);
            m_snapshot_dir = other;
        }
        t_reverted = clock::now_ns();
        const auto& snap = *m_snapshot;
        TRY(snapshot::restore_machine(m_vm, m_vcpus, snap, false));
        TRY(load_device_state(snap));
        TRY(m_runner->check_still_paused(resumes));
        t_state = clock::now_ns();
        return {};
    }();
    if (result.is_error()) {
        // Half a reset is no VM to run.
        request_exit(kExitVmmError, "reset failed: " + result.error().message());
        return result.release_error();
    }
    if (!was_paused) resume_vcpus();
    uint64_t t_end = clock::now_ns();
    double us = double(t_end - t0) / 1e3;
    ++m_resets;
    m_last_reset_us = us;
    log::info("reset to {} in {:.1f} us ({} pages reverted)", m_snapshot_dir, us, dirty);
    // The guest's RNG state is the snapshot's again: reseed it before anyone
    // relies on it (a container session does so itself when it connects).
    bool reseeded = false;
    if (m_config.agent && !m_container && !was_paused) {
        auto r = reseed_guest();
        reseeded = !r.is_error();
        if (!reseeded) log::warn("could not reseed the guest's RNG after reset: {}", r.error().message());
    }
    auto us_between = [](uint64_t a, uint64_t b) { return double(b - a) / 1e3; };
    api::ResetReply reply{us, dirty, m_resets, reseeded, {}};
    reply.breakdown_us = {us_between(t0, t_paused), us_between(t_paused, t_reverted), us_between(t_reverted, t_state),
                          us_between(t_state, t_end)};
    return reply;
}

Result<void> Vmm::reseed_guest() {
    if (!m_config.agent || m_config.vsock_socket.empty())
        return Error::from_string("the guest runs no husk-agent to reseed its RNG through", ENOTSUP);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    auto client = TRY(agent::AgentClient::connect({m_config.vsock_socket, true, agent::kPort}, deadline));
    // A guest that never answers (no husk-agent behind the port after all)
    // must not hold this thread, and with it husk-vmm's exit, for ever.
    client->set_reply_deadline(deadline);
    TRY(client->hello());
    std::string entropy(64, '\0');
    if (::getrandom(entropy.data(), entropy.size(), 0) != ssize_t(entropy.size()))
        return Error::from_errno(errno, "getrandom");
    TRY(client->reseed(entropy));
    return {};
}

bool Vmm::is_paused() {
    return m_runner && m_runner->paused();
}

api::StatsReply Vmm::stats() {
    api::StatsReply r;
    r.vcpus = uint32_t(m_vcpus.size());
    r.memory_bytes = m_memory.size();
    r.rss_kib = sys::resident_kib();
    if (uint64_t first = m_runner ? m_runner->first_run_ns() : 0; first != 0)
        r.first_run_ms = double(first - clock::process_start_ns()) / 1e6;
    if (auto rss = sys::resident_breakdown_kib(); rss) r.rss_breakdown_kib = {rss->anon, rss->file, rss->shmem};
    if (m_balloon) {
        auto held = m_balloon_transport->hold();
        r.balloon = m_balloon->info();
    }
    if (m_vsock) {
        // What the guest holds of the device's capped tables (README, "Limits").
        auto held = m_vsock_transport->hold();
        r.vsock = {m_vsock->connection_count(), m_vsock->pending_client_count(), m_vsock->control_backlog(),
                   m_vsock->dropped_control_packets()};
    }
    if (m_snapshot) r.restored = {m_snapshot_dir, m_restore_ms, m_resets, m_last_reset_us};
    return r;
}

Result<api::BalloonReply> Vmm::balloon(std::optional<uint32_t> target_mib, bool fresh_stats) {
    std::lock_guard operation(m_operation_lock);
    if (!m_balloon) return Error::from_string("this VM has no balloon (balloon.enabled = false)", ENOTSUP);
    constexpr uint32_t kPagesPerMib = virtio::Balloon::kPagesPerMib;
    if (target_mib && *target_mib >= m_config.memory_mib)
        return Error::from_string(fmt::format("a balloon of {} MiB leaves the guest nothing: it has {} MiB",
                                              *target_mib, m_config.memory_mib),
                                  EINVAL);
    uint64_t seen = 0;
    bool asked = false;
    {
        auto held = m_balloon_transport->hold();
        if (target_mib) {
            m_balloon->set_target(*target_mib * kPagesPerMib);
            log::info("balloon target {} MiB", *target_mib);
        }
        seen = m_balloon->info().stats_updates;
        asked = fresh_stats && !is_paused() && m_balloon->request_stats();
    }
    // The driver answers from a work queue; a busy or stopped guest may not in time.
    bool fresh = false;
    for (int waited = 0; asked && waited < 1000 && !fresh; waited += 5) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        auto held = m_balloon_transport->hold();
        fresh = m_balloon->info().stats_updates != seen;
    }
    auto held = m_balloon_transport->hold();
    return api::BalloonReply{m_balloon->info(), fresh};
}

Result<std::string> Vmm::setup_virtio(const VmConfig& config) {
    // Each device with its stable id (snapshot::DeviceState).
    std::vector<std::pair<std::unique_ptr<virtio::VirtioDevice>, std::string>> devices;
    for (size_t i = 0; i < config.drives.size(); ++i) {
        const auto& d = config.drives[i];
        devices.emplace_back(TRY(virtio::Block::open({d.path, d.read_only, d.direct, d.id})),
                             d.id.empty() ? "drive" + std::to_string(i) : d.id);
    }
    if (config.rng) devices.emplace_back(std::make_unique<virtio::Rng>(), "rng");
    if (!config.net_tap.empty()) {
        virtio::NetOptions net{config.net_tap, {}};
        if (!config.net_mac.empty()) net.mac = TRY(virtio::parse_mac(config.net_mac).context("net.mac"));
        devices.emplace_back(TRY(virtio::Net::open(net)), "net");
    }
    if (!config.vsock_socket.empty()) {
        auto vsock = TRY(virtio::Vsock::create({config.vsock_cid, config.vsock_socket}));
        m_vsock = vsock.get();
        devices.emplace_back(std::move(vsock), "vsock");
    }
    if (config.balloon) {
        auto balloon = std::make_unique<virtio::Balloon>(
            virtio::BalloonOptions{config.balloon_target_mib * virtio::Balloon::kPagesPerMib,
                                   config.balloon_deflate_on_oom, config.balloon_free_page_reporting});
        m_balloon = balloon.get();
        devices.emplace_back(std::move(balloon), "balloon");
    }
    if (devices.empty()) return std::string();

    m_loop = TRY(EventLoop::create());
    std::string args;
    for (size_t i = 0; i < devices.size(); ++i) {
        // Page 0 of the device window holds the debug port.
        uint64_t base = x86::kMmioDevicesStart + (i + 1) * virtio::MmioTransport::kWindowSize;
        auto t = std::make_shared<virtio::MmioTransport>(std::move(devices[i].first), devices[i].second, m_memory,
                                                         *m_loop, kFirstVirtioGsi + uint32_t(i));
        TRY(t->attach(m_vm, base));
        TRY(m_mmio.insert(base, virtio::MmioTransport::kWindowSize, t));
        if (!args.empty()) args += ' ';
        args += t->cmdline_entry(base);
        if (m_balloon && &t->device() == m_balloon) m_balloon_transport = t;
        if (m_vsock && &t->device() == m_vsock) m_vsock_transport = t;
        m_virtio.push_back(std::move(t));
    }
    return args;
}

Result<void> Vmm::setup_devices(const VmConfig& config) {
    int out_fd = -1;
    // A container's stdout is its process's: the kernel's console stays out of it unless asked for.
    using Kind = ConsoleOutput::Kind;
    Kind console = config.console_output.kind;
    if (console == Kind::Auto) console = config.container_specs.empty() ? Kind::Stdout : Kind::None;
    const std::string& path = config.console_output.path;
    switch (console) {
        case Kind::Auto:
        case Kind::None:
            break;
        case Kind::Stdout:
            out_fd = STDOUT_FILENO;
            break;
        case Kind::Stderr:
            out_fd = STDERR_FILENO;
            break;
        case Kind::UnixSocket:
            m_console_file = TRY(sys::connect_unix(path).context("connect console socket"));
            out_fd = m_console_file.get();
            break;
        case Kind::File:
            m_console_file = TRY(sys::open(path, O_WRONLY | O_CREAT | O_APPEND, 0640).context("open console output"));
            out_fd = m_console_file.get();
            break;
    }
    m_serial = std::make_shared<Serial>(
        out_fd,
        [this] {
            // Edge on the ISA line: raise then lower.
            (void)m_vm.set_irq_line(Serial::kCom1Irq, true);
            (void)m_vm.set_irq_line(Serial::kCom1Irq, false);
        },
        [this] {
            // The banner is console text, which any guest process with
            // /dev/kmsg can print: in a container VM it counts only after
            // the agent reported the container's exit (vmm/EXIT_STATUS.md).
            if (!m_container || container_exit_reported()) return request_exit(0, "guest powered off (halted)");
            log::warn("the guest printed a halt or power-off banner while its container runs: ignored");
        });
    TRY(m_pio.insert(Serial::kCom1Base, 8, m_serial));
    auto i8042 = std::make_shared<I8042>([this] { guest_reset("reset through the i8042"); });
    TRY(m_pio.insert(I8042::kDataPort, 5, i8042));
    auto debug = std::make_shared<DebugPort>(DebugPort::Callbacks{
        [this] {
            if (!m_init_reached.exchange(true)) {
                double first = double(m_runner->first_run_ns() - clock::process_start_ns()) / 1e6;
                log::info("guest init reached {:.3f} ms after VMM start (first KVM_RUN at {:.3f} ms)",
                          clock::ms_since_start(), first);
                // Not on this vCPU thread: a snapshot waits for every vCPU to
                // stop. The main thread starts it (a vCPU thread may not start threads).
                if (!m_config.snapshot_on_ready.empty() && !m_stopping) {
                    m_snapshot_due = true;
                    ::kill(::getpid(), kWakeSignal);
                }
            }
        },
        [this](uint8_t status) { request_exit(status, "guest asked to exit with status " + std::to_string(status)); },
    });
    TRY(m_pio.insert(DebugPort::kPioBase, DebugPort::kSize, debug));
    TRY(m_mmio.insert(x86::kMmioDevicesStart, DebugPort::kSize, debug));
    m_console_stdin = config.console_input == ConsoleInput::Stdin;
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
    ::kill(::getpid(), kWakeSignal);
}

Result<void> Vmm::pause() {
    std::lock_guard operation(m_operation_lock);
    return pause_vcpus();
}

void Vmm::resume() {
    std::lock_guard operation(m_operation_lock);
    resume_vcpus();
}

Result<void> Vmm::pause_vcpus() {
    if (!m_runner) return Error::from_string("the VM is not running", EAGAIN);
    return m_runner->pause();
}

void Vmm::resume_vcpus() {
    if (m_runner) m_runner->resume();
}

nlohmann::json Vmm::api_request(const nlohmann::json& request) {
    auto command = api::parse_command(request);
    if (command.is_error()) return {{"error", command.error().message()}};
    if (!m_container && api::needs_container(command.value()))
        return {
            {"error", fmt::format("`{}` needs a container (container.specs)", api::command_name(command.value()))}};
    auto reply = handle(command.value());
    return reply ? api::to_json(reply.value()) : nlohmann::json{{"error", reply.error().message()}};
}

std::string Vmm::status() {
    std::string s = m_container ? ContainerSession::to_string(m_container->status()) : "running";
    return is_paused() ? "paused" : s;
}

Result<api::Reply> Vmm::handle(const api::Command& command) {
    return std::visit(
        [this](const auto& c) -> Result<api::Reply> {
            using C = std::decay_t<decltype(c)>;
            if constexpr (std::is_same_v<C, api::State>) {
                return api::StatusReply{status(), ::getpid()};
            } else if constexpr (std::is_same_v<C, api::Pause>) {
                TRY(pause());
                return api::StatusReply{status(), {}};
            } else if constexpr (std::is_same_v<C, api::Resume>) {
                resume();
                return api::StatusReply{status(), {}};
            } else if constexpr (std::is_same_v<C, api::Stats>) {
                return stats();
            } else if constexpr (std::is_same_v<C, api::Balloon>) {
                return TRY(balloon(c.target_mib, c.fresh_stats));
            } else if constexpr (std::is_same_v<C, api::Snapshot>) {
                return TRY(take_snapshot(c.path));
            } else if constexpr (std::is_same_v<C, api::Reset>) {
                return TRY(reset_to_snapshot());
            } else if constexpr (std::is_same_v<C, api::Restore>) {
                return TRY(reset_to_snapshot(c.path));
            } else if constexpr (std::is_same_v<C, api::Start>) {
                TRY(m_container->request_start());
                return api::StatusReply{"running", {}};
            } else if constexpr (std::is_same_v<C, api::Kill>) {
                // Before start there is no process: the signal ends the VM, as it would a created runc container.
                if (m_container->status() != ContainerSession::Status::Running) {
                    request_exit(kExitSignalBase + c.signal,
                                 std::string("killed before start by ") + strsignal(c.signal));
                    return api::StatusReply{"stopped", {}};
                }
                if (is_paused()) return Error::from_string("the container is paused; resume it first", EBUSY);
                TRY(m_container->signal(c.signal, c.all));
                return api::StatusReply{status(), {}};
            } else {
                static_assert(std::is_same_v<C, api::Resize>);
                TRY(m_container->resize(c.rows, c.cols));
                return api::EmptyReply{};
            }
        },
        command);
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

}  // namespace husk
