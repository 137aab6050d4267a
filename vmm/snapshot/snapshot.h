// Snapshot files: `vmstate` (this format) beside `memory` (guest RAM, page
// for page). vmstate is a 32-byte header — magic "HUSKSNAP", format version,
// body length, FNV-1a-64 checksum of the body — and a body of little-endian
// fields (vmm/base/wire.h): the machine, every vCPU, the VM-wide chips and
// clock, and each device. Everything read back is checked; a file from
// another format version, a truncated or corrupted one is refused whole.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/kvm/kvm_abi.h"

namespace husk {
class Vcpu;
class Vm;
}  // namespace husk

namespace husk::snapshot {

// 2: device states carry their device's id and type.
// 3: each device's state is its typed, versioned persisted state (vmm/devices/virtio/persist.h).
inline constexpr uint32_t kFormatVersion = 3;
inline constexpr size_t kHeaderSize = 32;
inline constexpr const char* kStateFile = "vmstate";
inline constexpr const char* kMemoryFile = "memory";

struct VcpuState {
    kvm_regs regs{};
    kvm_sregs sregs{};
    kvm_abi::Xsave xsave{};
    kvm_xcrs xcrs{};
    kvm_debugregs debugregs{};
    kvm_lapic_state lapic{};
    kvm_vcpu_events events{};
    kvm_mp_state mp_state{};
    std::vector<kvm_msr_entry> msrs;
    // The table the VMM gave the vCPU (KVM_GET_CPUID2 may report more on some hosts).
    std::vector<kvm_cpuid_entry2> cpuid;
    uint32_t tsc_khz = 0;
};

struct VmState {
    kvm_clock_data clock{};
    kvm_irqchip pic_master{};
    kvm_irqchip pic_slave{};
    kvm_irqchip ioapic{};
    kvm_pit_state2 pit{};
};

// What the VM is built of; a restore builds the same machine.
struct Machine {
    uint64_t memory_bytes = 0;
    uint32_t vcpus = 0;
    std::string cpu_vendor;    // "GenuineIntel", "AuthenticAMD"
    std::string cpu_template;  // "host" or "baseline" (vmm/arch/x86/cpuid.h)
    std::string config;        // the VM's configuration as JSON (devices, sizes)
};

// One virtio device's state, named by its stable id: a drive's id
// (`drive<N>` when it has none), or the device's kind ("rng", "net", "vsock",
// "balloon"). Restore matches states to devices by id and type.
struct DeviceState {
    std::string id;
    uint32_t type = 0;  // virtio device type (§5)
    std::string state;  // MmioTransport::save_state
};

// Every device of `present` (id and type, in MMIO order) gets the snapshot's
// state of that id, which must sit at the same place (the guest found each
// device at its MMIO window) and be of the same type; a device missing on
// either side, moved or of another type is refused, named.
Result<std::vector<const DeviceState*>> match_devices(const std::vector<DeviceState>& saved,
                                                      const std::vector<std::pair<std::string, uint32_t>>& present);

struct Snapshot {
    Machine machine;
    std::vector<VcpuState> vcpus;
    VmState vm;
    std::string serial;                // Serial::save_state
    std::vector<DeviceState> devices;  // virtio devices, in MMIO order
};

std::string encode(const Snapshot& snapshot);
// `what` names the source in errors (a path).
Result<Snapshot> decode(std::string_view bytes, const std::string& what);

// Writes `dir/vmstate` through a temporary file and a rename, so a reader
// never sees half a file.
Result<void> write_state(const std::string& dir, const Snapshot& snapshot);
Result<Snapshot> read_state(const std::string& dir);

// The MSRs worth saving: KVM's index list. `cpuid` is left to the caller.
Result<VcpuState> capture_vcpu(const Vcpu& vcpu, const std::vector<uint32_t>& msr_indices);
Result<VmState> capture_vm(const Vm& vm);

// Restore and reset alike: the interrupt controllers and PIT, every vCPU (in
// the order KVM needs: TSC frequency, MP state, registers, special registers
// before the LAPIC, FPU/XSAVE, XCRs, debug registers, LAPIC before the
// TSC-deadline MSR, MSRs, pending events last), then kvmclock — moved on by
// the host's wall-clock time since the capture (KVM_CLOCK_REALTIME when KVM
// can), so the guest sees a pause, not time running backwards. `fresh_vcpus`:
// the vCPUs never ran (restore; the builder gave them the snapshot's CPUID), so
// their TSC frequency is set too; a reset's vCPUs already run at it.
Result<void> restore_machine(Vm& vm, std::span<Vcpu> vcpus, const Snapshot& snapshot, bool fresh_vcpus);

// Whether a running VM restored from `current`, whose vCPUs were given
// `vcpu_cpuid`, can take `other` in place (`restore` over the API): the same
// machine description, sizes, CPUID and TSC frequency. `name` names `other` in errors.
Result<void> check_same_machine(const Snapshot& current, const Snapshot& other,
                                const std::vector<std::vector<kvm_cpuid_entry2>>& vcpu_cpuid, const std::string& name);

// Whether this host can run a snapshot's vCPUs: the same CPU vendor, and
// every CPUID feature bit the snapshot's guest saw is one this host offers
// (`host_cpuid`: the table this host would give a new guest of the same
// template). The first missing feature is named.
Result<void> check_cpu(const Machine& machine, const std::vector<kvm_cpuid_entry2>& snapshot_cpuid,
                       const std::vector<kvm_cpuid_entry2>& host_cpuid);

}  // namespace husk::snapshot
