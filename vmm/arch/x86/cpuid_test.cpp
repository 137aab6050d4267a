#include "vmm/arch/x86/cpuid.h"

#include <gtest/gtest.h>

#include <cstring>

namespace husk::x86 {
namespace {

kvm_cpuid_entry2 leaf(uint32_t fn, uint32_t idx, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
    kvm_cpuid_entry2 e{};
    e.function = fn;
    e.index = idx;
    e.eax = a;
    e.ebx = b;
    e.ecx = c;
    e.edx = d;
    return e;
}

std::vector<kvm_cpuid_entry2> fake(const char* vendor) {
    uint32_t b, d, c;
    std::memcpy(&b, vendor, 4);
    std::memcpy(&d, vendor + 4, 4);
    std::memcpy(&c, vendor + 8, 4);
    return {
        leaf(0, 0, 0x1f, b, c, d),
        leaf(1, 0, 0x806f0, 0xff0000ff, 0xffffffff, 0xffffffff),
        leaf(4, 0, 0x121, 0, 0, 0),
        leaf(6, 0, 0xffff, 1, 1, 1),
        leaf(0xb, 0, 1, 2, 0x100, 7),
        leaf(0xb, 1, 4, 16, 0x201, 7),
        leaf(0x40000000, 0, 0x40000001, 0, 0, 0),
        leaf(0x80000001, 0, 0, 0, 0xffffffff, 0),
        leaf(0x80000008, 0, 0x3030, 0, 0xffff, 0),
        leaf(0x8000001e, 0, 5, 0x100, 0x3, 0),
    };
}

TEST(Cpuid, VendorDetection) {
    EXPECT_EQ(cpu_vendor(fake("GenuineIntel")), CpuVendor::Intel);
    EXPECT_EQ(cpu_vendor(fake("AuthenticAMD")), CpuVendor::Amd);
    EXPECT_EQ(cpu_vendor(fake("HygonGenuine")), CpuVendor::Amd);
    EXPECT_EQ(vendor_string(fake("GenuineIntel")), "GenuineIntel");
}

TEST(Cpuid, Leaf1TopologyAndMasks) {
    auto t = normalize_cpuid(fake("GenuineIntel"), {3, 4});
    auto* l1 = find_leaf(t, 1);
    ASSERT_NE(l1, nullptr);
    EXPECT_EQ(l1->ebx >> 24, 3u);           // APIC id
    EXPECT_EQ((l1->ebx >> 16) & 0xff, 4u);  // logical processors
    EXPECT_EQ((l1->ebx >> 8) & 0xff, 8u);   // CLFLUSH 64 bytes
    EXPECT_TRUE(l1->ecx & (1u << 31));       // hypervisor
    EXPECT_FALSE(l1->ecx & (1u << 5));       // no VMX
    EXPECT_FALSE(l1->ecx & (1u << 3));       // no MONITOR
    EXPECT_TRUE(l1->edx & (1u << 28));       // HTT with 4 vCPUs
}

TEST(Cpuid, TscDeadlineOnlyWhenKvmHasIt) {
    auto off = normalize_cpuid(fake("GenuineIntel"), {0, 1, false});
    auto on = normalize_cpuid(fake("GenuineIntel"), {0, 1, true});
    auto raw = fake("GenuineIntel");
    find_leaf(raw, 1)->ecx &= ~(1u << 24);
    EXPECT_FALSE(find_leaf(raw = normalize_cpuid(raw, {0, 1, false}), 1)->ecx & (1u << 24));
    EXPECT_TRUE(find_leaf(on, 1)->ecx & (1u << 24));
    (void)off;
}

TEST(Cpuid, SingleVcpuHasNoHtt) {
    auto t = normalize_cpuid(fake("GenuineIntel"), {0, 1});
    EXPECT_FALSE(find_leaf(t, 1)->edx & (1u << 28));
}

TEST(Cpuid, IntelExtendedTopology) {
    auto t = normalize_cpuid(fake("GenuineIntel"), {2, 4});
    auto* smt = find_leaf(t, 0xb, 0);
    auto* core = find_leaf(t, 0xb, 1);
    EXPECT_EQ(smt->ebx, 1u);
    EXPECT_EQ(smt->edx, 2u);
    EXPECT_EQ(core->eax, 2u);  // log2(4) bits of APIC id
    EXPECT_EQ(core->ebx, 4u);
    EXPECT_EQ((core->ecx >> 8) & 0xff, 2u);
    EXPECT_EQ(find_leaf(t, 4)->eax >> 26, 3u);
}

TEST(Cpuid, AmdTopologyAndNoSvm) {
    auto t = normalize_cpuid(fake("AuthenticAMD"), {1, 2});
    EXPECT_FALSE(find_leaf(t, 0x80000001)->ecx & (1u << 2));
    EXPECT_EQ(find_leaf(t, 0x80000008)->ecx & 0xff, 1u);
    EXPECT_EQ(find_leaf(t, 0x8000001e)->eax, 1u);
}

TEST(Cpuid, KvmSignatureAndMaskedLeaves) {
    auto t = normalize_cpuid(fake("AuthenticAMD"), {0, 1});
    auto* h = find_leaf(t, 0x40000000);
    char sig[13] = {};
    std::memcpy(sig, &h->ebx, 4);
    std::memcpy(sig + 4, &h->ecx, 4);
    std::memcpy(sig + 8, &h->edx, 4);
    EXPECT_STREQ(sig, "KVMKVMKVM");
    EXPECT_EQ(find_leaf(t, 6)->eax, 4u);  // only ARAT
}

}  // namespace
}  // namespace husk::x86
