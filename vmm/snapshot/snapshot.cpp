#include "vmm/snapshot/snapshot.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstring>
#include <ctime>

#include "vmm/arch/x86/cpuid.h"
#include "vmm/base/system.h"
#include "vmm/base/wire.h"
#include "vmm/kvm/vcpu.h"
#include "vmm/kvm/vm.h"

namespace husk::snapshot {
namespace {

constexpr char kMagic[8] = {'H', 'U', 'S', 'K', 'S', 'N', 'A', 'P'};
constexpr size_t kMaxVcpus = 256;
constexpr size_t kMaxStateBytes = 64 << 20;

void put_u32(std::string& out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(char(v >> (8 * i)));
}
void put_u64(std::string& out, uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(char(v >> (8 * i)));
}
uint64_t get_le(std::string_view bytes, size_t at, size_t width) {
    uint64_t v = 0;
    for (size_t i = 0; i < width; ++i) v |= uint64_t(uint8_t(bytes[at + i])) << (8 * i);
    return v;
}

void put_vcpu(wire::Writer& w, const VcpuState& v) {
    w.object(v.regs).object(v.sregs).object(v.xsave).object(v.xcrs).object(v.debugregs).object(v.lapic);
    w.object(v.events).object(v.mp_state).u32(v.tsc_khz);
    w.u32(uint32_t(v.msrs.size()));
    for (const auto& m : v.msrs) w.u32(m.index).u64(m.data);
    w.u32(uint32_t(v.cpuid.size()));
    for (const auto& e : v.cpuid) w.object(e);
}

VcpuState get_vcpu(wire::Reader& r) {
    VcpuState v;
    v.regs = r.object<kvm_regs>();
    v.sregs = r.object<kvm_sregs>();
    v.xsave = r.object<kvm_abi::Xsave>();
    v.xcrs = r.object<kvm_xcrs>();
    v.debugregs = r.object<kvm_debugregs>();
    v.lapic = r.object<kvm_lapic_state>();
    v.events = r.object<kvm_vcpu_events>();
    v.mp_state = r.object<kvm_mp_state>();
    v.tsc_khz = r.u32();
    uint32_t msrs = r.count(12);
    for (uint32_t i = 0; i < msrs && !r.failed(); ++i) {
        kvm_msr_entry m{};
        m.index = r.u32();
        m.data = r.u64();
        v.msrs.push_back(m);
    }
    uint32_t leaves = r.count(4 + sizeof(kvm_cpuid_entry2));
    for (uint32_t i = 0; i < leaves && !r.failed(); ++i) v.cpuid.push_back(r.object<kvm_cpuid_entry2>());
    return v;
}

}  // namespace

std::string encode(const Snapshot& s) {
    wire::Writer w;
    w.u64(s.machine.memory_bytes).u32(s.machine.vcpus).str(s.machine.cpu_vendor).str(s.machine.cpu_template);
    w.str(s.machine.config);
    w.u32(uint32_t(s.vcpus.size()));
    for (const auto& v : s.vcpus) put_vcpu(w, v);
    w.object(s.vm.clock).object(s.vm.pic_master).object(s.vm.pic_slave).object(s.vm.ioapic).object(s.vm.pit);
    w.str(s.serial).u32(uint32_t(s.devices.size()));
    for (const auto& d : s.devices) w.str(d.id).u32(d.type).str(d.state);
    std::string body = w.take();
    std::string out(kMagic, sizeof kMagic);
    put_u32(out, kFormatVersion);
    put_u32(out, 0);
    put_u64(out, body.size());
    put_u64(out, wire::fnv1a64(body));
    return out + body;
}

Result<Snapshot> decode(std::string_view bytes, const std::string& what) {
    auto refuse = [&](const std::string& why) { return Error::from_string("snapshot `" + what + "` " + why, EINVAL); };
    if (bytes.size() < sizeof kMagic || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
        return refuse("is not a husk snapshot (bad magic)");
    if (bytes.size() < kHeaderSize) return refuse("is truncated (its header is incomplete)");
    uint32_t version = uint32_t(get_le(bytes, 8, 4));
    if (version != kFormatVersion)
        return refuse(fmt::format("has format version {}; this husk-vmm reads version {}", version, kFormatVersion));
    uint64_t length = get_le(bytes, 16, 8);
    uint64_t checksum = get_le(bytes, 24, 8);
    std::string_view body = bytes.substr(kHeaderSize);
    if (body.size() < length) return refuse(fmt::format("is truncated ({} of {} bytes)", body.size(), length));
    if (body.size() > length) return refuse(fmt::format("has {} bytes after its end", body.size() - length));
    if (wire::fnv1a64(body) != checksum) return refuse("is corrupt (checksum mismatch)");

    Snapshot s;
    wire::Reader r(body, "snapshot");
    s.machine.memory_bytes = r.u64();
    s.machine.vcpus = r.u32();
    s.machine.cpu_vendor = r.str();
    s.machine.cpu_template = r.str();
    s.machine.config = r.str();
    uint32_t vcpus = r.count(1);
    if (!r.failed() && (vcpus == 0 || vcpus > kMaxVcpus || vcpus != s.machine.vcpus))
        return refuse(fmt::format("has {} vCPU records for a {}-vCPU machine", vcpus, s.machine.vcpus));
    for (uint32_t i = 0; i < vcpus && !r.failed(); ++i) s.vcpus.push_back(get_vcpu(r));
    s.vm.clock = r.object<kvm_clock_data>();
    s.vm.pic_master = r.object<kvm_irqchip>();
    s.vm.pic_slave = r.object<kvm_irqchip>();
    s.vm.ioapic = r.object<kvm_irqchip>();
    s.vm.pit = r.object<kvm_pit_state2>();
    s.serial = r.str();
    uint32_t devices = r.count(12);
    for (uint32_t i = 0; i < devices && !r.failed(); ++i) {
        DeviceState d;
        d.id = r.str();
        d.type = r.u32();
        d.state = r.str();
        s.devices.push_back(std::move(d));
    }
    if (auto done = r.finish("vmstate"); done.is_error()) return refuse("is invalid: " + done.error().message());
    if (s.machine.memory_bytes == 0 || s.machine.memory_bytes % 4096 != 0)
        return refuse("has an invalid guest memory size");
    return s;
}

Result<std::vector<const DeviceState*>> match_devices(const std::vector<DeviceState>& saved,
                                                      const std::vector<std::pair<std::string, uint32_t>>& present) {
    auto find = [](const auto& list, const std::string& id, auto id_of) -> int {
        for (size_t i = 0; i < list.size(); ++i)
            if (id_of(list[i]) == id) return int(i);
        return -1;
    };
    auto saved_id = [](const DeviceState& d) { return d.id; };
    auto present_id = [](const std::pair<std::string, uint32_t>& d) { return d.first; };
    std::vector<const DeviceState*> matched;
    for (size_t i = 0; i < present.size(); ++i) {
        const auto& [id, type] = present[i];
        int at = find(saved, id, saved_id);
        if (at < 0) return Error::from_string(fmt::format("the snapshot has no device `{}`", id), EINVAL);
        if (size_t(at) != i)
            return Error::from_string(fmt::format("device `{}` is virtio device {} here but {} in the snapshot (give the "
                                                  "devices in the snapshot's order)",
                                                  id, i, at),
                                      EINVAL);
        if (saved[i].type != type)
            return Error::from_string(fmt::format("device `{}` is of virtio type {} here but {} in the snapshot", id,
                                                  type, saved[i].type),
                                      EINVAL);
        matched.push_back(&saved[i]);
    }
    for (const auto& d : saved)
        if (find(present, d.id, present_id) < 0)
            return Error::from_string(fmt::format("the snapshot's device `{}` is missing from this VM", d.id), EINVAL);
    return matched;
}

Result<void> write_state(const std::string& dir, const Snapshot& snapshot) {
    std::string path = dir + "/" + kStateFile;
    std::string temp = path + ".tmp";
    {
        auto fd = TRY(sys::open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600).context("create `" + temp + "`"));
        TRY(sys::write_all(fd.get(), encode(snapshot)).context("write `" + temp + "`"));
        if (::fsync(fd.get()) < 0) return Error::from_errno(errno, "fsync `" + temp + "`");
    }
    if (::rename(temp.c_str(), path.c_str()) < 0) return Error::from_errno(errno, "rename `" + temp + "`");
    return {};
}

Result<Snapshot> read_state(const std::string& dir) {
    std::string path = dir + "/" + kStateFile;
    auto bytes = TRY(sys::read_file(path, kMaxStateBytes).context("read snapshot"));
    return decode(bytes, path);
}

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

Result<void> restore_vcpu(Vcpu& vcpu, const VcpuState& s, bool set_cpuid) {
    if (set_cpuid) TRY(vcpu.set_cpuid(s.cpuid));
    // A reset (the same vCPU, set_cpuid false) already runs at the snapshot's frequency.
    if (set_cpuid && s.tsc_khz != 0) {
        // Only when it differs: setting the frequency needs TSC scaling on the host.
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

Result<VmState> capture_vm(const Vm& vm) {
    VmState s;
    s.clock = TRY(vm.clock());
    s.pic_master = TRY(vm.irqchip(KVM_IRQCHIP_PIC_MASTER));
    s.pic_slave = TRY(vm.irqchip(KVM_IRQCHIP_PIC_SLAVE));
    s.ioapic = TRY(vm.irqchip(KVM_IRQCHIP_IOAPIC));
    s.pit = TRY(vm.pit());
    return s;
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
