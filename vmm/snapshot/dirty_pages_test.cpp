#include "vmm/snapshot/dirty_pages.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "vmm/memory/guest_memory.h"

namespace husk::snapshot {
namespace {

constexpr uint64_t kSize = 4 << 20, kPages = kSize / GuestMemory::kPageSize;
constexpr uint64_t kWritten[] = {0, 1, 63, 64, 65, 500, kPages - 1};

// Guest RAM from a memory file whose page p starts with p + 7.
GuestMemory snapshot_memory() {
    char path[] = "/tmp/husk-dirty-test-XXXXXX";
    int fd = ::mkstemp(path);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, off_t(kSize)), 0);
    for (uint64_t p = 0; p < kPages; ++p) {
        uint64_t v = p + 7;
        EXPECT_EQ(::pwrite(fd, &v, 8, off_t(p * GuestMemory::kPageSize)), 8);
    }
    ::close(fd);
    auto mem = GuestMemory::from_file(path, kSize).release_value();
    ::unlink(path);
    mem.track_vmm_writes();
    return mem;
}

TEST(DirtyPages, RevertsExactlyTheMarkedPagesRunByRun) {
    auto mem = snapshot_memory();
    // Runs at a word's start, across a word boundary and at the very end.
    for (uint64_t p : kWritten) ASSERT_TRUE(mem.write_obj<uint64_t>(p * GuestMemory::kPageSize, 1000 + p));
    auto bitmap = empty_page_bitmap(mem);
    ASSERT_EQ(bitmap.size(), (kPages + 63) / 64);
    mem.take_vmm_dirty(bitmap);
    // A write nobody recorded (as if the dirty log missed it) stays: only marked pages go back.
    *reinterpret_cast<uint64_t*>(mem.host_base() + 300 * GuestMemory::kPageSize) = 42;

    auto reverted = revert_dirty(mem, bitmap);
    ASSERT_FALSE(reverted.is_error()) << reverted.error().message();
    EXPECT_EQ(reverted.value(), 7u);
    for (uint64_t p : kWritten)
        EXPECT_EQ(mem.read_obj<uint64_t>(p * GuestMemory::kPageSize).value(), p + 7) << "page " << p;
    EXPECT_EQ(mem.read_obj<uint64_t>(300 * GuestMemory::kPageSize).value(), 42u);
}

TEST(DirtyPages, AnEmptyBitmapRevertsNothing) {
    auto mem = snapshot_memory();
    ASSERT_TRUE(mem.write_obj<uint64_t>(0, 1));
    auto reverted = revert_dirty(mem, empty_page_bitmap(mem));
    ASSERT_FALSE(reverted.is_error());
    EXPECT_EQ(reverted.value(), 0u);
    EXPECT_EQ(mem.read_obj<uint64_t>(0).value(), 1u);
}

}  // namespace
}  // namespace husk::snapshot
