// What the virtio fuzz targets share: a small guest memory, the real io_uring
// event loop on its own thread, and a driver that takes its every move from
// the fuzzer's bytes.
//
// One input is:
//   u8  flags      bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bit 2 accept every
//                  device feature, bit 3 skip the orderly bring-up (raw
//                  register writes only), bits 4-5 queue size 16 << n
//   u16 image_len  then that many bytes (at most 32 KiB), copied to guest
//                  address 0x10000: the rings (ring_layout: queue q of size n
//                  at 0x10000 + q * 32n, descriptors first, then avail, then
//                  used) and, after four queues' rings, the data
//   ops            7 bytes each: u8 kind, u16 offset, u32 value
//                  kind % 5: 0 32-bit register write, 1 write of width
//                  1 << (kind / 5 % 4), 2 read of that width, 3 notify queue
//                  (value % 4), 4 poke a u32 into the image at offset
// Every queue is notified at the end; the device is then reset and destroyed.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "vmm/base/log.h"
#include "vmm/devices/virtio/device.h"
#include "vmm/devices/virtio/mmio/mmio_transport.h"
#include "vmm/io/event_loop.h"
#include "vmm/memory/guest_memory.h"

namespace husk::fuzz {

inline constexpr uint64_t kGuestRam = 256 << 10;  // small: fuzzed addresses often fall outside it
inline constexpr uint64_t kImageBase = 0x10000;
inline constexpr size_t kMaxImage = 0x8000;

// Where queue `q` of `size` entries keeps its rings in the image.
struct RingLayout {
    uint64_t desc, avail, used;
};
inline RingLayout ring_layout(uint32_t q, uint32_t size) {
    uint64_t base = kImageBase + uint64_t(q) * 32 * size;
    uint64_t avail = base + 16ull * size;
    return {base, avail, (avail + 6 + 2ull * size + 3) & ~3ull};
}

class VirtioHarness {
public:
    static VirtioHarness& get() {
        // Never destroyed: its loop thread runs until the process ends.
        static VirtioHarness* h = new VirtioHarness;
        return *h;
    }

    const GuestMemory& memory() const { return m_memory; }

    void run(std::unique_ptr<virtio::VirtioDevice> device, const uint8_t* data, size_t size) {
        if (size < 3) return;
        uint8_t flags = data[0];
        size_t image_len = std::min<size_t>(size_t(data[1]) | size_t(data[2]) << 8, kMaxImage);
        data += 3;
        size -= 3;
        image_len = std::min(image_len, size);
        std::memset(m_ram, 0, kGuestRam);
        std::memcpy(m_ram + kImageBase, data, image_len);
        data += image_len;
        size -= image_len;

        size_t queues = device->queue_max_sizes().size();
        virtio::MmioTransport t(std::move(device), "fuzz", m_memory, *m_loop, 5);
        if (!(flags & 8)) bring_up(t, flags, queues);
        for (; size >= 7; data += 7, size -= 7) {
            uint8_t kind = data[0];
            uint16_t offset;
            uint32_t value;
            std::memcpy(&offset, data + 1, 2);
            std::memcpy(&value, data + 3, 4);
            size_t width = size_t(1) << (kind / 5 % 4);
            uint8_t bytes[8] = {};
            std::memcpy(bytes, &value, 4);
            switch (kind % 5) {
                case 0:
                    w32(t, offset & 0x1ff, value);
                    break;
                case 1:
                    t.write(offset & 0x1ff, std::span<const uint8_t>(bytes, width));
                    break;
                case 2:
                    t.read(offset & 0x1ff, std::span<uint8_t>(bytes, width));
                    break;
                case 3:
                    w32(t, virtio::MmioTransport::kNotifyOffset, value % 4);
                    break;
                case 4:
                    std::memcpy(m_ram + kImageBase + offset % (kMaxImage - 4), &value, 4);
                    break;
            }
        }
        for (uint32_t q = 0; q < queues; ++q) w32(t, virtio::MmioTransport::kNotifyOffset, q);
        // Host I/O the requests started (a reset's orphans too) finishes
        // before the device goes: its completions use the device. Never
        // finishing is a finding.
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        for (;;) {
            {
                auto held = t.hold();
                if (!t.busy_locked()) break;
            }
            if (std::chrono::steady_clock::now() > deadline) {
                std::fprintf(stderr, "fuzz: the device's host I/O did not finish within 10 s\n");
                std::abort();
            }
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
        w32(t, 0x70, 0);
        drain();
    }

    // A transport's snapshot state (registers, queues, the device's own) loaded into a fresh device.
    void load_state(std::unique_ptr<virtio::VirtioDevice> device, std::string_view bytes) {
        virtio::MmioTransport t(std::move(device), "fuzz", m_memory, *m_loop, 5);
        (void)t.load_state(bytes);
        w32(t, 0x70, 0);
        drain();
    }

private:
    VirtioHarness()
        : m_memory(GuestMemory::create(kGuestRam).release_value()),
          m_loop(EventLoop::create().release_value()),
          m_thread([this] { m_loop->run(); }) {
        // A device that refuses a chain says so once per input: keep the fuzzer's output clean.
        log::configure("fuzz", log::Level::Error, log::Format::Text);
        m_ram = m_memory.host_base();
        if (::pipe2(m_barrier, O_CLOEXEC) < 0) std::abort();
    }

    // Returns once the loop has run two full turns: work a device deferred
    // to the end of a turn (an interrupt for a batch) is done before it goes.
    void drain() {
        for (int turn = 0; turn < 2; ++turn) {
            std::atomic<bool> done{false};
            uint8_t byte = 0;
            auto r = m_loop->submit([&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, m_barrier[0], &byte, 1, 0); },
                                    [&](int) { done = true; });
            if (!r) std::abort();
            if (::write(m_barrier[1], "x", 1) != 1) std::abort();
            while (!done) std::this_thread::yield();
        }
    }

    static void w32(virtio::MmioTransport& t, uint64_t offset, uint32_t value) {
        uint8_t b[4];
        std::memcpy(b, &value, 4);
        t.write(offset, b);
    }

    // The Linux driver's order (§3.1.1), features and queue sizes from the flags.
    static void bring_up(virtio::MmioTransport& t, uint8_t flags, size_t queues) {
        w32(t, 0x70, virtio::kStatusAcknowledge);
        w32(t, 0x70, virtio::kStatusAcknowledge | virtio::kStatusDriver);
        uint64_t offered = 0;
        for (uint32_t sel = 0; sel < 2; ++sel) {
            w32(t, 0x14, sel);
            uint8_t b[4];
            t.read(0x10, b);
            uint32_t v;
            std::memcpy(&v, b, 4);
            offered |= uint64_t(v) << (32 * sel);
        }
        uint64_t want = virtio::kFeatureVersion1;
        if (flags & 1) want |= virtio::kFeatureEventIdx;
        if (flags & 2) want |= virtio::kFeatureIndirectDesc;
        if (flags & 4) want |= offered;
        want &= offered;
        for (uint32_t sel = 0; sel < 2; ++sel) {
            w32(t, 0x24, sel);
            w32(t, 0x20, uint32_t(want >> (32 * sel)));
        }
        w32(t, 0x70, virtio::kStatusAcknowledge | virtio::kStatusDriver | virtio::kStatusFeaturesOk);
        uint32_t size = 16u << ((flags >> 4) & 3);
        for (uint32_t q = 0; q < queues; ++q) {
            RingLayout rings = ring_layout(q, size);
            w32(t, 0x30, q);
            w32(t, 0x38, size);
            w32(t, 0x80, uint32_t(rings.desc));
            w32(t, 0x84, 0);
            w32(t, 0x90, uint32_t(rings.avail));
            w32(t, 0x94, 0);
            w32(t, 0xa0, uint32_t(rings.used));
            w32(t, 0xa4, 0);
            w32(t, 0x44, 1);
        }
        w32(t, 0x70,
            virtio::kStatusAcknowledge | virtio::kStatusDriver | virtio::kStatusFeaturesOk | virtio::kStatusDriverOk);
    }

    GuestMemory m_memory;
    std::unique_ptr<EventLoop> m_loop;
    std::thread m_thread;
    uint8_t* m_ram = nullptr;
    int m_barrier[2] = {-1, -1};
};

}  // namespace husk::fuzz
