#include "vmm/api/api_reply.h"

#include <gtest/gtest.h>

namespace husk::api {
namespace {

// The field names are the control socket's contract (vmm/api/API.md): the
// runtime, husk-bench and users' scripts read them.
TEST(ApiReply, FieldsAreTheDocumentedOnes) {
    EXPECT_EQ(to_json(StatusReply{"running", 42}), (nlohmann::json{{"status", "running"}, {"pid", 42}}));
    EXPECT_EQ(to_json(StatusReply{"paused", {}}), (nlohmann::json{{"status", "paused"}}));
    EXPECT_EQ(to_json(SnapshotReply{"/s", 1.5, 4096}),
              (nlohmann::json{{"path", "/s"}, {"ms", 1.5}, {"memory_bytes", 4096}}));
    ResetReply reset{250, 7, 3, true, {1, 2, 3, 4}};
    auto j = to_json(reset);
    EXPECT_EQ(j["us"], 250);
    EXPECT_EQ(j["dirty_pages"], 7);
    EXPECT_EQ(j["resets"], 3);
    EXPECT_EQ(j["reseeded"], true);
    EXPECT_EQ(j["breakdown_us"], (nlohmann::json{{"pause", 1}, {"memory", 2}, {"state", 3}, {"resume", 4}}));
    EXPECT_EQ(to_json(EmptyReply{}), nlohmann::json::object());
}

TEST(ApiReply, BalloonFiguresAreInMib) {
    BalloonReply b;
    b.info.target_pages = 256 * 64;  // 64 MiB of 4 KiB pages
    b.info.actual_pages = 256 * 32;
    b.info.reported_bytes = 3 << 20;
    b.info.stats = {{"free", 100}};
    b.stats_fresh = true;
    auto j = to_json(b);
    EXPECT_EQ(j["target_mib"], 64.0);
    EXPECT_EQ(j["actual_mib"], 32.0);
    EXPECT_EQ(j["reported_mib"], 3.0);
    EXPECT_EQ(j["stats"], (nlohmann::json{{"free", 100}}));
    EXPECT_EQ(j["stats_fresh"], true);
}

TEST(ApiReply, StatsNameOnlyWhatTheVmHas) {
    StatsReply plain;
    plain.vcpus = 1;
    plain.memory_bytes = 1 << 20;
    plain.rss_kib = 900;
    auto j = to_json(plain);
    EXPECT_TRUE(j["first_run_ms"].is_null());  // not run yet
    EXPECT_FALSE(j.contains("balloon"));
    EXPECT_FALSE(j.contains("vsock"));
    EXPECT_FALSE(j.contains("restored_from"));

    StatsReply restored = plain;
    restored.first_run_ms = 3.5;
    restored.vsock = StatsReply::Vsock{2, 1, 0, 5};
    restored.restored = StatsReply::Restored{"/t", 4.25, 10, 180};
    j = to_json(restored);
    EXPECT_EQ(j["first_run_ms"], 3.5);
    EXPECT_EQ(j["vsock"]["dropped_control_packets"], 5);
    EXPECT_EQ(j["restored_from"], "/t");
    EXPECT_EQ(j["resets"], 10);
    EXPECT_EQ(j["last_reset_us"], 180);
}

}  // namespace
}  // namespace husk::api
