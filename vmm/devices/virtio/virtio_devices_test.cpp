// virtio-mmio transport, virtio-rng and virtio-blk driven by a fake driver
// through the transport's registers, with the real io_uring event loop.
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "vmm/devices/virtio/block/block.h"
#include "vmm/devices/virtio/fs/fs.h"
#include "vmm/devices/virtio/mmio/mmio_transport.h"
#include "vmm/devices/virtio/net/net.h"
#include "vmm/devices/virtio/queue/fake_driver.h"
#include "vmm/devices/virtio/rng/rng.h"
#include "vmm/io/event_loop.h"

namespace husk::virtio {
namespace {

using testing::FakeDriver;

uint32_t rd32(MmioTransport& t, uint64_t off) {
    return testing::mmio_read32(t, off);
}
void wr32(MmioTransport& t, uint64_t off, uint32_t v) {
    testing::mmio_write32(t, off, v);
}

struct Harness {
    GuestMemory mem = GuestMemory::create(8 << 20).release_value();
    std::unique_ptr<EventLoop> loop = EventLoop::create().release_value();
    std::thread loop_thread;
    std::unique_ptr<MmioTransport> t;
    FakeDriver drv{mem, 16};

    explicit Harness(std::unique_ptr<VirtioDevice> dev) {
        t = std::make_unique<MmioTransport>(std::move(dev), "test", mem, *loop, 5);
        loop_thread = std::thread([this] { loop->run(); });
    }
    ~Harness() {
        loop->stop();
        loop_thread.join();
    }
    // The Linux driver's sequence (§3.1.1), queue 0 set up from the fake driver.
    void bring_up(bool event_idx = false) {
        wr32(*t, 0x70, 0);
        wr32(*t, 0x70, kStatusAcknowledge);
        wr32(*t, 0x70, kStatusAcknowledge | kStatusDriver);
        wr32(*t, 0x14, 1);
        uint32_t hi = rd32(*t, 0x10);
        ASSERT_TRUE(hi & 1);  // VERSION_1
        wr32(*t, 0x24, 0);
        wr32(*t, 0x20, event_idx ? (1u << 29) : 0);
        wr32(*t, 0x24, 1);
        wr32(*t, 0x20, 1);
        wr32(*t, 0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
        ASSERT_TRUE(rd32(*t, 0x70) & kStatusFeaturesOk);
        Queue shadow(256);
        drv.configure(shadow, event_idx);
        wr32(*t, 0x30, 0);
        wr32(*t, 0x38, shadow.size());
        wr32(*t, 0x80, uint32_t(shadow.desc_table()));
        wr32(*t, 0x84, 0);
        wr32(*t, 0x90, uint32_t(shadow.avail_ring()));
        wr32(*t, 0x94, 0);
        wr32(*t, 0xa0, uint32_t(shadow.used_ring()));
        wr32(*t, 0xa4, 0);
        wr32(*t, 0x44, 1);
        wr32(*t, 0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
    }
    // A device with two queues: queue 0 from the harness's driver, queue 1 from `second`, then DRIVER_OK (after
    // a reset, so it also follows bring_up()).
    void bring_up_two(FakeDriver& second) {
        wr32(*t, 0x70, 0);
        wr32(*t, 0x70, kStatusAcknowledge | kStatusDriver);
        wr32(*t, 0x24, 1);
        wr32(*t, 0x20, 1);
        wr32(*t, 0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
        testing::setup_queue(*t, 0, drv);
        testing::setup_queue(*t, 1, second);
        wr32(*t, 0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
    }
    // The notification a vCPU would write (no ioeventfd here: the register path).
    void notify() { wr32(*t, 0x50, 0); }
    bool wait_used(uint16_t n) {
        for (int i = 0; i < 2000; ++i) {
            if (drv.used_idx() >= n) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return false;
    }
};

TEST(MmioTransport, IdentifiesItself) {
    Harness h(std::make_unique<Rng>());
    EXPECT_EQ(rd32(*h.t, 0x000), 0x74726976u);
    EXPECT_EQ(rd32(*h.t, 0x004), 2u);
    EXPECT_EQ(rd32(*h.t, 0x008), kTypeRng);
    wr32(*h.t, 0x30, 0);
    EXPECT_EQ(rd32(*h.t, 0x034), Rng::kQueueSize);
    wr32(*h.t, 0x30, 7);  // no such queue
    EXPECT_EQ(rd32(*h.t, 0x034), 0u);
}

// An unplugged device is the placeholder of §4.2.2 (device ID 0), which a
// driver leaves alone and cannot set up; plugged, it is the device, and the
// driver's usual sequence brings it up.
TEST(MmioTransport, AnUnpluggedDeviceIsAPlaceholderUntilPlugged) {
    Harness h(std::make_unique<Rng>());
    h.t->set_unplugged();
    EXPECT_TRUE(h.t->unplugged());
    EXPECT_EQ(rd32(*h.t, 0x000), 0x74726976u);
    EXPECT_EQ(rd32(*h.t, 0x004), 2u);
    EXPECT_EQ(rd32(*h.t, 0x008), 0u);
    EXPECT_EQ(rd32(*h.t, 0x00c), 0u);  // vendor
    EXPECT_EQ(rd32(*h.t, 0x010), 0u);  // features
    wr32(*h.t, 0x70, kStatusAcknowledge | kStatusDriver);
    EXPECT_EQ(rd32(*h.t, 0x70), 0u);
    EXPECT_EQ(h.t->status(), 0u);
    EXPECT_TRUE(h.t->plug());
    EXPECT_FALSE(h.t->plug());  // once
    EXPECT_FALSE(h.t->unplugged());
    EXPECT_EQ(rd32(*h.t, 0x008), kTypeRng);
    h.bring_up();
    EXPECT_TRUE(h.t->status() & kStatusDriverOk);
}

TEST(MmioTransport, WrongWidthsAndUnknownRegistersAreIgnored) {
    Harness h(std::make_unique<Rng>());
    uint8_t one[1] = {0xff};
    h.t->write(0x70, one);  // 1-byte status write: ignored
    EXPECT_EQ(rd32(*h.t, 0x70), 0u);
    uint8_t two[2];
    h.t->read(0x000, two);  // 2-byte read: zeros
    EXPECT_EQ(two[0], 0);
    wr32(*h.t, 0x0f0, 0xdeadbeef);  // unknown register
    wr32(*h.t, 0x062, 1);           // misaligned
    EXPECT_EQ(rd32(*h.t, 0x70), 0u);
}

TEST(MmioTransport, RefusesFeaturesNeverOffered) {
    Harness h(std::make_unique<Rng>());
    wr32(*h.t, 0x70, kStatusAcknowledge | kStatusDriver);
    wr32(*h.t, 0x24, 0);
    wr32(*h.t, 0x20, 1u << 5);  // a bit rng never offered
    wr32(*h.t, 0x24, 1);
    wr32(*h.t, 0x20, 1);
    wr32(*h.t, 0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    EXPECT_FALSE(rd32(*h.t, 0x70) & kStatusFeaturesOk);
}

TEST(MmioTransport, NotifyBeforeDriverOkDoesNothing) {
    Harness h(std::make_unique<Rng>());
    h.notify();
    EXPECT_EQ(rd32(*h.t, 0x70), 0u);
}

TEST(MmioTransport, QueueOutsideMemoryNeedsReset) {
    Harness h(std::make_unique<Rng>());
    wr32(*h.t, 0x70, kStatusAcknowledge | kStatusDriver);
    wr32(*h.t, 0x24, 1);
    wr32(*h.t, 0x20, 1);
    wr32(*h.t, 0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    wr32(*h.t, 0x30, 0);
    wr32(*h.t, 0x38, 16);
    wr32(*h.t, 0x80, 0);
    wr32(*h.t, 0x84, 0x10);  // 64 GiB: outside guest RAM
    wr32(*h.t, 0x44, 1);
    wr32(*h.t, 0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
    EXPECT_TRUE(rd32(*h.t, 0x70) & kStatusNeedsReset);
    EXPECT_TRUE(rd32(*h.t, 0x60) & 2);  // configuration change interrupt
    wr32(*h.t, 0x70, 0);                // reset recovers
    EXPECT_EQ(rd32(*h.t, 0x70), 0u);
}

TEST(Rng, FillsBuffers) {
    Harness h(std::make_unique<Rng>());
    h.bring_up();
    uint64_t a = h.drv.alloc(64);
    h.drv.add_chain({{a, 64, true}});
    h.notify();
    ASSERT_TRUE(h.wait_used(1));
    EXPECT_EQ(h.drv.used(0).second, 64u);
    uint8_t buf[64];
    ASSERT_FALSE(h.mem.read(a, buf).is_error());
    int zeros = 0;
    for (uint8_t b : buf) zeros += b == 0;
    EXPECT_LT(zeros, 16);
    EXPECT_TRUE(rd32(*h.t, 0x60) & 1);  // used-buffer interrupt
}

TEST(Rng, MalformedChainNeedsResetAndVmmSurvives) {
    Harness h(std::make_unique<Rng>());
    h.bring_up();
    uint64_t a = h.drv.alloc(8);
    h.drv.write_desc(0, {a, 8, kDescFlagNext | kDescFlagWrite, 0});  // loops on itself
    h.drv.publish(0);
    h.notify();
    EXPECT_TRUE(rd32(*h.t, 0x70) & kStatusNeedsReset);
}

struct TempImage {
    std::string path;
    explicit TempImage(size_t size) {
        char tmpl[] = "/tmp/husk-blk-XXXXXX";
        int fd = mkstemp(tmpl);
        path = tmpl;
        std::vector<uint8_t> data(size);
        for (size_t i = 0; i < size; ++i) data[i] = uint8_t(i * 7 + i / 512);
        EXPECT_EQ(write(fd, data.data(), size), ssize_t(size));
        close(fd);
    }
    ~TempImage() { unlink(path.c_str()); }
};

struct BlkReq {
    uint32_t type, reserved;
    uint64_t sector;
};

// Only a reset takes status bits off. A driver that cleared DRIVER_OK could
// otherwise resize a queue the device is using (found by fuzzing: a request
// completing onto a queue of size 0 divided by zero).
TEST(MmioTransport, StatusBitsGoOffOnlyByReset) {
    TempImage img(8192);
    Harness h(Block::open({img.path, false, false, ""}).release_value());
    h.bring_up();
    uint32_t up = rd32(*h.t, 0x70);
    ASSERT_TRUE(up & kStatusDriverOk);
    wr32(*h.t, 0x70, kStatusAcknowledge | kStatusDriver);
    EXPECT_EQ(rd32(*h.t, 0x70), up);
    wr32(*h.t, 0x30, 0);
    wr32(*h.t, 0x38, 0);  // QueueNum: read-only once DRIVER_OK is set
    BlkReq in{Block::kTypeIn, 0, 0};
    uint64_t hdr = h.drv.alloc(16, &in), data = h.drv.alloc(512), st = h.drv.alloc(1);
    h.drv.add_chain({{hdr, 16, false}, {data, 512, true}, {st, 1, true}});
    h.notify();
    ASSERT_TRUE(h.wait_used(1));
    EXPECT_EQ(h.mem.read_obj<uint8_t>(st).value(), Block::kStatusOk);
    EXPECT_FALSE(rd32(*h.t, 0x70) & kStatusNeedsReset);
    wr32(*h.t, 0x70, 0);
    EXPECT_EQ(rd32(*h.t, 0x70), 0u);
}

TEST(Block, ReadWriteFlushGetId) {
    TempImage img(64 * 1024);
    auto dev = Block::open({img.path, false, false, "husk-disk"}).release_value();
    EXPECT_EQ(dev->capacity_sectors(), 128u);
    Harness h(std::move(dev));
    h.bring_up(/*event_idx=*/true);

    // Read sector 2 (512 bytes).
    BlkReq in{Block::kTypeIn, 0, 2};
    uint64_t hdr = h.drv.alloc(16, &in), data = h.drv.alloc(512), status = h.drv.alloc(1);
    h.drv.set_used_event(0);
    h.drv.add_chain({{hdr, 16, false}, {data, 512, true}, {status, 1, true}});
    h.notify();
    ASSERT_TRUE(h.wait_used(1));
    EXPECT_EQ(h.drv.used(0).second, 513u);
    EXPECT_EQ(h.mem.read_obj<uint8_t>(status).value(), Block::kStatusOk);
    EXPECT_EQ(h.mem.read_obj<uint8_t>(data + 3).value(), uint8_t((1024 + 3) * 7 + 2));

    // Write sector 5, then read it back through the file.
    std::vector<uint8_t> pattern(512, 0xab);
    BlkReq out{Block::kTypeOut, 0, 5};
    uint64_t hdr2 = h.drv.alloc(16, &out), data2 = h.drv.alloc(512, pattern.data()), st2 = h.drv.alloc(1);
    h.drv.set_used_event(1);
    h.drv.add_chain({{hdr2, 16, false}, {data2, 512, false}, {st2, 1, true}});
    BlkReq flush{Block::kTypeFlush, 0, 0};
    uint64_t hdr3 = h.drv.alloc(16, &flush), st3 = h.drv.alloc(1);
    h.drv.add_chain({{hdr3, 16, false}, {st3, 1, true}});
    BlkReq getid{Block::kTypeGetId, 0, 0};
    uint64_t hdr4 = h.drv.alloc(16, &getid), id = h.drv.alloc(20), st4 = h.drv.alloc(1);
    h.drv.add_chain({{hdr4, 16, false}, {id, 20, true}, {st4, 1, true}});
    h.notify();
    ASSERT_TRUE(h.wait_used(4));
    EXPECT_EQ(h.mem.read_obj<uint8_t>(st2).value(), Block::kStatusOk);
    EXPECT_EQ(h.mem.read_obj<uint8_t>(st3).value(), Block::kStatusOk);
    EXPECT_EQ(h.mem.read_obj<uint8_t>(st4).value(), Block::kStatusOk);
    char idbuf[20] = {};
    ASSERT_FALSE(h.mem.read(id, std::span(reinterpret_cast<uint8_t*>(idbuf), 20)).is_error());
    EXPECT_STREQ(idbuf, "husk-disk");
    int fd = open(img.path.c_str(), O_RDONLY);
    uint8_t back[512];
    ASSERT_EQ(pread(fd, back, 512, 5 * 512), 512);
    close(fd);
    EXPECT_EQ(std::memcmp(back, pattern.data(), 512), 0);
}

TEST(Block, OutOfRangeAndReadOnlyAreIoErrors) {
    TempImage img(8192);
    auto dev = Block::open({img.path, true, false, ""}).release_value();
    EXPECT_TRUE(dev->device_features() & Block::kFeatureRo);
    Harness h(std::move(dev));
    h.bring_up();
    BlkReq past{Block::kTypeIn, 0, 16};  // capacity is 16 sectors
    uint64_t hdr = h.drv.alloc(16, &past), data = h.drv.alloc(512), st = h.drv.alloc(1);
    h.drv.add_chain({{hdr, 16, false}, {data, 512, true}, {st, 1, true}});
    BlkReq wrap{Block::kTypeIn, 0, ~0ull};  // sector * 512 overflows
    uint64_t hdr2 = h.drv.alloc(16, &wrap), st2 = h.drv.alloc(1);
    h.drv.add_chain({{hdr2, 16, false}, {data, 512, true}, {st2, 1, true}});
    BlkReq w{Block::kTypeOut, 0, 0};
    uint64_t hdr3 = h.drv.alloc(16, &w), st3 = h.drv.alloc(1);
    h.drv.add_chain({{hdr3, 16, false}, {data, 512, false}, {st3, 1, true}});
    BlkReq odd{77, 0, 0};
    uint64_t hdr4 = h.drv.alloc(16, &odd), st4 = h.drv.alloc(1);
    h.drv.add_chain({{hdr4, 16, false}, {st4, 1, true}});
    h.notify();
    ASSERT_TRUE(h.wait_used(4));
    EXPECT_EQ(h.mem.read_obj<uint8_t>(st).value(), Block::kStatusIoErr);
    EXPECT_EQ(h.mem.read_obj<uint8_t>(st2).value(), Block::kStatusIoErr);
    EXPECT_EQ(h.mem.read_obj<uint8_t>(st3).value(), Block::kStatusIoErr);
    EXPECT_EQ(h.mem.read_obj<uint8_t>(st4).value(), Block::kStatusUnsupported);
    EXPECT_FALSE(rd32(*h.t, 0x70) & kStatusNeedsReset);
}

TEST(Block, MalformedRequestsNeedReset) {
    TempImage img(8192);
    Harness h(Block::open({img.path, false, false, ""}).release_value());
    h.bring_up();
    BlkReq in{Block::kTypeIn, 0, 0};
    uint64_t hdr = h.drv.alloc(16, &in), st = h.drv.alloc(1);
    h.drv.add_chain({{hdr, 8, false}, {st, 1, true}});  // header too short
    h.notify();
    EXPECT_TRUE(rd32(*h.t, 0x70) & kStatusNeedsReset);
}

TEST(Block, DiscardAndWriteZeroes) {
    TempImage img(64 * 1024);
    Harness h(Block::open({img.path, false, false, ""}).release_value());
    h.bring_up();
    struct Seg {
        uint64_t sector;
        uint32_t num, flags;
    };
    BlkReq wz{Block::kTypeWriteZeroes, 0, 0};
    Seg seg{8, 8, 0};  // 4 KiB at 4 KiB
    uint64_t hdr = h.drv.alloc(16, &wz), s = h.drv.alloc(16, &seg), st = h.drv.alloc(1);
    h.drv.add_chain({{hdr, 16, false}, {s, 16, false}, {st, 1, true}});
    BlkReq dc{Block::kTypeDiscard, 0, 0};
    Seg seg2{32, 8, 0};
    uint64_t hdr2 = h.drv.alloc(16, &dc), s2 = h.drv.alloc(16, &seg2), st2 = h.drv.alloc(1);
    h.drv.add_chain({{hdr2, 16, false}, {s2, 16, false}, {st2, 1, true}});
    Seg past{120, 16, 0};  // runs past the 128-sector end
    uint64_t hdr3 = h.drv.alloc(16, &wz), s3 = h.drv.alloc(16, &past), st3 = h.drv.alloc(1);
    h.drv.add_chain({{hdr3, 16, false}, {s3, 16, false}, {st3, 1, true}});
    h.notify();
    ASSERT_TRUE(h.wait_used(3));
    EXPECT_EQ(h.mem.read_obj<uint8_t>(st).value(), Block::kStatusOk);
    EXPECT_EQ(h.mem.read_obj<uint8_t>(st2).value(), Block::kStatusOk);
    EXPECT_EQ(h.mem.read_obj<uint8_t>(st3).value(), Block::kStatusIoErr);
    int fd = open(img.path.c_str(), O_RDONLY);
    uint8_t back[4096];
    ASSERT_EQ(pread(fd, back, sizeof back, 4096), ssize_t(sizeof back));
    close(fd);
    for (uint8_t b : back) ASSERT_EQ(b, 0);
}

// A driver may reset the device while its reads are still in the host kernel.
// Those reads go on writing guest memory, so the device stays busy until they
// land: a snapshot or an in-place reset must wait for them, and the fuzz
// harness must not free the device under them.
// True once the transport reports no host I/O in flight (within 2 s).
bool becomes_idle(MmioTransport& t) {
    for (int i = 0; i < 2000; ++i) {
        {
            auto lock = t.hold();
            if (!t.busy_locked()) return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
}

// Holds the event loop's thread inside a completion until open(): what is
// submitted meanwhile is not completed, so it stays in flight. Opened on
// destruction too, before the harness stops its loop, whatever failed.
class LoopHold {
public:
    explicit LoopHold(EventLoop& loop) {
        std::shared_future<void> opened = m_opened.get_future().share();
        if (pipe(m_fds) != 0) return;
        auto r = loop.submit([this](io_uring_sqe* sqe) { io_uring_prep_read(sqe, m_fds[0], &m_byte, 1, 0); },
                             [this, opened](int) {
                                 m_held = true;
                                 opened.wait();
                             });
        if (r.is_error() || write(m_fds[1], "x", 1) != 1) return;
        while (!m_held) std::this_thread::yield();
    }
    ~LoopHold() {
        open();
        close(m_fds[0]);
        close(m_fds[1]);
    }
    void open() {
        if (!std::exchange(m_open, true)) m_opened.set_value();
    }

private:
    std::promise<void> m_opened;
    bool m_open = false;
    std::atomic<bool> m_held{false};
    int m_fds[2] = {-1, -1};
    uint8_t m_byte = 0;
};

TEST(Block, AResetWithAReadInFlightStaysBusyUntilItLands) {
    TempImage img(64 * 1024);
    Harness h(Block::open({img.path, false, false, ""}).release_value());
    h.bring_up();

    // Hold the loop thread in a completion: the read's own completion waits behind it.
    LoopHold gate(*h.loop);

    BlkReq in{Block::kTypeIn, 0, 2};
    uint64_t hdr = h.drv.alloc(16, &in), data = h.drv.alloc(4096), st = h.drv.alloc(1);
    h.drv.add_chain({{hdr, 16, false}, {data, 4096, true}, {st, 1, true}});
    h.notify();
    wr32(*h.t, 0x70, 0);  // the driver resets the device
    {
        auto lock = h.t->hold();
        EXPECT_TRUE(h.t->busy_locked()) << "a read the reset orphaned is still in flight";
    }
    gate.open();
    EXPECT_TRUE(becomes_idle(*h.t));
    EXPECT_EQ(h.drv.used_idx(), 0) << "the orphaned read is not reported to the reset queue";
}

// virtio-fs leaves READ's and WRITE's I/O to the event loop's io_uring: the
// reply comes when it completes, a READ's data in the guest's buffers and
// only the out-header written before them.
TEST(Fs, ReadAndWriteAreAnsweredWhenTheirIoCompletes) {
    namespace stdfs = std::filesystem;
    stdfs::path dir = stdfs::temp_directory_path() / ("husk-fsdev-" + std::to_string(::getpid()));
    stdfs::remove_all(dir);
    stdfs::create_directories(dir / "share");
    std::ofstream(dir / "share/f") << "0123456789abcdef";
    auto fs = Fs::create({{"s", (dir / "share").string(), false}});
    ASSERT_TRUE(fs) << fs.error().message();
    Harness h(fs.release_value());
    FakeDriver req{h.mem, 16, 0x200000};
    h.bring_up_two(req);
    ASSERT_FALSE(rd32(*h.t, 0x70) & kStatusNeedsReset);

    uint64_t unique = 0;
    uint16_t sent = 0;
    // One request: its header and arguments (and a WRITE's data) readable, then the buffers for the reply.
    auto call = [&](uint32_t opcode, uint64_t node, std::vector<uint8_t> args, std::vector<uint8_t> data,
                    std::vector<uint32_t> out_sizes) {
        fuse_in_header head{};
        head.len = uint32_t(sizeof head + args.size() + data.size());
        head.opcode = opcode;
        head.unique = ++unique;
        head.nodeid = node;
        std::vector<uint8_t> in(sizeof head);
        std::memcpy(in.data(), &head, sizeof head);
        in.insert(in.end(), args.begin(), args.end());
        std::vector<Buffer> chain{{req.alloc(uint32_t(in.size()), in.data()), uint32_t(in.size()), false}};
        if (!data.empty())
            chain.push_back({req.alloc(uint32_t(data.size()), data.data()), uint32_t(data.size()), false});
        std::vector<uint64_t> outs;
        for (uint32_t size : out_sizes) {
            outs.push_back(req.alloc(size));
            chain.push_back({outs.back(), size, true});
        }
        req.add_chain(chain);
        wr32(*h.t, 0x50, 1);
        ++sent;
        return outs;
    };
    auto wait = [&] {
        for (int i = 0; i < 2000 && req.used_idx() < sent; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return req.used_idx() == sent;
    };
    auto bytes = [](const auto& v) {
        std::vector<uint8_t> b(sizeof v);
        std::memcpy(b.data(), &v, sizeof v);
        return b;
    };
    auto header = [&](uint64_t at) { return h.mem.read_obj<fuse_out_header>(at).value(); };

    fuse_init_in init{};
    init.major = FUSE_KERNEL_VERSION;
    init.minor = FUSE_KERNEL_MINOR_VERSION;
    auto o = call(FUSE_INIT, 0, bytes(init), {}, {sizeof(fuse_out_header) + sizeof(fuse_init_out)});
    ASSERT_TRUE(wait());
    ASSERT_EQ(header(o[0]).error, 0);
    auto lookup = [&](uint64_t parent, std::string name) {
        std::vector<uint8_t> n(name.begin(), name.end());
        n.push_back(0);
        auto at = call(FUSE_LOOKUP, parent, n, {}, {sizeof(fuse_out_header) + sizeof(fuse_entry_out)});
        EXPECT_TRUE(wait());
        EXPECT_EQ(header(at[0]).error, 0) << name;
        return h.mem.read_obj<fuse_entry_out>(at[0] + sizeof(fuse_out_header)).value().nodeid;
    };
    uint64_t file = lookup(lookup(FUSE_ROOT_ID, "s"), "f");
    fuse_open_in open_in{};
    open_in.flags = O_RDWR;
    o = call(FUSE_OPEN, file, bytes(open_in), {}, {sizeof(fuse_out_header) + sizeof(fuse_open_out)});
    ASSERT_TRUE(wait());
    uint64_t fh = h.mem.read_obj<fuse_open_out>(o[0] + sizeof(fuse_out_header)).value().fh;

    // A READ into a separate data buffer, as the Linux driver sends it.
    fuse_read_in r{};
    r.fh = fh;
    r.offset = 4;
    r.size = 6;
    o = call(FUSE_READ, file, bytes(r), {}, {sizeof(fuse_out_header), 64});
    ASSERT_TRUE(wait());
    EXPECT_TRUE(becomes_idle(*h.t)) << "nothing left in flight";
    EXPECT_EQ(req.used(uint16_t(sent - 1)).second, sizeof(fuse_out_header) + 6);
    EXPECT_EQ(header(o[0]).len, sizeof(fuse_out_header) + 6);
    EXPECT_EQ(header(o[0]).error, 0);
    char got[8] = {};
    ASSERT_FALSE(h.mem.read(o[1], std::span(reinterpret_cast<uint8_t*>(got), 8)).is_error());
    EXPECT_EQ(std::string(got, 8), std::string("456789") + std::string(2, '\0')) << "the data start right away";

    // A WRITE: its data written where asked, the reply its size.
    fuse_write_in w{};
    w.fh = fh;
    w.offset = 10;
    w.size = 3;
    o = call(FUSE_WRITE, file, bytes(w), {'X', 'Y', 'Z'}, {sizeof(fuse_out_header) + sizeof(fuse_write_out)});
    ASSERT_TRUE(wait());
    EXPECT_EQ(header(o[0]).error, 0);
    EXPECT_EQ(h.mem.read_obj<fuse_write_out>(o[0] + sizeof(fuse_out_header)).value().size, 3u);
    std::ifstream back(dir / "share/f");
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(back), {}), "0123456789XYZdef");
    stdfs::remove_all(dir);
}

// A TX frame on its way to the TAP holds a chain popped from the avail ring
// and not yet used: the device is busy, so a snapshot waits for it instead
// of saving a queue that lost the chain.
TEST(Net, ATxWriteInFlightKeepsTheDeviceBusy) {
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "needs /dev/net/tun";
    std::string tap = "hsknet" + std::to_string(::getpid() % 100000);
    auto net = Net::open({tap, {}});
    if (net.is_error()) GTEST_SKIP() << net.error().message() << " (needs CAP_NET_ADMIN)";
    Harness h(net.release_value());
    FakeDriver tx{h.mem, 16, 0x200000};
    h.bring_up_two(tx);
    ASSERT_FALSE(rd32(*h.t, 0x70) & kStatusNeedsReset);

    // Hold the loop thread in a completion, so the TAP write is submitted but not completed.
    LoopHold gate(*h.loop);

    uint8_t frame[Net::kHeaderSize + 60] = {};
    std::memset(frame + Net::kHeaderSize, 0xff, 6);  // broadcast
    uint64_t at = tx.alloc(sizeof frame, frame);
    tx.add_chain({{at, uint32_t(sizeof frame), false}});
    wr32(*h.t, 0x50, 1);
    {
        auto lock = h.t->hold();
        EXPECT_TRUE(h.t->busy_locked()) << "a TX write in flight was not reported busy";
    }
    gate.open();
    EXPECT_TRUE(becomes_idle(*h.t));
    for (int i = 0; i < 2000 && tx.used_idx() < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(tx.used_idx(), 1) << "the frame's chain was given back once written";
}

TEST(Block, OpenErrorsNameThePath) {
    auto r = Block::open({"/nonexistent/disk.img", false, false, ""});
    ASSERT_TRUE(r.is_error());
    EXPECT_EQ(r.error().message(), "open drive: open `/nonexistent/disk.img`: No such file or directory");
    EXPECT_TRUE(Block::open({"/dev/null", false, false, ""}).is_error());
}

}  // namespace
}  // namespace husk::virtio
