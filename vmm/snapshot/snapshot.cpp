#include "vmm/snapshot/snapshot.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstring>
#include <ctime>

#include "vmm/base/system.h"
#include "vmm/base/wire.h"

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
            return Error::from_string(
                fmt::format("device `{}` is virtio device {} here but {} in the snapshot (give the "
                            "devices in the snapshot's order)",
                            id, i, at),
                EINVAL);
        if (saved[i].type != type)
            return Error::from_string(
                fmt::format("device `{}` is of virtio type {} here but {} in the snapshot", id, type, saved[i].type),
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

}  // namespace husk::snapshot
