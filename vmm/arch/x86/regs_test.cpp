#include "vmm/arch/x86/regs.h"

#include <gtest/gtest.h>

#include "vmm/arch/x86/layout.h"

namespace husk::x86 {
namespace {

TEST(Regs, GdtEntryRoundTrip) {
    uint64_t code64 = gdt_entry(0xa09b, 0, 0xfffff);
    EXPECT_EQ(code64, 0x00af9b000000ffffull);
    auto s = segment_from_gdt(code64, 0x10);
    EXPECT_EQ(s.l, 1);
    EXPECT_EQ(s.db, 0);
    EXPECT_EQ(s.g, 1);
    EXPECT_EQ(s.limit, 0xffffffffu);
    EXPECT_EQ(s.type, 0xb);
    EXPECT_EQ(s.present, 1);
    auto tss = segment_from_gdt(gdt_entry(0x008b, 0, 0x67), 0x20);
    EXPECT_EQ(tss.limit, 0x67u);
    EXPECT_EQ(tss.s, 0);
}

TEST(Regs, LongModeSregs) {
    auto s = boot_sregs(kvm_sregs{}, EntryMode::Linux64);
    EXPECT_EQ(s.cr3, kPml4);
    EXPECT_TRUE(s.cr0 & (1ull << 31));
    EXPECT_TRUE(s.efer & (1ull << 10));
    EXPECT_EQ(s.cs.l, 1);
}

TEST(Regs, PvhSregsFollowTheBootAbi) {
    auto s = boot_sregs(kvm_sregs{}, EntryMode::Pvh);
    EXPECT_EQ(s.cr0 & 1, 1u);           // protected mode
    EXPECT_FALSE(s.cr0 & (1ull << 31));  // paging off
    EXPECT_EQ(s.efer, 0u);
    EXPECT_EQ(s.cs.db, 1);  // 32-bit code
    EXPECT_EQ(s.cs.base, 0u);
    EXPECT_EQ(s.cs.limit, 0xffffffffu);
    EXPECT_EQ(s.tr.type, 0xb);
}

TEST(Regs, IdentityMapCoversFourGiB) {
    auto mem = GuestMemory::create(16 << 20).release_value();
    ASSERT_FALSE(write_boot_tables(mem, EntryMode::Linux64).is_error());
    EXPECT_EQ(mem.read_obj<uint64_t>(kPml4).value(), kPdpt | 3);
    EXPECT_EQ(mem.read_obj<uint64_t>(kPdpt + 3 * 8).value(), (kPd + 0x3000) | 3);
    // Last 2 MiB page of the fourth directory maps 4 GiB - 2 MiB.
    EXPECT_EQ(mem.read_obj<uint64_t>(kPd + 0x3000 + 511 * 8).value(), (0xffe00000ull) | 0x83);
}

}  // namespace
}  // namespace husk::x86
