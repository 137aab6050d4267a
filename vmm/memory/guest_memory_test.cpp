#include "vmm/memory/guest_memory.h"

#include <gtest/gtest.h>

namespace husk {
namespace {

constexpr uint64_t MiB = 1ull << 20, GiB = 1ull << 30;

TEST(GuestMemory, SmallGuestIsOneLowRegion) {
    auto regions = GuestMemory::layout(256 * MiB);
    ASSERT_EQ(regions.size(), 1u);
    EXPECT_EQ(regions[0].guest_phys, 0u);
    EXPECT_EQ(regions[0].size, 256 * MiB);
}

TEST(GuestMemory, LargeGuestSkipsTheMmioHole) {
    auto regions = GuestMemory::layout(5 * GiB);
    ASSERT_EQ(regions.size(), 2u);
    EXPECT_EQ(regions[0].size, 3 * GiB);
    EXPECT_EQ(regions[1].guest_phys, 4 * GiB);
    EXPECT_EQ(regions[1].size, 2 * GiB);
    EXPECT_EQ(regions[1].file_offset, 3 * GiB);
}

TEST(GuestMemory, RejectsUnalignedSize) {
    auto m = GuestMemory::create(4096 + 1);
    ASSERT_TRUE(m.is_error());
    EXPECT_NE(m.error().message().find("multiple of 4 KiB"), std::string::npos);
}

TEST(GuestMemory, ReadWriteRoundTrip) {
    auto mem = GuestMemory::create(16 * MiB).release_value();
    ASSERT_FALSE(mem.write_obj<uint64_t>(0x1000, 0x1122334455667788ull).is_error());
    auto v = mem.read_obj<uint64_t>(0x1000);
    ASSERT_FALSE(v.is_error());
    EXPECT_EQ(v.value(), 0x1122334455667788ull);
}

TEST(GuestMemory, BoundsAreChecked) {
    auto mem = GuestMemory::create(16 * MiB).release_value();
    EXPECT_FALSE(mem.slice(16 * MiB - 8, 8).is_error());
    EXPECT_TRUE(mem.slice(16 * MiB - 8, 9).is_error());
    EXPECT_TRUE(mem.slice(16 * MiB, 1).is_error());
    // Wrap-around: gpa + len overflows 64 bits.
    EXPECT_TRUE(mem.slice(~0ull - 4, 16).is_error());
    EXPECT_TRUE(mem.slice(8, ~0ull).is_error());
    EXPECT_EQ(mem.slice(16 * MiB, 1).error().code(), EFAULT);
    EXPECT_FALSE(mem.slice(16 * MiB, 0).is_error());  // empty range at the end is fine
}

TEST(GuestMemory, AccessInTheMmioHoleFails) {
    // MAP_NORESERVE: a 4 GiB+ guest costs nothing until touched.
    auto mem = GuestMemory::create(3 * GiB + 64 * MiB).release_value();
    EXPECT_TRUE(mem.slice(3 * GiB + 4096, 8).is_error());
    EXPECT_FALSE(mem.slice(4 * GiB + 4096, 8).is_error());
    // A range crossing from low RAM into the hole is refused.
    EXPECT_TRUE(mem.slice(3 * GiB - 4, 8).is_error());
}

TEST(GuestMemory, IsMemfdBacked) {
    auto mem = GuestMemory::create(2 * MiB).release_value();
    EXPECT_GE(mem.fd(), 0);
}

}  // namespace
}  // namespace husk
