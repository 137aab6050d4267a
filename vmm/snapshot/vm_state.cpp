// The KVM side of snapshots: capturing and restoring vCPU, chip and clock
// state, and the CPU compatibility check (snapshot.h). The file format is in
// snapshot.cpp, which the runtime reads too.
#include <fmt/format.h>

#include <cstring>
#include <ctime>

#include "vmm/arch/x86/cpuid.h"
#include "vmm/kvm/vcpu.h"
#include "vmm/kvm/vm.h"
#include "vmm/snapshot/snapshot.h"

namespace husk::snapshot {
namespace {

Result<void> restore_vcpu(Vcpu& vcpu, const VcpuState& s, bool fresh) {
    // Only when it differs: setting the frequency needs TSC scaling on the host.
    if (fresh && s.tsc_khz != 0) {
        auto khz = vcpu.tsc_khz();
        uint32_t current = khz ? khz.value() : 0;
        if (current != s.tsc_khz) TRY(vcpu.set_tsc_khz(s.tsc_khz).context("set the snapshot's TSC frequency"));
    }
    TRY(vcpu.set(KVM_SET_MP_STATE, s.mp_state, "KVM_SET_MP_STATE"));
    TRY(vcpu.set_regs(s.regs));
    TRY(vcpu.set_sregs(s.sregs));
    TRY(vcpu.set(kvm_abi::kSetXsave, s.xsave, "KVM_SET_XSAVE"));
    TRY(vcpu.set(KVM_SET_XCRS, s.xcrs, "KVM_SET_XCRS"));
    TRY(vcpu.set(KVM_SET_DEBUGREGS, s.debugregs, "KVM_SET_DEBUGREGS"));
    TRY(vcpu.set_lapic(s.lapic));
    TRY(vcpu.set_msrs(s.msrs));
    kvm_vcpu_events events = s.events;
    // Restore the NMI and SIPI parts as saved too.
    events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    TRY(vcpu.set(KVM_SET_VCPU_EVENTS, events, "KVM_SET_VCPU_EVENTS"));
    return {};
}

Result<void> restore_vm_chips(Vm& vm, const VmState& s) {
    if (s.pic_master.chip_id != KVM_IRQCHIP_PIC_MASTER || s.pic_slave.chip_id != KVM_IRQCHIP_PIC_SLAVE ||
        s.ioapic.chip_id != KVM_IRQCHIP_IOAPIC)
        return Error::from_string("snapshot: interrupt controller records are out of order", EINVAL);
    TRY(vm.set_irqchip(s.pic_master));
    TRY(vm.set_irqchip(s.pic_slave));
    TRY(vm.set_irqchip(s.ioapic));
    TRY(vm.set_pit(s.pit));
    return {};
}

Result<void> restore_clock(Vm& vm, const kvm_clock_data& saved) {
    kvm_clock_data c{};
    c.clock = saved.clock;
    if (saved.flags & KVM_CLOCK_REALTIME) {
        // KVM moves the clock on by the realtime elapsed since `saved.realtime`.
        c.flags = KVM_CLOCK_REALTIME;
        c.realtime = saved.realtime;
        if (vm.set_clock(c)) return {};
        c.flags = 0;
        timespec now{};
        ::clock_gettime(CLOCK_REALTIME, &now);
        uint64_t now_ns = uint64_t(now.tv_sec) * 1'000'000'000ull + uint64_t(now.tv_nsec);
        if (now_ns > saved.realtime) c.clock += now_ns - saved.realtime;
    }
    return vm.set_clock(c);
}

}  // namespace

Result<VcpuState> capture_vcpu(const Vcpu& vcpu, const std::vector<uint32_t>& msr_indices) {
    VcpuState s;
    s.mp_state = TRY(vcpu.get<kvm_mp_state>(KVM_GET_MP_STATE, "KVM_GET_MP_STATE"));
    s.regs = TRY(vcpu.regs());
    s.sregs = TRY(vcpu.sregs());
    s.xsave = TRY(vcpu.get<kvm_abi::Xsave>(kvm_abi::kGetXsave, "KVM_GET_XSAVE"));
    s.xcrs = TRY(vcpu.get<kvm_xcrs>(KVM_GET_XCRS, "KVM_GET_XCRS"));
    s.debugregs = TRY(vcpu.get<kvm_debugregs>(KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS"));
    s.lapic = TRY(vcpu.lapic());
    s.msrs = TRY(vcpu.msrs(msr_indices));
    s.events = TRY(vcpu.get<kvm_vcpu_events>(KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS"));
    if (auto khz = vcpu.tsc_khz()) s.tsc_khz = khz.value();
    return s;
}

Result<VmState> capture_vm(const Vm& vm) {
    VmState s;
    s.clock = TRY(vm.clock());
    s.pic_master = TRY(vm.irqchip(KVM_IRQCHIP_PIC_MASTER));
    s.pic_slave = TRY(vm.irqchip(KVM_IRQCHIP_PIC_SLAVE));
    s.ioapic = TRY(vm.irqchip(KVM_IRQCHIP_IOAPIC));
    s.pit = TRY(vm.pit());
    return s;
}

Result<void> restore_machine(Vm& vm, std::span<Vcpu> vcpus, const Snapshot& snap, bool fresh_vcpus) {
    if (vcpus.size() != snap.vcpus.size())
        return Error::from_string(fmt::format("the snapshot has {} vCPUs, this VM {}", snap.vcpus.size(), vcpus.size()),
                                  EINVAL);
    TRY(restore_vm_chips(vm, snap.vm).context("restore interrupt controllers"));
    for (size_t i = 0; i < vcpus.size(); ++i)
        TRY(restore_vcpu(vcpus[i], snap.vcpus[i], fresh_vcpus).context("restore vCPU " + std::to_string(i)));
    TRY(restore_clock(vm, snap.vm.clock).context("restore kvmclock"));
    return {};
}

Result<void> check_same_machine(const Snapshot& current, const Snapshot& other,
                                const std::vector<std::vector<kvm_cpuid_entry2>>& vcpu_cpuid, const std::string& name) {
    if (other.machine.memory_bytes != current.machine.memory_bytes || other.machine.vcpus != current.machine.vcpus ||
        other.machine.config != current.machine.config || other.vcpus.size() != vcpu_cpuid.size())
        return Error::from_string("snapshot `" + name + "` is of a different machine than this VM", EINVAL);
    // CPUID cannot change once a vCPU has run: the new snapshot's must be these vCPUs' own.
    for (size_t i = 0; i < vcpu_cpuid.size(); ++i) {
        const auto& want = other.vcpus[i].cpuid;
        if (want.size() != vcpu_cpuid[i].size() ||
            std::memcmp(want.data(), vcpu_cpuid[i].data(), want.size() * sizeof(kvm_cpuid_entry2)) != 0 ||
            other.vcpus[i].tsc_khz != current.vcpus[i].tsc_khz)
            return Error::from_string("snapshot `" + name + "` has other CPUID or TSC frequency than this VM", EINVAL);
    }
    return {};
}

Result<void> check_cpu(const Machine& machine, const std::vector<kvm_cpuid_entry2>& snapshot_cpuid,
                       const std::vector<kvm_cpuid_entry2>& host_cpuid) {
    std::string host_vendor = x86::vendor_string(host_cpuid);
    if (machine.cpu_vendor != host_vendor)
        return Error::from_string(
            fmt::format("the snapshot was taken on a {} CPU; this host's is {}", machine.cpu_vendor, host_vendor),
            ENOTSUP);
    struct FeatureWord {
        uint32_t function, index;
        uint32_t kvm_cpuid_entry2::*reg;
        const char* name;
    };
    static const FeatureWord kWords[] = {
        {1, 0, &kvm_cpuid_entry2::ecx, "1.ECX"},
        {1, 0, &kvm_cpuid_entry2::edx, "1.EDX"},
        {7, 0, &kvm_cpuid_entry2::ebx, "7.0.EBX"},
        {7, 0, &kvm_cpuid_entry2::ecx, "7.0.ECX"},
        {7, 0, &kvm_cpuid_entry2::edx, "7.0.EDX"},
        {0xd, 0, &kvm_cpuid_entry2::eax, "0xD.0.EAX (XSAVE components)"},
        {0xd, 1, &kvm_cpuid_entry2::eax, "0xD.1.EAX"},
        {0x80000001, 0, &kvm_cpuid_entry2::ecx, "0x80000001.ECX"},
        {0x80000001, 0, &kvm_cpuid_entry2::edx, "0x80000001.EDX"},
    };
    auto find = [](const std::vector<kvm_cpuid_entry2>& t, uint32_t f, uint32_t i) -> const kvm_cpuid_entry2* {
        for (const auto& e : t)
            if (e.function == f && e.index == i) return &e;
        return nullptr;
    };
    for (const auto& w : kWords) {
        const auto* want = find(snapshot_cpuid, w.function, w.index);
        if (!want) continue;
        const auto* have = find(host_cpuid, w.function, w.index);
        uint32_t need = want->*w.reg;
        uint32_t offered = have ? have->*w.reg : 0;
        // OSXSAVE (1.ECX bit 27) mirrors the guest's CR4, not a CPU feature.
        if (w.function == 1 && w.reg == &kvm_cpuid_entry2::ecx) need &= ~(1u << 27);
        if (uint32_t missing = need & ~offered; missing != 0) {
            unsigned bit = unsigned(__builtin_ctz(missing));
            return Error::from_string(fmt::format("the snapshot's guest uses CPUID {} bit {}, which this host does not "
                                                  "offer (take snapshots with cpu_template = \"baseline\" to move "
                                                  "them between different CPUs)",
                                                  w.name, bit),
                                      ENOTSUP);
        }
    }
    return {};
}

}  // namespace husk::snapshot
