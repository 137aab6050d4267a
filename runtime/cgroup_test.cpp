#include "runtime/cgroup.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "vmm/base/system.h"

namespace husk::runtime {
namespace {

namespace fs = std::filesystem;

TEST(Cgroup, PathsAsTheEnginesWriteThem) {
    EXPECT_EQ(cgroup_for("/docker/abc", false).value(), "/docker/abc");
    EXPECT_EQ(cgroup_for("", false).value(), "");
    EXPECT_EQ(cgroup_for("system.slice:docker:abc", true).value(), "/system.slice/docker-abc.scope");
    EXPECT_EQ(cgroup_for("user-1000.slice:libpod:x", true).value(), "/user.slice/user-1000.slice/libpod-x.scope");
    EXPECT_EQ(cgroup_for(":cri-containerd:x", true).value(), "/system.slice/cri-containerd-x.scope");
    EXPECT_EQ(cgroup_for("-.slice::x", true).value(), "/x.scope");
    for (const char* bad : {"docker:abc", "system:docker:abc", "system.slice:docker:a/b"}) {
        auto r = cgroup_for(bad, true);
        ASSERT_FALSE(r) << bad;
        EXPECT_NE(r.error().message().find("SLICE:PREFIX:NAME"), std::string::npos);
    }
    // Cleaned as a path: ".." stops at the hierarchy's root.
    EXPECT_EQ(cgroup_for("/docker/../../etc", false).value(), "/etc");
}

class FakeHierarchy : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/husk-cgroup-test.XXXXXX";
        m_root = ::mkdtemp(tmpl);
    }
    void TearDown() override { fs::remove_all(m_root); }
    std::string m_root;
};

// v2: one hierarchy; the leaf and the levels made for it are listed for removal.
TEST_F(FakeHierarchy, UnifiedMakesTheLeafAndSetsCpuMax) {
    std::ofstream(m_root + "/cgroup.controllers") << "cpu memory pids\n";
    fs::create_directories(m_root + "/docker");
    auto p = make_cgroup("/docker/abc", true, m_root);
    ASSERT_TRUE(p) << p.error().message();
    EXPECT_EQ(p.value().dirs, std::vector<std::string>{m_root + "/docker/abc"});
    EXPECT_EQ(p.value().procs, std::vector<std::string>{m_root + "/docker/abc/cgroup.procs"});
    std::ofstream(m_root + "/docker/abc/cpu.max") << "max 100000\n";
    ASSERT_TRUE(set_cpu_limit("/docker/abc", 50000, 100000, m_root));
    EXPECT_EQ(sys::read_file(m_root + "/docker/abc/cpu.max", 100).value().substr(0, 12), "50000 100000");
    EXPECT_TRUE(cgroup_exists("/docker/abc", m_root));
    fs::remove(m_root + "/docker/abc/cpu.max");
    remove_cgroup("/docker/abc", m_root);
    EXPECT_FALSE(cgroup_exists("/docker/abc", m_root));
    EXPECT_TRUE(fs::exists(m_root + "/docker"));
}

// v1: each mounted hierarchy of the four husk joins.
TEST_F(FakeHierarchy, V1JoinsEachMountedHierarchy) {
    for (const char* c : {"cpu", "memory"}) {
        fs::create_directories(m_root + "/" + c);
        std::ofstream(m_root + "/" + c + "/cgroup.procs");
    }
    auto p = make_cgroup("/default/x", false, m_root);
    ASSERT_TRUE(p) << p.error().message();
    EXPECT_EQ(p.value().procs, (std::vector<std::string>{m_root + "/cpu/default/x/cgroup.procs",
                                                         m_root + "/memory/default/x/cgroup.procs"}));
    EXPECT_EQ(p.value().dirs.size(), 4u);
    std::ofstream(m_root + "/cpu/default/x/cpu.cfs_period_us");
    std::ofstream(m_root + "/cpu/default/x/cpu.cfs_quota_us");
    ASSERT_TRUE(set_cpu_limit("/default/x", 150000, 100000, m_root));
    EXPECT_EQ(sys::read_file(m_root + "/cpu/default/x/cpu.cfs_quota_us", 100).value(), "150000");
}

}  // namespace
}  // namespace husk::runtime
