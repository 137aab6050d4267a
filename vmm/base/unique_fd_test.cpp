#include "vmm/base/unique_fd.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include "vmm/base/mapped_region.h"
#include "vmm/base/system.h"

namespace husk {
namespace {

bool fd_is_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

TEST(UniqueFd, ClosesOnDestruction) {
    int raw;
    {
        auto fd = sys::open("/dev/null", O_RDONLY);
        ASSERT_FALSE(fd.is_error());
        raw = fd.value().get();
        EXPECT_TRUE(fd_is_open(raw));
    }
    EXPECT_FALSE(fd_is_open(raw));
}

TEST(UniqueFd, MoveEmptiesSource) {
    auto a = sys::open("/dev/null", O_RDONLY).release_value();
    int raw = a.get();
    UniqueFd b = std::move(a);
    EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): checking the moved-from state is the test
    EXPECT_EQ(b.get(), raw);
    UniqueFd c;
    c = std::move(b);
    EXPECT_FALSE(b.valid());  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(c.get(), raw);
    EXPECT_TRUE(fd_is_open(raw));
}

TEST(UniqueFd, ReleaseGivesUpOwnership) {
    auto a = sys::open("/dev/null", O_RDONLY).release_value();
    int raw = a.release();
    EXPECT_FALSE(a.valid());
    EXPECT_TRUE(fd_is_open(raw));
    ::close(raw);
}

TEST(UniqueFd, OpenIsCloexec) {
    auto a = sys::open("/dev/null", O_RDONLY).release_value();
    EXPECT_TRUE(::fcntl(a.get(), F_GETFD) & FD_CLOEXEC);
}

TEST(MappedRegion, MapsAndMoves) {
    auto r = MappedRegion::map(4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    ASSERT_FALSE(r.is_error());
    MappedRegion a = r.release_value();
    a.data()[0] = 0x5a;
    MappedRegion b = std::move(a);
    EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(b.size(), 4096u);
    EXPECT_EQ(b.data()[0], 0x5a);
}

TEST(MappedRegion, FailureCarriesErrno) {
    auto r = MappedRegion::map(4096, PROT_READ, MAP_SHARED, /*fd=*/-1);
    ASSERT_TRUE(r.is_error());
    EXPECT_EQ(r.error().code(), EBADF);
}

TEST(System, ReadFileRefusesDirectories) {
    auto r = sys::read_file("/");
    ASSERT_TRUE(r.is_error());
    EXPECT_EQ(r.error().code(), EISDIR);
}

}  // namespace
}  // namespace husk
