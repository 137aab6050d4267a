#include "vmm/arch/x86/mptable.h"

#include <cstring>

#include "vmm/arch/x86/layout.h"

namespace husk::x86 {
namespace {

// MP spec 1.4, §4.1: floating pointer structure (16 bytes).
struct [[gnu::packed]] MpFloating {
    char signature[4];  // "_MP_"
    uint32_t config_table;
    uint8_t length;  // in 16-byte units
    uint8_t spec_rev;
    uint8_t checksum;
    uint8_t feature[5];
};

// §4.2: configuration table header.
struct [[gnu::packed]] MpConfigHeader {
    char signature[4];  // "PCMP"
    uint16_t length;
    uint8_t spec_rev;
    uint8_t checksum;
    char oem_id[8];
    char product_id[12];
    uint32_t oem_table;
    uint16_t oem_table_size;
    uint16_t entry_count;
    uint32_t lapic_addr;
    uint16_t ext_length;
    uint8_t ext_checksum;
    uint8_t reserved;
};

struct [[gnu::packed]] MpProcessor {  // §4.3.1, type 0
    uint8_t type, apic_id, apic_version, cpu_flags;
    uint32_t signature, feature_flags;
    uint32_t reserved[2];
};
struct [[gnu::packed]] MpBus {  // §4.3.2, type 1
    uint8_t type, bus_id;
    char bus_type[6];
};
struct [[gnu::packed]] MpIoapic {  // §4.3.3, type 2
    uint8_t type, apic_id, apic_version, flags;
    uint32_t addr;
};
struct [[gnu::packed]] MpInterrupt {  // §4.3.4 (type 3) and §4.3.5 (type 4)
    uint8_t type, irq_type;
    uint16_t irq_flags;
    uint8_t src_bus, src_irq, dst_apic, dst_pin;
};

static_assert(sizeof(MpFloating) == 16 && sizeof(MpConfigHeader) == 44 && sizeof(MpProcessor) == 20 &&
              sizeof(MpBus) == 8 && sizeof(MpIoapic) == 8 && sizeof(MpInterrupt) == 8);

uint8_t checksum(const uint8_t* p, size_t n) {
    uint8_t sum = 0;
    for (size_t i = 0; i < n; ++i) sum = uint8_t(sum + p[i]);
    return uint8_t(-sum);
}

template <typename T>
void append(std::vector<uint8_t>& out, const T& v) {
    auto p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof(T));
}

}  // namespace

std::vector<uint8_t> build_mptable(uint32_t vcpu_count, uint64_t at) {
    const uint8_t ioapic_id = uint8_t(vcpu_count);
    std::vector<uint8_t> body;
    uint16_t entries = 0;

    for (uint32_t i = 0; i < vcpu_count; ++i) {
        MpProcessor p{};
        p.type = 0;
        p.apic_id = uint8_t(i);
        p.apic_version = 0x14;                    // integrated xAPIC
        p.cpu_flags = 1 | (i == 0 ? 2 : 0);       // enabled, bootstrap processor
        p.signature = 0x600;                      // family 6
        p.feature_flags = (1u << 0) | (1u << 9);  // FPU, APIC
        append(body, p);
        ++entries;
    }
    MpBus bus{};
    bus.type = 1;
    bus.bus_id = 0;
    std::memcpy(bus.bus_type, "ISA   ", 6);
    append(body, bus);
    ++entries;
    MpIoapic io{};
    io.type = 2;
    io.apic_id = ioapic_id;
    io.apic_version = 0x11;
    io.flags = 1;  // enabled
    io.addr = uint32_t(kIoapicAddr);
    append(body, io);
    ++entries;
    // ISA IRQs 0-15 routed 1:1 to IOAPIC pins; KVM's IOAPIC has 24 pins, the
    // rest are for virtio-mmio devices (declared on the command line).
    for (uint8_t irq = 0; irq < 24; ++irq) {
        MpInterrupt it{};
        it.type = 3;
        it.irq_type = 0;   // INT
        it.irq_flags = 0;  // conforms to bus
        it.src_bus = 0;
        it.src_irq = irq;
        it.dst_apic = ioapic_id;
        it.dst_pin = irq;
        append(body, it);
        ++entries;
    }
    MpInterrupt extint{};
    extint.type = 4;
    extint.irq_type = 3;  // ExtINT
    extint.dst_apic = 0xff;
    extint.dst_pin = 0;  // LINT0
    append(body, extint);
    MpInterrupt nmi{};
    nmi.type = 4;
    nmi.irq_type = 1;  // NMI
    nmi.dst_apic = 0xff;
    nmi.dst_pin = 1;  // LINT1
    append(body, nmi);
    entries += 2;

    MpConfigHeader hdr{};
    std::memcpy(hdr.signature, "PCMP", 4);
    hdr.length = uint16_t(sizeof hdr + body.size());
    hdr.spec_rev = 4;
    std::memcpy(hdr.oem_id, "HUSK    ", 8);
    std::memcpy(hdr.product_id, "MICROVM     ", 12);
    hdr.entry_count = entries;
    hdr.lapic_addr = uint32_t(kLapicAddr);

    MpFloating mpf{};
    std::memcpy(mpf.signature, "_MP_", 4);
    mpf.config_table = uint32_t(at + sizeof mpf);
    mpf.length = 1;
    mpf.spec_rev = 4;
    mpf.checksum = checksum(reinterpret_cast<const uint8_t*>(&mpf), sizeof mpf);

    std::vector<uint8_t> out;
    append(out, mpf);
    size_t hdr_at = out.size();
    append(out, hdr);
    out.insert(out.end(), body.begin(), body.end());
    out[hdr_at + offsetof(MpConfigHeader, checksum)] = checksum(out.data() + hdr_at, out.size() - hdr_at);
    return out;
}

Result<void> write_mptable(const GuestMemory& mem, uint32_t vcpu_count) {
    if (vcpu_count == 0 || vcpu_count > kMaxMpVcpus)
        return Error::from_string("vcpus must be between 1 and " + std::to_string(kMaxMpVcpus));
    auto bytes = build_mptable(vcpu_count, kEbdaStart);
    if (kEbdaStart + bytes.size() > kHighMemory) return Error::from_string("MP table too large");
    return mem.write(kEbdaStart, bytes).context("write MP table");
}

}  // namespace husk::x86
