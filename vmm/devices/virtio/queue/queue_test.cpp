#include "vmm/devices/virtio/queue/queue.h"

#include <gtest/gtest.h>

#include "vmm/devices/virtio/queue/fake_driver.h"

namespace husk::virtio {
namespace {

using testing::FakeDriver;
using testing::RawDesc;

struct QueueTest : ::testing::Test {
    GuestMemory mem = GuestMemory::create(4 << 20).release_value();
    FakeDriver drv{mem, 16};
    Queue q{256};
    void SetUp() override {
        drv.configure(q);
        ASSERT_FALSE(q.validate(mem).is_error());
    }
};

TEST_F(QueueTest, EmptyQueuePopsNothing) {
    auto r = q.pop(mem);
    ASSERT_FALSE(r.is_error());
    EXPECT_FALSE(r.value().has_value());
}

TEST_F(QueueTest, PopsAChainInOrder) {
    uint64_t a = drv.alloc(16), b = drv.alloc(512), c = drv.alloc(1);
    uint16_t head = drv.add_chain({{a, 16, false}, {b, 512, true}, {c, 1, true}});
    auto r = q.pop(mem);
    ASSERT_FALSE(r.is_error()) << r.error().message();
    ASSERT_TRUE(r.value().has_value());
    auto& chain = *r.value();
    EXPECT_EQ(chain.head(), head);
    ASSERT_EQ(chain.buffers().size(), 3u);
    EXPECT_EQ(chain.readable_bytes(), 16u);
    EXPECT_EQ(chain.writable_bytes(), 513u);
    ASSERT_FALSE(q.add_used(mem, chain.head(), 513).is_error());
    EXPECT_EQ(drv.used_idx(), 1);
    EXPECT_EQ(drv.used(0), std::make_pair(uint32_t(head), 513u));
    EXPECT_TRUE(q.should_notify(mem).value());
    EXPECT_FALSE(q.should_notify(mem).value());  // nothing new since
}

TEST_F(QueueTest, NoInterruptFlagIsHonoured) {
    drv.set_avail_flags(kAvailFlagNoInterrupt);
    uint64_t a = drv.alloc(8);
    drv.add_chain({{a, 8, true}});
    auto c = q.pop(mem).release_value();
    ASSERT_FALSE(q.add_used(mem, c->head(), 8).is_error());
    EXPECT_FALSE(q.should_notify(mem).value());
}

TEST_F(QueueTest, EventIdxSuppressesAndRequests) {
    drv.configure(q, /*event_idx=*/true);
    uint64_t a = drv.alloc(8);
    drv.add_chain({{a, 8, true}});
    drv.add_chain({{a, 8, true}});
    drv.set_used_event(1);  // driver wants an interrupt once used idx passes 1
    auto c1 = q.pop(mem).release_value();
    EXPECT_EQ(drv.avail_event(), 1);
    ASSERT_FALSE(q.add_used(mem, c1->head(), 8).is_error());
    EXPECT_FALSE(q.should_notify(mem).value());  // used idx 1: not past used_event
    auto c2 = q.pop(mem).release_value();
    ASSERT_FALSE(q.add_used(mem, c2->head(), 8).is_error());
    EXPECT_TRUE(q.should_notify(mem).value());  // used idx 2 passed 1
}

TEST_F(QueueTest, NotificationSuppression) {
    drv.configure(q, /*event_idx=*/true);
    uint64_t a = drv.alloc(8);
    drv.add_chain({{a, 8, true}});
    ASSERT_FALSE(q.disable_notifications(mem).is_error());
    ASSERT_TRUE(q.pop(mem).value().has_value());
    EXPECT_EQ(drv.avail_event(), 0);  // left behind: the driver will not kick
    auto more = q.enable_notifications(mem);
    ASSERT_FALSE(more.is_error());
    EXPECT_FALSE(more.value());
    EXPECT_EQ(drv.avail_event(), 1);
    // A buffer added while kicks were off is reported on re-enable.
    ASSERT_FALSE(q.disable_notifications(mem).is_error());
    drv.add_chain({{a, 8, true}});
    EXPECT_TRUE(q.enable_notifications(mem).value());
}

TEST_F(QueueTest, IndirectTable) {
    uint64_t a = drv.alloc(4), b = drv.alloc(64);
    RawDesc table[2] = {{a, 4, kDescFlagNext, 1}, {b, 64, kDescFlagWrite, 0}};
    uint64_t t = drv.alloc(sizeof table, table);
    drv.write_desc(0, {t, sizeof table, kDescFlagIndirect, 0});
    drv.publish(0);
    auto r = q.pop(mem);
    ASSERT_FALSE(r.is_error()) << r.error().message();
    EXPECT_EQ(r.value()->buffers().size(), 2u);
    EXPECT_EQ(r.value()->writable_bytes(), 64u);
}

// --- hostile drivers: each is an error, never a crash or an out-of-bounds access ---

TEST_F(QueueTest, DescriptorLoopIsRefused) {
    uint64_t a = drv.alloc(8);
    drv.write_desc(0, {a, 8, kDescFlagNext, 1});
    drv.write_desc(1, {a, 8, kDescFlagNext, 0});
    drv.publish(0);
    auto r = q.pop(mem);
    ASSERT_TRUE(r.is_error());
    EXPECT_NE(r.error().message().find("longer than the queue"), std::string::npos);
}

TEST_F(QueueTest, ChainLongerThanQueueIsRefused) {
    uint64_t a = drv.alloc(8);
    for (uint16_t i = 0; i < 16; ++i) drv.write_desc(i, {a, 8, kDescFlagNext, uint16_t(i + 1)});
    drv.publish(0);  // 16 descriptors then next=16 is out of range; either way an error
    EXPECT_TRUE(q.pop(mem).is_error());
}

TEST_F(QueueTest, OutOfRangeHeadAndNext) {
    drv.publish(16);
    EXPECT_TRUE(q.pop(mem).is_error());
}

TEST_F(QueueTest, BufferOutsideGuestMemory) {
    drv.write_desc(0, {(4u << 20) - 4, 8, 0, 0});
    drv.publish(0);
    EXPECT_TRUE(q.pop(mem).is_error());
}

TEST_F(QueueTest, WrappingAddressIsRefused) {
    drv.write_desc(0, {~0ull - 2, 16, 0, 0});
    drv.publish(0);
    EXPECT_TRUE(q.pop(mem).is_error());
}

TEST_F(QueueTest, HugeLengthIsRefused) {
    drv.write_desc(0, {0x20000, 0xffffffffu, kDescFlagWrite, 0});
    drv.publish(0);
    EXPECT_TRUE(q.pop(mem).is_error());
}

TEST_F(QueueTest, ZeroLengthBuffersAreSkipped) {
    uint64_t a = drv.alloc(8);
    drv.add_chain({{a, 0, false}, {a, 8, true}});
    auto r = q.pop(mem);
    ASSERT_FALSE(r.is_error());
    EXPECT_EQ(r.value()->buffers().size(), 1u);
}

TEST_F(QueueTest, ReadableAfterWritableIsRefused) {
    uint64_t a = drv.alloc(8);
    drv.add_chain({{a, 8, true}, {a, 8, false}});
    EXPECT_TRUE(q.pop(mem).is_error());
}

TEST_F(QueueTest, AvailIndexJumpingPastQueueSize) {
    drv.set_avail_idx(100);
    EXPECT_TRUE(q.pop(mem).is_error());
}

TEST_F(QueueTest, BadIndirectTables) {
    uint64_t a = drv.alloc(8);
    drv.write_desc(0, {a, 8, kDescFlagIndirect | kDescFlagNext, 1});  // INDIRECT with NEXT
    drv.publish(0);
    EXPECT_TRUE(q.pop(mem).is_error());

    Queue q2{256};
    drv.configure(q2);
    q2.set_indices(1, 0);
    drv.write_desc(1, {a, 7, kDescFlagIndirect, 0});  // not a whole descriptor
    drv.publish(1);
    EXPECT_TRUE(q2.pop(mem).is_error());

    Queue q3{256};
    drv.configure(q3);
    q3.set_indices(2, 0);
    RawDesc loop[2] = {{a, 8, kDescFlagNext, 1}, {a, 8, kDescFlagNext, 0}};
    uint64_t t = drv.alloc(sizeof loop, loop);
    drv.write_desc(2, {t, sizeof loop, kDescFlagIndirect, 0});
    drv.publish(2);
    EXPECT_TRUE(q3.pop(mem).is_error());

    Queue q4{256};
    drv.configure(q4);
    q4.set_indices(3, 0);
    RawDesc nested[1] = {{t, 16, kDescFlagIndirect, 0}};
    uint64_t t2 = drv.alloc(sizeof nested, nested);
    drv.write_desc(3, {t2, sizeof nested, kDescFlagIndirect, 0});
    drv.publish(3);
    EXPECT_TRUE(q4.pop(mem).is_error());
}

TEST(QueueValidate, RejectsBadLayouts) {
    auto mem = GuestMemory::create(1 << 20).release_value();
    Queue q{256};
    q.set_size(24);  // not a power of 2
    EXPECT_TRUE(q.validate(mem).is_error());
    q.set_size(512);  // above max
    EXPECT_TRUE(q.validate(mem).is_error());
    q.set_size(16);
    q.set_desc_table(0x1008);  // misaligned
    EXPECT_TRUE(q.validate(mem).is_error());
    q.set_desc_table(1 << 20);  // outside RAM
    EXPECT_TRUE(q.validate(mem).is_error());
    q.set_desc_table(0x1000);
    q.set_avail_ring(0x2000);
    q.set_used_ring(0x3000);
    EXPECT_FALSE(q.validate(mem).is_error());
}

}  // namespace
}  // namespace husk::virtio
