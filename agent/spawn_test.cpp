#include "agent/spawn.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/resource.h>

namespace husk::agent {
namespace {

TEST(MountOptions, FlagsAndData) {
    auto o = parse_mount_options({"nosuid", "nodev", "mode=755", "size=65536k", "ro"});
    EXPECT_EQ(o.flags, static_cast<unsigned long>(MS_NOSUID | MS_NODEV | MS_RDONLY));
    EXPECT_EQ(o.data, "mode=755,size=65536k");
    EXPECT_EQ(o.propagation, 0u);
}

TEST(MountOptions, LaterOptionsWin) {
    auto o = parse_mount_options({"ro", "rw"});
    EXPECT_EQ(o.flags & MS_RDONLY, 0u);
    EXPECT_NE(o.clear & MS_RDONLY, 0u);
    auto b = parse_mount_options({"rbind", "rprivate"});
    EXPECT_EQ(b.flags, static_cast<unsigned long>(MS_BIND | MS_REC));
    EXPECT_EQ(b.propagation, static_cast<unsigned long>(MS_PRIVATE | MS_REC));
}

TEST(Rlimits, OciNames) {
    EXPECT_EQ(rlimit_resource("RLIMIT_NOFILE"), RLIMIT_NOFILE);
    EXPECT_EQ(rlimit_resource("RLIMIT_BOGUS"), -1);
}

}  // namespace
}  // namespace husk::agent
