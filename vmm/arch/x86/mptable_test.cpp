#include "vmm/arch/x86/mptable.h"

#include <gtest/gtest.h>

#include <cstring>

#include "vmm/arch/x86/layout.h"

namespace husk::x86 {
namespace {

uint8_t sum(const uint8_t* p, size_t n) {
    uint8_t s = 0;
    for (size_t i = 0; i < n; ++i) s = uint8_t(s + p[i]);
    return s;
}

TEST(MpTable, ChecksumsAndCounts) {
    for (uint32_t n : {1u, 2u, 8u, 64u}) {
        auto t = build_mptable(n, kEbdaStart);
        ASSERT_GE(t.size(), 16u + 44u);
        EXPECT_EQ(std::memcmp(t.data(), "_MP_", 4), 0);
        EXPECT_EQ(sum(t.data(), 16), 0) << "floating pointer checksum";
        uint32_t table;
        std::memcpy(&table, t.data() + 4, 4);
        EXPECT_EQ(table, kEbdaStart + 16);
        EXPECT_EQ(std::memcmp(t.data() + 16, "PCMP", 4), 0);
        uint16_t len, count;
        std::memcpy(&len, t.data() + 16 + 4, 2);
        std::memcpy(&count, t.data() + 16 + 34, 2);
        EXPECT_EQ(len, t.size() - 16);
        EXPECT_EQ(sum(t.data() + 16, len), 0) << "config table checksum";
        EXPECT_EQ(count, n + 1 + 1 + 24 + 2);
        // The first processor entry is the enabled BSP.
        EXPECT_EQ(t[16 + 44], 0);
        EXPECT_EQ(t[16 + 44 + 3], 3);
    }
}

TEST(MpTable, RefusesBadVcpuCounts) {
    auto mem = GuestMemory::create(16 << 20).release_value();
    EXPECT_TRUE(write_mptable(mem, 0).is_error());
    EXPECT_TRUE(write_mptable(mem, kMaxMpVcpus + 1).is_error());
    EXPECT_FALSE(write_mptable(mem, kMaxMpVcpus).is_error());
}

}  // namespace
}  // namespace husk::x86
