#include "vmm/devices/virtio/persist.h"

#include <gtest/gtest.h>

#include "vmm/devices/virtio/balloon/balloon.h"
#include "vmm/devices/virtio/block/block.h"
#include "vmm/devices/virtio/mmio/mmio_transport.h"
#include "vmm/devices/virtio/vsock/vsock.h"

namespace husk::virtio {
namespace {

// Every byte cut short, one byte too many, and the next version: each refused.
template <typename State>
void expect_refusals(const State& state) {
    std::string bytes = persist(state);
    for (size_t n = 0; n < bytes.size(); ++n) EXPECT_FALSE(read_persisted<State>(bytes.substr(0, n))) << n;
    EXPECT_FALSE(read_persisted<State>(bytes + "x"));
    std::string newer = bytes;
    newer[0] = char(State::kVersion + 1);
    auto r = read_persisted<State>(newer);
    ASSERT_FALSE(r);
    EXPECT_NE(
        r.error().message().find(std::string(State::kName) + " of version " + std::to_string(State::kVersion + 1)),
        std::string::npos)
        << r.error().message();
}

TEST(PersistedState, DeviceStatesRoundTripWithTheirVersion) {
    auto block = read_persisted<BlockState>(persist(BlockState{123456}));
    ASSERT_TRUE(block);
    EXPECT_EQ(block.value().sectors, 123456u);
    auto balloon = read_persisted<BalloonState>(persist(BalloonState{77, 70, -1}));
    ASSERT_TRUE(balloon);
    EXPECT_EQ(balloon.value().target_pages, 77u);
    EXPECT_EQ(balloon.value().stats_head, -1);
    auto vsock = read_persisted<VsockState>(persist(VsockState{40000}));
    ASSERT_TRUE(vsock);
    EXPECT_EQ(vsock.value().next_host_port, 40000u);
    expect_refusals(BlockState{1});
    expect_refusals(BalloonState{1, 2, 3});
    expect_refusals(VsockState{5});
}

TEST(PersistedState, TransportStateCarriesQueuesAndTheDevicesOwn) {
    MmioState s;
    s.device_type = kTypeBlock;
    s.status = 0xf;
    s.driver_features = kFeatureVersion1 | kFeatureEventIdx;
    s.config_generation = 3;
    s.queues = {{256, true, 0x1000, 0x2000, 0x3000, 17, 16}};
    s.device = persist(BlockState{2048});
    auto back = read_persisted<MmioState>(persist(s));
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back.value().driver_features, s.driver_features);
    ASSERT_EQ(back.value().queues.size(), 1u);
    EXPECT_EQ(back.value().queues[0].used_ring, 0x3000u);
    EXPECT_EQ(back.value().queues[0].next_avail, 17);
    EXPECT_EQ(read_persisted<BlockState>(back.value().device).value().sectors, 2048u);
    expect_refusals(s);
    // A queue count the bytes cannot hold is refused before anything is allocated for it.
    std::string lying = persist(s);
    lying[4 + 4 * 2 + 8 + 4 * 5] = char(0xff);  // the queue count's low byte
    EXPECT_FALSE(read_persisted<MmioState>(lying));
}

}  // namespace
}  // namespace husk::virtio
