#include "vmm/snapshot/snapshot.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "vmm/arch/x86/cpuid.h"

namespace husk::snapshot {
namespace {

kvm_cpuid_entry2 leaf(uint32_t function, uint32_t index, uint32_t eax, uint32_t ebx, uint32_t ecx, uint32_t edx) {
    kvm_cpuid_entry2 e{};
    e.function = function;
    e.index = index;
    e.eax = eax;
    e.ebx = ebx;
    e.ecx = ecx;
    e.edx = edx;
    return e;
}

std::vector<kvm_cpuid_entry2> cpu(const char* vendor, uint32_t leaf1_ecx, uint32_t leaf7_ebx) {
    kvm_cpuid_entry2 zero = leaf(0, 0, 0xd, 0, 0, 0);
    std::memcpy(&zero.ebx, vendor, 4);
    std::memcpy(&zero.edx, vendor + 4, 4);
    std::memcpy(&zero.ecx, vendor + 8, 4);
    return {zero, leaf(1, 0, 0, 0, leaf1_ecx, 0), leaf(7, 0, 0, leaf7_ebx, 0, 0)};
}

Snapshot sample() {
    Snapshot s;
    s.machine = {32 << 20, 2, "GenuineIntel", "host", R"({"vcpus":2})"};
    for (int i = 0; i < 2; ++i) {
        VcpuState v;
        v.regs.rip = 0x1000 + uint64_t(i);
        v.sregs.cr3 = 0x9000;
        v.msrs = {{0x10, 0, 12345}, {0xc0000080, 0, 0x500}};
        v.cpuid = cpu("GenuineIntel", 1, 2);
        v.tsc_khz = 2000000;
        s.vcpus.push_back(v);
    }
    s.vm.clock.clock = 42;
    s.vm.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
    s.vm.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    s.vm.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
    s.serial = "uart";
    s.devices = {{"drive0", 2, "dev0"}, {"vsock", 19, "dev1"}};
    return s;
}

TEST(SnapshotFormat, RoundTrips) {
    auto bytes = encode(sample());
    auto back = decode(bytes, "test");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back.value().machine.memory_bytes, 32u << 20);
    EXPECT_EQ(back.value().machine.config, R"({"vcpus":2})");
    ASSERT_EQ(back.value().vcpus.size(), 2u);
    EXPECT_EQ(back.value().vcpus[1].regs.rip, 0x1001u);
    EXPECT_EQ(back.value().vcpus[0].msrs[1].data, 0x500u);
    EXPECT_EQ(back.value().vcpus[0].cpuid.size(), 3u);
    EXPECT_EQ(back.value().vm.clock.clock, 42u);
    ASSERT_EQ(back.value().devices.size(), 2u);
    EXPECT_EQ(back.value().devices[1].id, "vsock");
    EXPECT_EQ(back.value().devices[1].type, 19u);
    EXPECT_EQ(back.value().devices[1].state, "dev1");
}

TEST(SnapshotFormat, EveryTruncationIsRefused) {
    auto bytes = encode(sample());
    for (size_t n = 0; n < bytes.size(); n += 7) EXPECT_FALSE(decode(bytes.substr(0, n), "t")) << n;
}

// Any flipped bit is caught: by the magic, the version, the length or the checksum.
TEST(SnapshotFormat, RandomCorruptionIsRefused) {
    auto bytes = encode(sample());
    std::mt19937 rng(7);
    for (int i = 0; i < 2000; ++i) {
        std::string bad = bytes;
        bad[rng() % bad.size()] ^= char(1u << (rng() % 8));
        EXPECT_FALSE(decode(bad, "t"));
    }
}

// A body whose checksum matches but whose fields lie (a hostile file, not a damaged one).
TEST(SnapshotFormat, LyingCountsAreRefused) {
    Snapshot s = sample();
    s.machine.vcpus = 3;  // two records for three vCPUs
    auto r = decode(encode(s), "t");
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("2 vCPU records for a 3-vCPU machine"), std::string::npos);
    s = sample();
    s.machine.memory_bytes = 12345;
    EXPECT_FALSE(decode(encode(s), "t"));
}

TEST(SnapshotCpu, SameFeaturesPass) {
    Machine m{0, 1, "GenuineIntel", "host", ""};
    EXPECT_TRUE(check_cpu(m, cpu("GenuineIntel", 0x3, 0x5), cpu("GenuineIntel", 0x7, 0x5)));
}

TEST(SnapshotCpu, MissingFeatureIsNamed) {
    Machine m{0, 1, "GenuineIntel", "host", ""};
    auto r = check_cpu(m, cpu("GenuineIntel", 0x3, 0x25), cpu("GenuineIntel", 0x3, 0x5));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("7.0.EBX bit 5"), std::string::npos) << r.error().message();
}

TEST(SnapshotCpu, OtherVendorIsRefused) {
    Machine m{0, 1, "AuthenticAMD", "host", ""};
    auto r = check_cpu(m, cpu("AuthenticAMD", 1, 1), cpu("GenuineIntel", 1, 1));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("AuthenticAMD"), std::string::npos);
}

TEST(SnapshotCpu, BaselineTemplateDropsNewerFeatures) {
    // AVX-512F (7.0.EBX bit 16) and AMX leaves are gone; AVX2 (bit 5) stays.
    auto host = cpu("GenuineIntel", 0xffffffff, (1u << 16) | (1u << 5));
    host.push_back(leaf(0xd, 0, 0x602e7, 0, 0x2b00, 0));
    host.push_back(leaf(0xd, 17, 0x40, 0xac0, 0, 0));
    auto base = x86::normalize_cpuid(host, {0, 1, false, true});
    auto* seven = x86::find_leaf(base, 7, 0);
    ASSERT_NE(seven, nullptr);
    EXPECT_EQ(seven->ebx, 1u << 5);
    auto* xsave = x86::find_leaf(base, 0xd, 0);
    ASSERT_NE(xsave, nullptr);
    EXPECT_EQ(xsave->eax, 0x7u);
    EXPECT_EQ(x86::find_leaf(base, 0xd, 17), nullptr);
}

TEST(SnapshotDevices, EachDeviceGetsTheStateOfItsId) {
    std::vector<DeviceState> saved = {{"root", 2, "r"}, {"data", 2, "d"}, {"vsock", 19, "v"}};
    auto matched = match_devices(saved, {{"root", 2}, {"data", 2}, {"vsock", 19}});
    ASSERT_TRUE(matched) << matched.error().message();
    EXPECT_EQ(matched.value()[1]->state, "d");
}

TEST(SnapshotDevices, SwappedMissingExtraAndRetypedDevicesAreRefusedByName) {
    std::vector<DeviceState> saved = {{"root", 2, "r"}, {"data", 2, "d"}, {"vsock", 19, "v"}};
    auto refused = [&](std::vector<std::pair<std::string, uint32_t>> present) {
        auto m = match_devices(saved, present);
        EXPECT_FALSE(m) << "accepted";
        return m ? std::string() : m.error().message();
    };
    EXPECT_EQ(refused({{"data", 2}, {"root", 2}, {"vsock", 19}}),
              "device `data` is virtio device 0 here but 1 in the snapshot (give the devices in the snapshot's order)");
    EXPECT_EQ(refused({{"root", 2}, {"other", 2}, {"vsock", 19}}), "the snapshot has no device `other`");
    EXPECT_EQ(refused({{"root", 2}, {"data", 2}}), "the snapshot's device `vsock` is missing from this VM");
    EXPECT_EQ(refused({{"root", 2}, {"data", 4}, {"vsock", 19}}),
              "device `data` is of virtio type 4 here but 2 in the snapshot");
}

}  // namespace
}  // namespace husk::snapshot

namespace husk::snapshot {
namespace {

TEST(SnapshotReset, AnotherSnapshotOfTheSameMachineIsTakenInPlace) {
    Snapshot current = sample(), other = sample();
    other.vcpus[0].regs.rip = 0x2000;  // another moment of the same machine
    std::vector<std::vector<kvm_cpuid_entry2>> cpuid{current.vcpus[0].cpuid, current.vcpus[1].cpuid};
    EXPECT_TRUE(check_same_machine(current, other, cpuid, "/s2"));
}

TEST(SnapshotReset, AnotherMachinesSnapshotIsRefusedByName) {
    Snapshot current = sample();
    std::vector<std::vector<kvm_cpuid_entry2>> cpuid{current.vcpus[0].cpuid, current.vcpus[1].cpuid};
    auto refused = [&](Snapshot other) {
        auto r = check_same_machine(current, other, cpuid, "/s2");
        return r.is_error() && r.error().message().find("/s2") != std::string::npos;
    };
    Snapshot bigger = sample();
    bigger.machine.memory_bytes *= 2;
    EXPECT_TRUE(refused(bigger));
    Snapshot other_config = sample();
    other_config.machine.config = R"({"vcpus":2,"drives":1})";
    EXPECT_TRUE(refused(other_config));
    // The vCPUs ran with their CPUID: a snapshot with another cannot be taken in place.
    Snapshot other_cpuid = sample();
    other_cpuid.vcpus[1].cpuid = cpu("GenuineIntel", 3, 2);
    EXPECT_TRUE(refused(other_cpuid));
    Snapshot other_tsc = sample();
    other_tsc.vcpus[0].tsc_khz += 1000;
    EXPECT_TRUE(refused(other_tsc));
}

}  // namespace
}  // namespace husk::snapshot
