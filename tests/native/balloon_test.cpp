// Native KVM tier: virtio-balloon with the `balloon` tiny guest
// (tests/guests/balloon.c), a polled driver driven over the serial console,
// and husk-vmm's control socket. Host memory is read from husk-vmm's own
// accounting (`stats`: RssShmem for a memfd, RssAnon+RssFile for a snapshot).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "tests/lib/console_guest.h"

namespace husk::test {
namespace {

constexpr int64_t kPages = 8192;  // 32 MiB
constexpr int64_t kKibPerPage = 4;
// Pages read back after an inflate: each first read of a page is a fault (on
// this PVM host ~2.7 ms: reading all 8192 would take 20 s).
constexpr int64_t kChecked = 256;

class BalloonTest : public ConsoleGuestTest {
protected:
    std::unique_ptr<RunningProcess> boot(const std::string& api, std::vector<std::string> extra = {}) {
        std::vector<std::string> args = {"--kernel", guest("balloon"), "--memory", "128", "--no-rng"};
        args.insert(args.end(), extra.begin(), extra.end());
        auto p = start(args, api);
        EXPECT_TRUE(p->wait_for_stdout("ready\n", 30)) << p->seen() << log();
        EXPECT_NE(p->seen().find("balloon found"), std::string::npos) << p->seen();
        return p;
    }
    int64_t guest_ram_kib(const std::string& socket, const char* kind) {
        return api(socket, {{"cmd", "stats"}}).value(kind, int64_t(-1));
    }
};

TEST_F(BalloonTest, InflatedPagesLeaveTheHostAndDeflatedOnesComeBackEmpty) {
    std::string sock = dir + "/b.sock";
    auto p = boot(sock);
    const std::string n = std::to_string(kPages);
    EXPECT_EQ(ask(*p, "touch " + n), "touched " + n);
    int64_t touched = guest_ram_kib(sock, "rss_shmem_kib");
    EXPECT_EQ(ask(*p, "inflate " + n), "inflated " + n) << log();
    int64_t inflated = guest_ram_kib(sock, "rss_shmem_kib");
    // Every page handed over left husk-vmm's resident memory. The slack: a
    // few ring pages come and go, and a 6.1 kernel syncs each thread's RSS
    // counters only every 64 page faults (SPLIT_RSS_COUNTING), so a reading
    // can lag by up to 64 pages per thread that touched guest RAM.
    EXPECT_GE(touched - inflated, kPages * kKibPerPage - 2 * 64 * kKibPerPage) << touched << " -> " << inflated;
    auto b = api(sock, {{"cmd", "balloon"}});
    EXPECT_EQ(b.value("inflated_pages", 0), kPages) << b.dump();
    // 32 buffers of 256 consecutive PFNs: one discard each, not one per page.
    EXPECT_LE(b.value("discard_calls", 0), 32) << b.dump();
    EXPECT_EQ(ask(*p, "check " + std::to_string(kChecked)), "pattern=0 zero=" + std::to_string(kChecked) + " other=0");
    EXPECT_EQ(ask(*p, "deflate " + n), "deflated " + n);
    EXPECT_EQ(api(sock, {{"cmd", "balloon"}}).value("deflated_pages", 0), kPages);
    EXPECT_EQ(ask(*p, "touch " + n), "touched " + n);
    EXPECT_EQ(ask(*p, "check " + n), "pattern=" + n + " zero=0 other=0");
    quit(*p);
}

TEST_F(BalloonTest, BadPfnsAreRefusedWithoutTouchingMemory) {
    std::string sock = dir + "/b.sock";
    auto p = boot(sock);
    EXPECT_EQ(ask(*p, "touch 64"), "touched 64");
    int64_t before = guest_ram_kib(sock, "rss_shmem_kib");
    // Pages 0-7 with a PFN in the MMIO hole, 0xffffffff and one past RAM: nothing goes.
    EXPECT_EQ(ask(*p, "bad"), "bad sent");
    EXPECT_EQ(ask(*p, "check 64"), "pattern=64 zero=0 other=0");
    EXPECT_GE(guest_ram_kib(sock, "rss_shmem_kib"), before);
    auto b = api(sock, {{"cmd", "balloon"}});
    EXPECT_EQ(b.value("refused_requests", 0), 1) << b.dump();
    EXPECT_EQ(b.value("inflated_pages", -1), 0) << b.dump();
    EXPECT_NE(log().find("PFN outside guest RAM"), std::string::npos) << log();
    // The device works on.
    EXPECT_EQ(ask(*p, "inflate 8"), "inflated 8");
    EXPECT_EQ(ask(*p, "check 64"), "pattern=56 zero=8 other=0");
    quit(*p);
}

TEST_F(BalloonTest, TargetFromBootAndTheApiReachesTheDriver) {
    std::string sock = dir + "/b.sock";
    auto p = boot(sock, {"--balloon", "16"});
    EXPECT_EQ(ask(*p, "config"), "num_pages=4096 actual=0");
    auto b = api(sock, {{"cmd", "balloon"}, {"target_mib", 40}});
    EXPECT_EQ(b.value("target_mib", 0.0), 40.0) << b.dump();
    EXPECT_EQ(ask(*p, "config"), "num_pages=10240 actual=0");
    EXPECT_EQ(ask(*p, "actual 10240"), "actual 10240");
    EXPECT_EQ(api(sock, {{"cmd", "balloon"}}).value("actual_mib", 0.0), 40.0);
    // A target the guest cannot give is refused; the old one stays.
    b = api(sock, {{"cmd", "balloon"}, {"target_mib", 128}});
    EXPECT_NE(b.value("error", "").find("leaves the guest nothing"), std::string::npos) << b.dump();
    b = api(sock, {{"cmd", "balloon"}, {"target_mib", "lots"}});
    EXPECT_NE(b.value("error", "").find("whole number of MiB"), std::string::npos) << b.dump();
    EXPECT_EQ(ask(*p, "config"), "num_pages=10240 actual=10240");
    quit(*p);
}

// Balloon state is in the snapshot; pages inflated after a restore read as
// zeros, and a reset brings the snapshot's data back under them.
TEST_F(BalloonTest, SnapshotKeepsTheBalloonAndResetUndoesAnInflate) {
    std::string sock = dir + "/b.sock";
    auto p = boot(sock, {"--balloon", "8"});
    const std::string n = std::to_string(kChecked);
    EXPECT_EQ(ask(*p, "touch " + n), "touched " + n);
    EXPECT_EQ(ask(*p, "actual 2048"), "actual 2048");
    auto snap = api(sock, {{"cmd", "snapshot"}, {"path", dir + "/snap"}});
    ASSERT_FALSE(snap.contains("error")) << snap.dump() << log();
    quit(*p);

    std::string rsock = dir + "/r.sock";
    auto r = start({"--restore", dir + "/snap"}, rsock);
    auto b = api(rsock, {{"cmd", "balloon"}, {"stats", false}});
    EXPECT_EQ(b.value("target_mib", 0.0), 8.0) << b.dump();
    EXPECT_EQ(b.value("actual_mib", 0.0), 8.0) << b.dump();
    EXPECT_EQ(ask(*r, "config"), "num_pages=2048 actual=2048");
    EXPECT_EQ(ask(*r, "check " + n), "pattern=" + n + " zero=0 other=0");
    EXPECT_EQ(ask(*r, "inflate " + n), "inflated " + n) << log();
    EXPECT_EQ(ask(*r, "check " + n), "pattern=0 zero=" + n + " other=0");
    auto reset = api(rsock, {{"cmd", "reset"}});
    ASSERT_FALSE(reset.contains("error")) << reset.dump();
    EXPECT_GE(reset.value("dirty_pages", 0), kChecked) << reset.dump();
    // Back at the snapshot: the guest's next line is read by the same prompt it was snapshotted at.
    EXPECT_EQ(ask(*r, "check " + n), "pattern=" + n + " zero=0 other=0") << log();
    quit(*r);
}

TEST_F(BalloonTest, WithoutTheDeviceTheApiSaysSo) {
    auto r =
        run_process({vmm(), "--kernel", guest("balloon"), "--memory", "128", "--no-balloon"}, {.timeout_seconds = 30});
    EXPECT_EQ(r.exit_status, 4) << r.out << r.err;  // the guest finds no balloon
    EXPECT_NE(r.out.find("no balloon"), std::string::npos) << r.out;
    std::string sock = dir + "/s.sock";
    auto p = start({"--kernel", guest("snapshot"), "--memory", "32", "--no-balloon"}, sock);
    EXPECT_TRUE(p->wait_for_stdout("ready\n", 30)) << log();
    auto b = api(sock, {{"cmd", "balloon"}, {"target_mib", 4}});
    EXPECT_NE(b.value("error", "").find("this VM has no balloon"), std::string::npos) << b.dump();
    quit(*p);
    r = run_process({vmm(), "--kernel", guest("balloon"), "--memory", "64", "--balloon", "64"},
                    {.timeout_seconds = 30});
    EXPECT_EQ(r.exit_status, 1);
    EXPECT_NE(r.err.find("balloon.target_mib (64) must be less than machine.memory_mib (64)"), std::string::npos)
        << r.err;
}

}  // namespace
}  // namespace husk::test
