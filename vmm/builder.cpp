// Vmm's builder: the one place a VM is wired, for a cold boot (create) and a
// restore alike — KVM, memory slots, irqchip, devices (build), then vCPUs
// (create_vcpus) set up from the kernel's entry or from the snapshot.
#include <fcntl.h>
#include <unistd.h>

#include "vmm/arch/x86/boot.h"
#include "vmm/arch/x86/cpuid.h"
#include "vmm/arch/x86/layout.h"
#include "vmm/arch/x86/loader.h"
#include "vmm/arch/x86/regs.h"
#include "vmm/base/clock.h"
#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/devices/legacy/debug_port.h"
#include "vmm/devices/legacy/i8042.h"
#include "vmm/devices/virtio/block/block.h"
#include "vmm/devices/virtio/fs/fs.h"
#include "vmm/devices/virtio/net/net.h"
#include "vmm/devices/virtio/rng/rng.h"
#include "vmm/seccomp/seccomp.h"
#include "vmm/snapshot/snapshot.h"
#include "vmm/vmm.h"

namespace husk {
namespace {

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

}  // namespace

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
    // A container with a network: interfaces the engine adds once it runs are named in a warning.
    if (!config.nics.empty() && m_loop) {
        m_link_watch = TRY(LinkWatch::open(
            [self] { return self->m_container->status() == ContainerSession::Status::Running; },
            [](const std::string& name) {
                log::warn(
                    "network interface `{}` was added to the container's namespace while it runs (docker "
                    "network connect): it is not wired to the VM, whose NICs are made at create; restart the "
                    "container to use it",
                    name);
            }));
        m_link_watch->start(*m_loop);
    }
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

Result<std::string> Vmm::setup_virtio(const VmConfig& config) {
    // Each device with its stable id (snapshot::DeviceState).
    std::vector<std::pair<std::unique_ptr<virtio::VirtioDevice>, std::string>> devices;
    for (size_t i = 0; i < config.drives.size(); ++i) {
        const auto& d = config.drives[i];
        devices.emplace_back(TRY(virtio::Block::open({d.path, d.read_only, d.direct, d.id})),
                             d.id.empty() ? "drive" + std::to_string(i) : d.id);
    }
    if (config.rng) devices.emplace_back(std::make_unique<virtio::Rng>(), "rng");
    if (config.fs) {
        std::vector<virtio::fs::ShareOptions> shares;
        for (const auto& s : config.shares) shares.push_back({s.name, s.path, s.read_only});
        devices.emplace_back(TRY(virtio::Fs::create(std::move(shares))), "fs");
        seccomp::allow_file_sharing();
    }
    for (size_t i = 0; i < config.nics.size(); ++i) {
        const NicConfig& nic = config.nics[i];
        virtio::NetOptions net{nic.tap, {}};
        if (!nic.mac.empty()) net.mac = TRY(virtio::parse_mac(nic.mac).context("net.mac"));
        devices.emplace_back(TRY(virtio::Net::open(net)), NicConfig::device_id(i));
    }
    if (!config.vsock_socket.empty()) {
        virtio::VsockOptions options{config.vsock_cid, config.vsock_socket, {}};
        if (!config.vsock_dns_forward.empty()) {
            options.dns_forward = TRY(parse_ipv4_endpoint(config.vsock_dns_forward).context("vsock.dns_forward"));
            seccomp::allow_dns_forward();
        }
        auto vsock = TRY(virtio::Vsock::create(options));
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
        for (size_t n = 0; n < config.nics.size(); ++n)
            if (devices[i].second == NicConfig::device_id(n)) {
                m_net_transports.push_back(t);
                if (config.nics[n].unplugged) t->set_unplugged();
            }
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
                    wake_main_thread();
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

}  // namespace husk
