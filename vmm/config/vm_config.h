// VmConfig: everything husk-vmm needs to start one microVM, from vm.toml
// and/or command-line flags.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/result.h"

namespace husk {

// IOAPIC pins 5..23 for virtio-mmio devices.
inline constexpr size_t kMaxVirtioDevices = 19;
inline constexpr size_t kMaxNics = 4;

// A virtio-net device over a host TAP.
struct NicConfig {
    std::string tap;
    std::string mac;         // empty: generated
    bool unplugged = false;  // a placeholder until the API's plug_net (MmioTransport::set_unplugged)
    // Its device's name in a snapshot: "net", then "net1", "net2", ...
    static std::string device_id(size_t index) { return index ? "net" + std::to_string(index) : "net"; }
};

// tsc=reliable: no clocksource watchdog on the TSC. The watchdog compares
// the TSC with kvm-clock; when a restored VM (or a vCPU thread that moved
// between host CPUs under nested virtualization) shows a skew, the guest
// marks the TSC unstable and switches sched_clock, patching its own kernel
// text mid-run. The kernel documents the option for virtualized guests.
inline constexpr const char* kDefaultCmdline =
    "console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd nomodule tsc=reliable";

// boot.entry: how the kernel is entered.
enum class BootEntry { Auto, Pvh, Linux64 };
// machine.cpu_template: the CPUID the guest sees (vmm/arch/x86/cpuid.h).
enum class CpuTemplate { Host, Baseline };
// console.output: where the serial console goes.
struct ConsoleOutput {
    enum class Kind { Auto, Stdout, Stderr, None, UnixSocket, File };
    Kind kind = Kind::Auto;  // Auto: stdout, or none for a container VM
    std::string path;        // UnixSocket, File
    bool operator==(const ConsoleOutput&) const = default;
};
// console.input: what feeds the serial console.
enum class ConsoleInput { None, Stdin };

// The one place each of these is spelled: vm.toml, the flags and snapshots
// go through them, and an unknown word is an error naming the key.
Result<BootEntry> parse_boot_entry(std::string_view text);
Result<CpuTemplate> parse_cpu_template(std::string_view text);
Result<ConsoleOutput> parse_console_output(std::string_view text);
Result<ConsoleInput> parse_console_input(std::string_view text);
const char* to_string(CpuTemplate t);

struct DriveConfig {
    std::string path;
    bool read_only = false;
    bool direct = false;
    std::string id;
};

// [[share]]: a host directory served by virtio-fs, under `name` in the
// device's root (the guest mounts tag "husk" once and binds each share).
struct ShareConfig {
    std::string name;  // one path component
    std::string path;  // a host directory
    bool read_only = false;
};
// At most this many shares per VM (one FUSE root lists them).
inline constexpr size_t kMaxShares = 64;

struct VmConfig {
    // [boot]
    std::string kernel;     // vmlinux (ELF, PVH note) or bzImage; required
    std::string initramfs;  // optional
    std::string cmdline = kDefaultCmdline;
    BootEntry entry = BootEntry::Auto;
    // [machine]
    uint32_t vcpus = 1;
    uint32_t memory_mib = 128;
    bool hugepages = false;
    CpuTemplate cpu_template = CpuTemplate::Host;
    // Restore this snapshot directory instead of booting (boot.* is not needed).
    std::string restore;
    // Boot, snapshot into this directory once the guest's init signals it is
    // ready (the boot-timer port), and exit: how templates are made.
    std::string snapshot_on_ready;
    // The guest's init is husk-agent (set when husk-vmm picks the agent's
    // initramfs; kept in snapshots): after a restore or reset, husk-vmm
    // reseeds the guest's RNG through it.
    bool agent = false;
    // [console]
    ConsoleOutput console_output;
    ConsoleInput console_input = ConsoleInput::None;
    // [[drive]]: virtio-blk disks, in order (/dev/vda, /dev/vdb, ...)
    std::vector<DriveConfig> drives;
    // [devices]
    bool rng = true;
    // [fs]: the virtio-fs device (tag "husk"), with or without shares; [[share]]s turn it on
    bool fs = false;
    std::vector<ShareConfig> shares;
    // [balloon]: virtio-balloon; the target is what the guest gives back
    bool balloon = true;
    uint32_t balloon_target_mib = 0;
    bool balloon_deflate_on_oom = true;
    bool balloon_free_page_reporting = true;
    // [vsock]: empty socket = no vsock device
    std::string vsock_socket;
    uint64_t vsock_cid = 3;
    // "IPv4:PORT": guest connections to vsock port 53 go to this TCP address
    // (the container's DNS server, as husk-vmm's network namespace reaches it); empty = <socket>_53
    std::string vsock_dns_forward;
    // [net] (one NIC) or [[net]] (several, the guest's eth0, eth1, ... in order): none = no network device
    std::vector<NicConfig> nics;
    // [container]: the specs file the runtime writes (agent::encode_specs_file)
    // for the agent to set up and run; empty = a plain VM
    std::string container_specs;
    bool container_wait_for_start = false;  // OCI create: wait for `start` on the API socket
    // [api]: the control socket (vmm/api/API.md); empty = none
    std::string api_socket;
    // [jail]: namespaces, a pivot_root of its own, no capabilities (vmm/jail/jail.h)
    bool jail = false;
    std::string jail_user;    // "UID[:GID]"; empty = stay root (without capabilities)
    std::string jail_cgroup;  // cgroup v2 path under /sys/fs/cgroup; empty = stay where started
    // Not in vm.toml: an inherited fd told "ok" once the container is created (--ready-fd).
    int ready_fd = -1;
};

// Parses "TAP[,mac=aa:bb:cc:dd:ee:ff]" (the --net flag) into config's first NIC.
Result<void> parse_net_flag(std::string_view text, VmConfig& config);

// Parses "A.B.C.D:PORT" (vsock.dns_forward) into an IPv4 socket address.
Result<sockaddr_in> parse_ipv4_endpoint(std::string_view text);

// Parses "PATH[,cid=N]" (the --vsock flag) into config.
Result<void> parse_vsock_flag(std::string_view text, VmConfig& config);

// Parses "NAME=PATH[,ro]" (the --share flag).
Result<ShareConfig> parse_share_flag(std::string_view text);

// Parses "PATH[,ro][,direct][,id=NAME]" (the --drive flag).
Result<DriveConfig> parse_drive_flag(std::string_view text);

// One documented key: used for --help and for the unknown-key error.
struct ConfigKey {
    const char* table;
    const char* key;
    const char* type;
    const char* help;
};
const std::vector<ConfigKey>& vm_config_keys();

// Parses vm.toml text on top of `base`. `source` names the file in errors.
// The machine's shape as a snapshot records it: sizes and devices. Host-side
// endpoints (API socket, console) are not part of it.
nlohmann::json machine_to_json(const VmConfig& config);
// `into` keeps its host-side endpoints; the machine comes from `json`. The
// vsock socket and drive paths of `into` win when set (a restore's own).
Result<void> machine_from_json(const nlohmann::json& json, VmConfig& into);

Result<VmConfig> parse_vm_toml(std::string_view text, std::string_view source, VmConfig base = {});
// Checks values that no parser can (ranges, required keys).
Result<void> validate(const VmConfig& config);

}  // namespace husk
