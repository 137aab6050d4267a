#include "vmm/devices/bus.h"

#include <gtest/gtest.h>

#include <vector>

namespace husk {
namespace {

class Recorder : public IoDevice {
public:
    void read(uint64_t offset, std::span<uint8_t> data) override {
        for (auto& b : data) b = uint8_t(offset);
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override { writes.push_back({offset, data.size()}); }
    std::vector<std::pair<uint64_t, size_t>> writes;
};

TEST(Bus, DispatchesByRangeWithOffset) {
    Bus bus("pio");
    auto dev = std::make_shared<Recorder>();
    ASSERT_FALSE(bus.insert(0x3f8, 8, dev).is_error());
    uint8_t b[1];
    EXPECT_TRUE(bus.read(0x3fa, b));
    EXPECT_EQ(b[0], 2);
    uint8_t w[2] = {1, 2};
    EXPECT_TRUE(bus.write(0x3fe, w));
    ASSERT_EQ(dev->writes.size(), 1u);
    EXPECT_EQ(dev->writes[0].first, 6u);
}

TEST(Bus, UnmappedReadsFloatHigh) {
    Bus bus("mmio");
    uint8_t b[4] = {};
    EXPECT_FALSE(bus.read(0x1000, b));
    EXPECT_EQ(b[0], 0xff);
    EXPECT_EQ(b[3], 0xff);
}

TEST(Bus, AccessStraddlingTheEndIsRefused) {
    Bus bus("pio");
    auto dev = std::make_shared<Recorder>();
    ASSERT_FALSE(bus.insert(0x60, 1, dev).is_error());
    uint8_t w[2] = {};
    EXPECT_FALSE(bus.write(0x60, w));  // 2 bytes at a 1-byte device
    EXPECT_TRUE(dev->writes.empty());
}

TEST(Bus, OverlapsAndWrapsAreRefused) {
    Bus bus("mmio");
    auto dev = std::make_shared<Recorder>();
    ASSERT_FALSE(bus.insert(0x1000, 0x100, dev).is_error());
    EXPECT_TRUE(bus.insert(0x10ff, 1, dev).is_error());
    EXPECT_TRUE(bus.insert(0xfff, 2, dev).is_error());
    EXPECT_FALSE(bus.insert(0x1100, 1, dev).is_error());
    EXPECT_TRUE(bus.insert(~0ull - 1, 4, dev).is_error());
    EXPECT_TRUE(bus.insert(0x5000, 0, dev).is_error());
}

}  // namespace
}  // namespace husk
