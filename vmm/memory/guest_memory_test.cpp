#include "vmm/memory/guest_memory.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <vector>

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

TEST(GuestMemory, DiscardPunchesTheMemfd) {
    auto mem = GuestMemory::create(4 * MiB).release_value();
    for (uint64_t p = 0; p < 16; ++p) ASSERT_TRUE(mem.write_obj<uint64_t>(MiB + p * 4096, p + 1));
    ASSERT_TRUE(mem.discard(MiB + 4096, 8 * 4096));
    EXPECT_EQ(mem.read_obj<uint64_t>(MiB).value(), 1u);
    EXPECT_EQ(mem.read_obj<uint64_t>(MiB + 4096).value(), 0u);
    EXPECT_EQ(mem.read_obj<uint64_t>(MiB + 9 * 4096).value(), 10u);
    EXPECT_TRUE(mem.discard(MiB + 1, 4096).is_error());         // not whole pages
    EXPECT_TRUE(mem.discard(4 * MiB - 4096, 8192).is_error());  // beyond RAM
    EXPECT_TRUE(mem.revert_pages(0, 1).is_error());             // no snapshot behind it
}

// Snapshot-backed memory: a discarded page reads as zeros, not as the
// snapshot; reverting brings the snapshot's data back, short runs and long.
TEST(GuestMemory, DiscardOnASnapshotReadsZerosAndRevertsToTheFile) {
    char path[] = "/tmp/husk-memory-test-XXXXXX";
    int fd = ::mkstemp(path);
    ASSERT_GE(fd, 0);
    constexpr uint64_t kSize = 32 * MiB, kPages = kSize / 4096;
    ASSERT_EQ(::ftruncate(fd, off_t(kSize)), 0);
    for (uint64_t p = 0; p < kPages; ++p) {
        uint64_t v = p + 7;
        ASSERT_EQ(::pwrite(fd, &v, 8, off_t(p * 4096)), 8);
    }
    ::close(fd);
    auto mem = GuestMemory::from_file(path, kSize).release_value();
    ::unlink(path);
    mem.track_vmm_writes();
    ASSERT_TRUE(mem.discard(8 * 4096, 4 * 4096));
    ASSERT_TRUE(mem.discard(MiB, 5000 * 4096));  // more than a short run
    EXPECT_EQ(mem.read_obj<uint64_t>(8 * 4096).value(), 0u);
    EXPECT_EQ(mem.read_obj<uint64_t>(12 * 4096).value(), 12u + 7);
    EXPECT_EQ(mem.read_obj<uint64_t>(MiB + 4999 * 4096).value(), 0u);
    // The discards count as the VMM's writes: a reset reverts them.
    std::vector<uint64_t> dirty((kPages + 63) / 64);
    mem.take_vmm_dirty(dirty);
    EXPECT_EQ(dirty[0], 0xfull << 8);
    ASSERT_TRUE(mem.revert_pages(8, 4));
    ASSERT_TRUE(mem.revert_pages(256, 5000));
    for (uint64_t p : {8ull, 11ull, 256ull, 4000ull, 5255ull})
        EXPECT_EQ(mem.read_obj<uint64_t>(p * 4096).value(), p + 7) << "page " << p;
    // A reverted page is copy-on-write again: writing it leaves the file alone.
    ASSERT_TRUE(mem.write_obj<uint64_t>(8 * 4096, 1));
    ASSERT_TRUE(mem.revert_pages(8, 1));
    EXPECT_EQ(mem.read_obj<uint64_t>(8 * 4096).value(), 15u);
}

// A device that writes guest memory (or has the host kernel write it) can
// only get the span from writable_slice, which records the pages for reset.
TEST(GuestMemory, OnlyWritableSpansAreRecordedAsTheVmmsWrites) {
    auto mem = GuestMemory::create(4 * MiB).release_value();
    mem.track_vmm_writes();
    ASSERT_TRUE(mem.slice(2 * 4096, 4096));
    ASSERT_TRUE(mem.writable_slice(5 * 4096 + 100, 5000));  // pages 5 and 6
    ASSERT_TRUE(mem.write_obj<uint64_t>(9 * 4096, 1));
    std::vector<uint64_t> dirty(4 * MiB / 4096 / 64);
    mem.take_vmm_dirty(dirty);
    EXPECT_EQ(dirty[0], (1ull << 5) | (1ull << 6) | (1ull << 9));
    EXPECT_FALSE(mem.writable_slice(4 * MiB - 10, 20));
}

}  // namespace
}  // namespace husk
