// virtio-balloon driven directly through its queues by fake drivers: pages
// handed over leave the host, bad PFNs touch nothing, statistics, reporting.
#include "vmm/devices/virtio/balloon/balloon.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <random>

#include "vmm/devices/virtio/queue/fake_driver.h"

namespace husk::virtio {
namespace {

using testing::FakeDriver;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kArray = 4 << 20;  // the pages the tests hand over: 4 MiB up

uint64_t allocated_bytes(const GuestMemory& mem) {
    struct stat st {};
    EXPECT_EQ(::fstat(mem.fd(), &st), 0);
    return uint64_t(st.st_blocks) * 512;
}

struct Harness {
    GuestMemory mem = GuestMemory::create(16 << 20).release_value();
    // inflate, deflate, stats, reporting: rings 64 KiB apart, data above 1 MiB.
    std::vector<FakeDriver> drivers;
    std::vector<Queue> queues;
    Balloon balloon;
    int used_signals = 0, config_signals = 0;
    std::string failure;

    explicit Harness(uint64_t features = Balloon::kFeatureStatsVq | Balloon::kFeatureReporting,
                     BalloonOptions options = {})
        : balloon(options) {
        // The rings and buffers are allocated up front: only the pages handed over change the count.
        std::vector<uint8_t> zeros(4 * 0x40000);
        EXPECT_TRUE(mem.write(0x10000, zeros));
        for (int i = 0; i < 4; ++i) {
            drivers.emplace_back(mem, 16, 0x10000 + 0x40000ull * i);
            queues.emplace_back(Balloon::kQueueSize);
            drivers.back().configure(queues.back());
        }
        DeviceContext ctx;
        ctx.memory = &mem;
        ctx.signal_used = [this] { ++used_signals; };
        ctx.signal_config = [this] { ++config_signals; };
        ctx.fail = [this](const Error& e) { failure = e.message(); };
        EXPECT_TRUE(balloon.activate(features | kFeatureVersion1, std::span(queues), std::move(ctx)));
    }
    // Sends `pfns` in one buffer on queue `q` and lets the device take it.
    void send(size_t q, const std::vector<uint32_t>& pfns) {
        uint64_t at = drivers[q].alloc(uint32_t(pfns.size() * 4), pfns.data());
        drivers[q].add_chain({{at, uint32_t(pfns.size() * 4), false}});
        balloon.queue_notify(q);
    }
    void fill_pages(uint64_t count) {
        for (uint64_t i = 0; i < count; ++i) ASSERT_TRUE(mem.write_obj<uint64_t>(kArray + i * kPage, 0x5a00 + i));
    }
    uint64_t word(uint64_t page) { return mem.read_obj<uint64_t>(kArray + page * kPage).value(); }
};

std::vector<uint32_t> pfns_of(uint64_t first_page, uint64_t count) {
    std::vector<uint32_t> pfns;
    for (uint64_t i = 0; i < count; ++i) pfns.push_back(uint32_t((kArray >> 12) + first_page + i));
    return pfns;
}

TEST(Balloon, InflatedPagesLeaveTheHostInFewCalls) {
    Harness h;
    h.fill_pages(256);
    uint64_t before = allocated_bytes(h.mem);
    // Two runs (pages 0-99 and 150-255), in a shuffled order as a driver's allocator may give them.
    auto pfns = pfns_of(0, 100);
    auto second = pfns_of(150, 106);
    pfns.insert(pfns.end(), second.begin(), second.end());
    std::shuffle(pfns.begin(), pfns.end(), std::mt19937(7));
    h.send(0, pfns);
    EXPECT_EQ(h.failure, "");
    EXPECT_EQ(h.drivers[0].used_idx(), 1);
    EXPECT_EQ(h.used_signals, 1);
    auto info = h.balloon.info();
    EXPECT_EQ(info.inflated_pages, 206u);
    EXPECT_EQ(info.discard_calls, 2u);
    EXPECT_EQ(before - allocated_bytes(h.mem), 206 * kPage);
    EXPECT_EQ(h.word(0), 0u);
    EXPECT_EQ(h.word(99), 0u);
    EXPECT_EQ(h.word(100), 0x5a00u + 100);  // not handed over: kept
    EXPECT_EQ(h.word(255), 0u);
    // Deflating takes them back: nothing to do but count.
    h.send(1, pfns);
    EXPECT_EQ(h.balloon.info().deflated_pages, 206u);
    EXPECT_EQ(h.drivers[1].used_idx(), 1);
}

TEST(Balloon, APfnOutsideRamRefusesTheWholeRequest) {
    Harness h;
    h.fill_pages(8);
    uint64_t before = allocated_bytes(h.mem);
    for (uint32_t bad : {0xC0000u, 0xFFFFFFFFu, 0x100000u, uint32_t((16 << 20) >> 12)}) {
        auto pfns = pfns_of(0, 8);
        pfns.push_back(bad);
        h.send(0, pfns);
        h.send(1, {bad});
    }
    EXPECT_EQ(h.failure, "");  // a refusal, not a broken device
    auto info = h.balloon.info();
    EXPECT_EQ(info.refused_requests, 8u);
    EXPECT_EQ(info.inflated_pages, 0u);
    EXPECT_EQ(info.discard_calls, 0u);
    EXPECT_EQ(allocated_bytes(h.mem), before);
    for (uint64_t i = 0; i < 8; ++i) EXPECT_EQ(h.word(i), 0x5a00 + i);
    EXPECT_EQ(h.drivers[0].used_idx(), 4);  // every buffer still goes back
    // A request of a size no PFN array has is refused too.
    uint64_t at = h.drivers[0].alloc(6);
    h.drivers[0].add_chain({{at, 6, false}});
    h.balloon.queue_notify(0);
    EXPECT_EQ(h.balloon.info().refused_requests, 9u);
}

TEST(Balloon, ReportedFreeRangesLeaveTheHost) {
    Harness h;
    h.fill_pages(512);
    uint64_t before = allocated_bytes(h.mem);
    // One 1 MiB range, and one that starts mid-page: only its whole pages go.
    h.drivers[3].add_chain({{kArray, 1 << 20, true}, {kArray + (256 << 12) + 100, 4 * kPage, true}});
    h.balloon.queue_notify(3);
    EXPECT_EQ(h.failure, "");
    EXPECT_EQ(h.drivers[3].used_idx(), 1);
    EXPECT_EQ(h.balloon.info().reported_bytes, (1 << 20) + 3 * kPage);
    EXPECT_EQ(before - allocated_bytes(h.mem), (256 + 3) * kPage);
    EXPECT_EQ(h.word(255), 0u);
    EXPECT_EQ(h.word(256), 0x5a00u + 256);  // the partly covered page stays
    EXPECT_EQ(h.word(257), 0u);
}

TEST(Balloon, WithoutStatsTheReportingQueueTakesIndexTwo) {
    Harness h(Balloon::kFeatureReporting);
    h.fill_pages(4);
    h.drivers[2].add_chain({{kArray, 4 * kPage, true}});
    h.balloon.queue_notify(2);
    EXPECT_EQ(h.balloon.info().reported_bytes, 4 * kPage);
    EXPECT_FALSE(h.balloon.request_stats());
}

TEST(Balloon, StatisticsComeOnRequest) {
    Harness h;
    auto post = [&](uint64_t free_bytes) {
        uint8_t entries[20] = {};
        entries[0] = 4;  // free
        std::memcpy(entries + 2, &free_bytes, 8);
        entries[10] = 0x34;  // an unknown tag is skipped
        uint64_t at = h.drivers[2].alloc(sizeof entries, entries);
        h.drivers[2].add_chain({{at, sizeof entries, false}});
        h.balloon.queue_notify(2);
    };
    EXPECT_FALSE(h.balloon.request_stats());  // no buffer yet
    post(1000);
    auto info = h.balloon.info();
    EXPECT_EQ(info.stats_updates, 1u);
    EXPECT_EQ(info.stats.at("free"), 1000u);
    EXPECT_EQ(info.stats.size(), 1u);
    EXPECT_EQ(h.drivers[2].used_idx(), 0);  // the device keeps the buffer
    EXPECT_TRUE(h.balloon.request_stats());
    EXPECT_EQ(h.drivers[2].used_idx(), 1);
    EXPECT_FALSE(h.balloon.request_stats());  // outstanding
    post(2000);
    EXPECT_EQ(h.balloon.info().stats.at("free"), 2000u);
}

// Linux queues its first statistics before DRIVER_OK, and that kick finds
// the device inactive: activation must take the buffer from the ring.
TEST(Balloon, StatisticsQueuedBeforeActivationAreTaken) {
    Harness h;
    h.balloon.reset();
    uint8_t entries[10] = {};
    entries[0] = 4;  // free
    uint64_t free_bytes = 777;
    std::memcpy(entries + 2, &free_bytes, 8);
    uint64_t at = h.drivers[2].alloc(sizeof entries, entries);
    h.drivers[2].add_chain({{at, sizeof entries, false}});
    h.balloon.queue_notify(2);  // not active: ignored
    EXPECT_EQ(h.balloon.info().stats_updates, 0u);
    DeviceContext ctx;
    ctx.memory = &h.mem;
    ctx.signal_used = [] {};
    ctx.signal_config = [] {};
    ctx.fail = [&h](const Error& e) { h.failure = e.message(); };
    ASSERT_TRUE(h.balloon.activate(Balloon::kFeatureStatsVq | Balloon::kFeatureReporting | kFeatureVersion1,
                                   std::span(h.queues), std::move(ctx)));
    auto info = h.balloon.info();
    ASSERT_EQ(info.stats.count("free"), 1u);
    EXPECT_EQ(info.stats.at("free"), 777u);
    EXPECT_TRUE(h.balloon.request_stats()) << "the device holds the buffer to ask for more";
    EXPECT_EQ(h.failure, "");
}

TEST(Balloon, ConfigHoldsTheTargetAndTheDriversAnswer) {
    Harness h(0, {300, true, true});
    uint8_t word[4];
    h.balloon.read_config(0, word);
    EXPECT_EQ(word[0] | word[1] << 8, 300);
    h.balloon.set_target(1000);
    EXPECT_EQ(h.config_signals, 1);
    h.balloon.set_target(1000);
    EXPECT_EQ(h.config_signals, 1);  // no change, no interrupt
    const uint8_t actual[4] = {0x2c, 0x01, 0, 0};
    h.balloon.write_config(4, actual);
    h.balloon.write_config(0, actual);  // num_pages is the device's: ignored
    auto info = h.balloon.info();
    EXPECT_EQ(info.target_pages, 1000u);
    EXPECT_EQ(info.actual_pages, 300u);
}

TEST(Balloon, StateRoundTripsAndBadStateIsRefused) {
    Harness h;
    h.balloon.set_target(77);
    uint8_t entry[10] = {5};
    uint64_t at = h.drivers[2].alloc(sizeof entry, entry);
    h.drivers[2].add_chain({{at, sizeof entry, false}});
    h.balloon.queue_notify(2);
    std::string state = h.balloon.save_state();

    Harness other;
    ASSERT_TRUE(other.balloon.load_state(state));
    EXPECT_EQ(other.balloon.info().target_pages, 77u);
    EXPECT_TRUE(other.balloon.request_stats());  // it holds the snapshot's stats buffer
    EXPECT_TRUE(other.balloon.load_state(state.substr(0, 5)).is_error());
    std::string bad = state;
    bad[12] = char(0xf0);  // a stats head beyond the queue (after the version, target and actual)
    EXPECT_TRUE(other.balloon.load_state(bad).is_error());
}

}  // namespace
}  // namespace husk::virtio
