#include "vmm/arch/x86/cpuid.h"

#include <cstring>
#include <initializer_list>

namespace husk::x86 {
namespace {

constexpr uint32_t bit(unsigned n) {
    return 1u << n;
}

// CPUID.1:ECX / EDX bits (SDM Vol. 2A, CPUID, Table 3-10/3-11).
constexpr uint32_t kEcxTscDeadline = bit(24);
constexpr uint32_t kEcxDtes64 = bit(2), kEcxMonitor = bit(3), kEcxDsCpl = bit(4), kEcxVmx = bit(5), kEcxSmx = bit(6),
                   kEcxEist = bit(7), kEcxTm2 = bit(8), kEcxPdcm = bit(15), kEcxDca = bit(18), kEcxHypervisor = bit(31);
constexpr uint32_t kEdxDs = bit(21), kEdxAcpi = bit(22), kEdxHtt = bit(28), kEdxTm = bit(29), kEdxPbe = bit(31);
// CPUID.80000001h:ECX (AMD APM Vol. 3, E.4.2).
constexpr uint32_t kAmdEcxSvm = bit(2), kAmdEcxCmpLegacy = bit(1), kAmdEcxExtApicSpace = bit(3);
// CPUID.6:EAX bit 2: APIC timer always running (ARAT) is the one power leaf bit worth keeping.
constexpr uint32_t kLeaf6Arat = bit(2);

uint32_t apic_id_bits(uint32_t count) {
    uint32_t bits = 0;
    while ((1u << bits) < count) ++bits;
    return bits;
}

constexpr uint32_t bits(std::initializer_list<unsigned> list) {
    uint32_t v = 0;
    for (unsigned b : list) v |= 1u << b;
    return v;
}

// The baseline template's feature words (SDM Vol. 2A CPUID; AMD APM Vol. 3 E.4).
constexpr uint32_t kBaseline1Ecx = bits({0, 1, 9, 12, 13, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31});
constexpr uint32_t kBaseline7Ebx = bits({0, 3, 5, 7, 8, 9, 18, 19, 20, 23});
constexpr uint32_t kBaselineExtEcx = bits({0, 1, 5, 6, 8});
constexpr uint32_t kBaselineExtEdx =
    bits({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 20, 22, 23, 24, 25, 27, 29});
constexpr uint32_t kBaselineXcr0 = 0x7;         // x87, SSE, AVX
constexpr uint32_t kBaselineXsaveArea = 0x340;  // legacy area + header + AVX state

void apply_baseline(std::vector<kvm_cpuid_entry2>& entries) {
    std::erase_if(entries, [](const kvm_cpuid_entry2& e) {
        return (e.function == 0xd && e.index >= 3) || (e.function == 7 && e.index >= 1);
    });
    for (auto& e : entries) {
        if (e.function == 1) e.ecx &= kBaseline1Ecx;
        if (e.function == 7 && e.index == 0) {
            e.eax = 0;  // no further subleaves
            e.ebx &= kBaseline7Ebx;
            e.ecx = e.edx = 0;
        }
        if (e.function == 0xd && e.index == 0) {
            e.eax &= kBaselineXcr0;
            e.edx = 0;
            e.ebx = e.ecx = kBaselineXsaveArea;
        }
        if (e.function == 0xd && e.index == 1) {
            e.eax &= 1;  // XSAVEOPT only
            e.ebx = e.ecx = e.edx = 0;
        }
        if (e.function == 0x8000'0001) {
            e.ecx &= kBaselineExtEcx;
            e.edx &= kBaselineExtEdx;
        }
    }
}

}  // namespace

kvm_cpuid_entry2* find_leaf(std::vector<kvm_cpuid_entry2>& entries, uint32_t function, uint32_t index) {
    for (auto& e : entries)
        if (e.function == function && e.index == index) return &e;
    return nullptr;
}

std::string vendor_string(const std::vector<kvm_cpuid_entry2>& entries) {
    for (const auto& e : entries) {
        if (e.function != 0) continue;
        char s[13];
        std::memcpy(s, &e.ebx, 4);
        std::memcpy(s + 4, &e.edx, 4);
        std::memcpy(s + 8, &e.ecx, 4);
        s[12] = 0;
        return s;
    }
    return "";
}

CpuVendor cpu_vendor(const std::vector<kvm_cpuid_entry2>& entries) {
    std::string v = vendor_string(entries);
    if (v == "GenuineIntel") return CpuVendor::Intel;
    if (v == "AuthenticAMD" || v == "HygonGenuine") return CpuVendor::Amd;
    return CpuVendor::Other;
}

std::vector<kvm_cpuid_entry2> normalize_cpuid(std::vector<kvm_cpuid_entry2> entries, const CpuidOptions& o) {
    const CpuVendor vendor = cpu_vendor(entries);
    const uint32_t count = o.vcpu_count == 0 ? 1 : o.vcpu_count;
    const uint32_t id = o.vcpu_id;
    const uint32_t core_bits = apic_id_bits(count);

    for (auto& e : entries) {
        switch (e.function) {
            case 0x1:
                // EBX[31:24] initial APIC id, [23:16] logical processors per package, [15:8] CLFLUSH line / 8.
                e.ebx = (id << 24) | ((count & 0xff) << 16) | (8u << 8) | (e.ebx & 0xff);
                e.ecx &= ~(kEcxDtes64 | kEcxMonitor | kEcxDsCpl | kEcxVmx | kEcxSmx | kEcxEist | kEcxTm2 | kEcxPdcm |
                           kEcxDca);
                e.ecx |= kEcxHypervisor;
                if (o.tsc_deadline) e.ecx |= kEcxTscDeadline;
                e.edx &= ~(kEdxDs | kEdxAcpi | kEdxTm | kEdxPbe);
                if (count > 1)
                    e.edx |= kEdxHtt;
                else
                    e.edx &= ~kEdxHtt;
                break;
            case 0x4:
                // Deterministic cache parameters (Intel): EAX[31:26] cores per package - 1,
                // EAX[25:14] logical processors sharing this cache - 1 (one per core: no SMT).
                if (vendor == CpuVendor::Intel) {
                    e.eax &= 0x3fff;
                    if ((e.eax & 0x1f) != 0) e.eax |= ((count - 1) & 0x3f) << 26;
                }
                break;
            case 0x5:  // MONITOR/MWAIT: masked above, so its leaf is empty.
                e.eax = e.ebx = e.ecx = e.edx = 0;
                break;
            case 0x6:  // thermal and power management: only ARAT.
                e.eax &= kLeaf6Arat;
                e.ebx = e.ecx = e.edx = 0;
                break;
            case 0xa:  // architectural performance monitoring: not exposed.
                e.eax = e.ebx = e.ecx = e.edx = 0;
                break;
            case 0xb:
            case 0x1f:
                // Extended topology (Intel): level 0 = SMT (1 thread per core), level 1 = core.
                e.edx = id;  // x2APIC id
                if (e.index == 0) {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = (1u << 8) | 0;  // type SMT
                } else if (e.index == 1) {
                    e.eax = core_bits;
                    e.ebx = count;
                    e.ecx = (2u << 8) | 1;  // type core
                } else {
                    e.eax = e.ebx = 0;
                    e.ecx = e.index;  // type invalid ends the enumeration
                }
                break;
            case 0x4000'0000:
                // KVM signature; EAX = highest hypervisor leaf.
                e.eax = 0x4000'0001;
                std::memcpy(&e.ebx, "KVMK", 4);
                std::memcpy(&e.ecx, "VMKV", 4);
                std::memcpy(&e.edx, "M\0\0\0", 4);
                break;
            case 0x8000'0001:
                e.ecx &= ~(kAmdEcxSvm | kAmdEcxExtApicSpace);
                if (vendor == CpuVendor::Amd && count > 1)
                    e.ecx |= kAmdEcxCmpLegacy;
                else
                    e.ecx &= ~kAmdEcxCmpLegacy;
                break;
            case 0x8000'0008:
                // AMD: ECX[15:12] APIC id size, ECX[7:0] cores per package - 1.
                if (vendor == CpuVendor::Amd) e.ecx = (core_bits << 12) | ((count - 1) & 0xff);
                break;
            case 0x8000'001e:
                // AMD extended APIC id, one thread per compute unit, node 0.
                if (vendor == CpuVendor::Amd) {
                    e.eax = id;
                    e.ebx = id & 0xff;
                    e.ecx = 0;
                    e.edx = 0;
                }
                break;
            default:
                break;
        }
    }
    if (o.baseline) apply_baseline(entries);
    return entries;
}

}  // namespace husk::x86
