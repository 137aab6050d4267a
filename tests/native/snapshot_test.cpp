// Native KVM tier: snapshot, restore into a new husk-vmm, and in-place reset,
// with the `snapshot` tiny guest (tests/guests/snapshot.c) driven over its
// serial console and husk-vmm's control socket.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "tests/lib/console_guest.h"

namespace husk::test {
namespace {

namespace fs = std::filesystem;

class SnapshotTest : public ConsoleGuestTest {
protected:
    std::unique_ptr<RunningProcess> boot(const std::string& api) {
        auto p = start({"--kernel", guest("snapshot"), "--memory", "32", "--no-rng"}, api);
        EXPECT_TRUE(p->wait_for_stdout("ready\n", 30)) << p->seen() << log();
        return p;
    }
    std::string round(RunningProcess& p, const std::string& pages) { return ask(p, pages); }
    // A snapshot taken after rounds 1 (3 pages) and 2 (5 pages).
    std::string take_snapshot() {
        auto p = boot(dir + "/boot.sock");
        EXPECT_EQ(round(*p, "3"), "round 1 dirtied 3");
        EXPECT_EQ(round(*p, "5"), "round 2 dirtied 5");
        auto reply = api(dir + "/boot.sock", {{"cmd", "snapshot"}, {"path", dir + "/snap"}});
        EXPECT_FALSE(reply.contains("error")) << reply.dump() << log();
        // The original goes on from where it was.
        EXPECT_EQ(round(*p, "2"), "round 3 dirtied 2");
        p->write_stdin("q\n");
        EXPECT_EQ(p->wait_exit(30), 0);
        return dir + "/snap";
    }
};

TEST_F(SnapshotTest, StateSurvivesRestoreInANewProcess) {
    std::string snap = take_snapshot();
    ASSERT_TRUE(fs::exists(snap + "/vmstate"));
    ASSERT_TRUE(fs::exists(snap + "/memory"));
    // Twice from one snapshot: each restored VM goes on from round 2, with round 2's memory.
    for (int i = 0; i < 2; ++i) {
        std::string api_sock = dir + "/r" + std::to_string(i) + ".sock";
        auto p = start({"--restore", snap}, api_sock);
        EXPECT_EQ(round(*p, "4"), "round 3 dirtied 4") << log();
        EXPECT_EQ(round(*p, "6"), "round 4 dirtied 6") << log();
        auto stats = api(api_sock, {{"cmd", "stats"}});
        EXPECT_EQ(stats.value("restored_from", ""), snap) << stats.dump();
        p->write_stdin("q\n");
        EXPECT_EQ(p->wait_exit(30), 0) << log();
    }
}

TEST_F(SnapshotTest, ResetBringsBackMemoryAndRegistersEveryTime) {
    std::string snap = take_snapshot();
    std::string sock = dir + "/r.sock";
    auto p = start({"--restore", snap}, sock);
    // The guest checks its pages' sum each round: a half-reverted memory says "corrupt".
    for (const char* pages : {"7", "1000", "0", "64", "2"}) {
        EXPECT_EQ(round(*p, pages), std::string("round 3 dirtied ") + pages) << log();
        EXPECT_EQ(round(*p, "1"), "round 4 dirtied 1") << log();
        auto reply = api(sock, {{"cmd", "reset"}});
        ASSERT_FALSE(reply.contains("error")) << reply.dump();
        // At least the pages the guest wrote since the snapshot were reverted.
        EXPECT_GE(reply.value("dirty_pages", 0), std::max(std::atoi(pages), 1)) << reply.dump();
    }
    EXPECT_EQ(api(sock, {{"cmd", "stats"}}).value("resets", 0), 5);
    p->write_stdin("q\n");
    EXPECT_EQ(p->wait_exit(30), 0) << log();
}

TEST_F(SnapshotTest, RestoreInPlaceMovesARunningVmToAnotherSnapshot) {
    std::string snap = take_snapshot();
    std::string sock = dir + "/r.sock";
    auto p = start({"--restore", snap}, sock);
    EXPECT_EQ(round(*p, "2"), "round 3 dirtied 2");
    // A second snapshot, of this restored VM after round 3.
    auto second = api(sock, {{"cmd", "snapshot"}, {"path", dir + "/snap2"}});
    ASSERT_FALSE(second.contains("error")) << second.dump() << log();
    EXPECT_EQ(round(*p, "2"), "round 4 dirtied 2");
    auto moved = api(sock, {{"cmd", "restore"}, {"path", dir + "/snap2"}});
    ASSERT_FALSE(moved.contains("error")) << moved.dump() << log();
    EXPECT_EQ(round(*p, "9"), "round 4 dirtied 9") << log();
    // And reset now returns to the second snapshot.
    ASSERT_FALSE(api(sock, {{"cmd", "reset"}}).contains("error"));
    EXPECT_EQ(round(*p, "1"), "round 4 dirtied 1") << log();
    p->write_stdin("q\n");
    EXPECT_EQ(p->wait_exit(30), 0) << log();
}

// The baseline CPU template (portable snapshots) boots, snapshots and restores like the host's.
TEST_F(SnapshotTest, BaselineCpuTemplateRestores) {
    std::string sock = dir + "/b.sock";
    auto p = start({"--kernel", guest("snapshot"), "--memory", "32", "--no-rng", "--cpu-template", "baseline"}, sock);
    ASSERT_TRUE(p->wait_for_stdout("ready\n", 30)) << log();
    EXPECT_EQ(round(*p, "3"), "round 1 dirtied 3");
    ASSERT_FALSE(api(sock, {{"cmd", "snapshot"}, {"path", dir + "/base"}}).contains("error")) << log();
    p->write_stdin("q\n");
    EXPECT_EQ(p->wait_exit(30), 0);
    auto r = start({"--restore", dir + "/base"}, dir + "/r.sock");
    EXPECT_EQ(round(*r, "1"), "round 2 dirtied 1") << log();
    r->write_stdin("q\n");
    EXPECT_EQ(r->wait_exit(30), 0);
}

TEST_F(SnapshotTest, ResetWithoutASnapshotIsRefused) {
    std::string sock = dir + "/b.sock";
    auto p = boot(sock);
    auto reply = api(sock, {{"cmd", "reset"}});
    EXPECT_NE(reply.value("error", "").find("not restored from a snapshot"), std::string::npos) << reply.dump();
    EXPECT_EQ(round(*p, "1"), "round 1 dirtied 1");  // the VM runs on
    p->write_stdin("q\n");
    EXPECT_EQ(p->wait_exit(30), 0);
}

// Damaged snapshot files are refused before any VM exists, with a message saying how.
TEST_F(SnapshotTest, BadSnapshotFilesAreRefusedCleanly) {
    std::string snap = take_snapshot();
    std::ifstream in(snap + "/vmstate", std::ios::binary);
    std::string good((std::istreambuf_iterator<char>(in)), {});
    auto attempt = [&](const std::string& bytes, const std::string& expected) {
        fs::remove_all(dir + "/bad");
        fs::create_directory(dir + "/bad");
        fs::copy(snap + "/memory", dir + "/bad/memory");
        std::ofstream(dir + "/bad/vmstate", std::ios::binary) << bytes;
        auto r = run_process({vmm(), "--restore", dir + "/bad", "--api", dir + "/bad.sock"}, {.timeout_seconds = 30});
        EXPECT_EQ(r.exit_status, 1) << expected;
        EXPECT_NE(r.err.find(expected), std::string::npos) << r.err;
        EXPECT_FALSE(fs::exists(dir + "/bad.sock")) << "a refused restore left its API socket";
    };
    attempt(good.substr(0, good.size() / 2), "is truncated");
    attempt(good.substr(0, 20), "header is incomplete");
    std::string flipped = good;
    flipped[flipped.size() / 2] ^= 0x40;
    attempt(flipped, "is corrupt (checksum mismatch)");
    std::string version = good;
    version[8] = 9;
    attempt(version, "has format version 9; this husk-vmm reads version 3");
    attempt("not a snapshot at all", "is not a husk snapshot");
    attempt(good + "x", "bytes after its end");
    // A memory file of the wrong size.
    fs::remove_all(dir + "/bad");
    fs::create_directory(dir + "/bad");
    std::ofstream(dir + "/bad/vmstate", std::ios::binary) << good;
    std::ofstream(dir + "/bad/memory", std::ios::binary) << "short";
    auto r = run_process({vmm(), "--restore", dir + "/bad"}, {.timeout_seconds = 30});
    EXPECT_EQ(r.exit_status, 1);
    EXPECT_NE(r.err.find("holds 5 bytes"), std::string::npos) << r.err;
    // Host resources are the restore's to name, and must match the machine.
    r = run_process({vmm(), "--restore", snap, "--drive", dir + "/bad/memory"}, {.timeout_seconds = 30});
    EXPECT_EQ(r.exit_status, 1);
    EXPECT_NE(r.err.find("has 0 drive(s); give each with --drive"), std::string::npos) << r.err;
    // A missing directory.
    r = run_process({vmm(), "--restore", dir + "/nowhere"}, {.timeout_seconds = 30});
    EXPECT_EQ(r.exit_status, 1);
    EXPECT_NE(r.err.find("nowhere/vmstate"), std::string::npos) << r.err;
}

// Device states are matched by the devices' ids: drives given in another
// order at restore are refused, named, before the VM runs; in the snapshot's
// order they restore.
TEST_F(SnapshotTest, DrivesSwappedAtRestoreAreRefusedByName) {
    for (const char* name : {"/root.img", "/data.img"}) {
        std::ofstream f(dir + name, std::ios::binary);
        f << std::string(1 << 20, '\0');
    }
    std::string root = dir + "/root.img,id=root", data = dir + "/data.img,id=data";
    std::string sock = dir + "/d.sock";
    auto p =
        start({"--kernel", guest("snapshot"), "--memory", "32", "--no-rng", "--drive", root, "--drive", data}, sock);
    ASSERT_TRUE(p->wait_for_stdout("ready\n", 30)) << log();
    EXPECT_EQ(round(*p, "3"), "round 1 dirtied 3");
    ASSERT_FALSE(api(sock, {{"cmd", "snapshot"}, {"path", dir + "/drives"}}).contains("error")) << log();
    p->write_stdin("q\n");
    EXPECT_EQ(p->wait_exit(30), 0);

    auto r =
        run_process({vmm(), "--restore", dir + "/drives", "--drive", data, "--drive", root, "--api", dir + "/x.sock"},
                    {.timeout_seconds = 30});
    EXPECT_EQ(r.exit_status, 1);
    EXPECT_NE(r.err.find("device `data` is virtio device 0 here but 1 in the snapshot"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir + "/x.sock")) << "a refused restore left its API socket";

    auto ok = start({"--restore", dir + "/drives", "--drive", root, "--drive", data}, dir + "/r.sock");
    EXPECT_EQ(round(*ok, "1"), "round 2 dirtied 1") << log();
    ok->write_stdin("q\n");
    EXPECT_EQ(ok->wait_exit(30), 0);
}

// A template (--snapshot-on-ready) is taken to run husk-agent, and a reset
// reseeds its RNG through it. A guest with no agent behind the port used to
// hold the reset, and with it husk-vmm's exit, for ever; now the reseed
// gives up at its deadline and says so.
TEST_F(SnapshotTest, ResetOfATemplateWithNoAgentAnswersAndExits) {
    std::string snap = dir + "/template";
    auto made = run_process({vmm(), "--kernel", guest("snapshot"), "--memory", "32", "--no-rng", "--snapshot-on-ready",
                             snap, "--log", dir + "/log"});
    ASSERT_EQ(made.exit_status, 0) << log();
    std::string sock = dir + "/t.sock";
    auto p = start({"--restore", snap}, sock);
    auto reply = api(sock, {{"cmd", "reset"}});
    EXPECT_FALSE(reply.contains("error")) << reply.dump() << log();
    EXPECT_FALSE(reply.value("reseeded", true)) << reply.dump();
    EXPECT_NE(log().find("could not reseed"), std::string::npos) << log();
    ::kill(p->pid(), SIGTERM);
    EXPECT_EQ(p->wait_exit(30), 128 + SIGTERM) << log();
}

// pause and resume from the API while husk-vmm takes its snapshot on ready
// (on a thread of its own): VM-wide operations run one at a time, so no
// resume lets the vCPUs go in the middle of the capture (which would fail it:
// "the vCPUs ran in the middle of a VM-wide operation") and every snapshot
// restores. A client hammers the API from before husk-vmm starts, each round.
TEST_F(SnapshotTest, ApiPauseAndResumeNeverRunInsideASnapshotOnReady) {
    for (int round = 0; round < 4; ++round) {
        std::string snap = dir + "/ready" + std::to_string(round), sock = dir + "/h" + std::to_string(round) + ".sock";
        std::atomic<bool> done{false};
        std::atomic<int> answered{0};
        std::thread hammer([&] {
            for (int i = 0; !done; ++i) {
                auto r = api_call(sock, {{"cmd", i % 2 ? "resume" : "pause"}}, 2000);
                if (r && !r.value().contains("error")) ++answered;
            }
        });
        auto made = run_process({vmm(), "--kernel", guest("snapshot"), "--memory", "32", "--no-rng", "--api", sock,
                                 "--snapshot-on-ready", snap, "--log", dir + "/log"});
        done = true;
        hammer.join();
        ASSERT_EQ(made.exit_status, 0) << log();
        auto p = start({"--restore", snap}, dir + "/r" + std::to_string(round) + ".sock");
        // The snapshot came at "init reached", before or amid the guest's first "ready".
        p->write_stdin("3\n");
        EXPECT_TRUE(p->wait_for_stdout("round 1 dirtied 3\n", 60)) << p->seen() << log();
        quit(*p);
        std::printf("round %d: %d pause/resume requests answered around the snapshot\n", round, answered.load());
    }
}

}  // namespace
}  // namespace husk::test
