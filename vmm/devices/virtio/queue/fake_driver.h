// FakeDriver: the driver side of one split virtqueue in a GuestMemory, for
// unit tests of the queue and of devices. It can also write malformed chains.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "vmm/devices/io_device.h"
#include "vmm/devices/virtio/queue/queue.h"
#include "vmm/memory/guest_memory.h"

namespace husk::virtio::testing {

struct RawDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

// 32-bit register access as a guest driver does it.
inline void mmio_write32(IoDevice& dev, uint64_t offset, uint32_t value) {
    uint8_t b[4];
    std::memcpy(b, &value, 4);
    dev.write(offset, b);
}
inline uint32_t mmio_read32(IoDevice& dev, uint64_t offset) {
    uint8_t b[4];
    dev.read(offset, b);
    uint32_t v;
    std::memcpy(&v, b, 4);
    return v;
}

class FakeDriver {
public:
    // Rings at `base`, data buffers allocated from `base + 64 KiB` upwards.
    FakeDriver(const GuestMemory& mem, uint16_t size, uint64_t base = 0x10000)
        : m_mem(mem),
          m_size(size),
          m_desc(base),
          m_avail(base + 16ull * size),
          m_used((m_avail + 6 + 2ull * size + 3) & ~3ull),
          m_next_data(base + 0x10000) {}

    void configure(Queue& q, bool event_idx = false) const {
        q.set_size(m_size);
        q.set_desc_table(m_desc);
        q.set_avail_ring(m_avail);
        q.set_used_ring(m_used);
        q.set_event_idx(event_idx);
        q.set_ready(true);
    }

    // A guest buffer of `len` bytes (optionally filled), 16-byte aligned.
    uint64_t alloc(uint32_t len, const void* fill = nullptr) {
        uint64_t at = m_next_data;
        m_next_data += (len + 15) & ~15u;
        if (fill) (void)m_mem.write(at, std::span(static_cast<const uint8_t*>(fill), len));
        return at;
    }

    void write_desc(uint16_t index, RawDesc d) { (void)m_mem.write_obj(m_desc + 16ull * index, d); }

    // Writes descriptors [first, first+n) chained in order and publishes `first`.
    uint16_t add_chain(const std::vector<Buffer>& bufs) {
        uint16_t first = m_next_desc;
        for (size_t i = 0; i < bufs.size(); ++i) {
            uint16_t idx = uint16_t((first + i) % m_size);
            uint16_t flags =
                uint16_t((bufs[i].device_writable ? kDescFlagWrite : 0) | (i + 1 < bufs.size() ? kDescFlagNext : 0));
            write_desc(idx, {bufs[i].addr, bufs[i].len, flags, uint16_t((idx + 1) % m_size)});
        }
        m_next_desc = uint16_t((first + bufs.size()) % m_size);
        publish(first);
        return first;
    }

    void publish(uint16_t head) {
        uint16_t idx = avail_idx();
        (void)m_mem.write_obj<uint16_t>(m_avail + 4 + 2ull * (idx % m_size), head);
        (void)m_mem.write_obj<uint16_t>(m_avail + 2, uint16_t(idx + 1));
    }
    void set_avail_idx(uint16_t v) { (void)m_mem.write_obj<uint16_t>(m_avail + 2, v); }
    uint16_t avail_idx() const { return m_mem.read_obj<uint16_t>(m_avail + 2).value(); }
    void set_avail_flags(uint16_t f) { (void)m_mem.write_obj<uint16_t>(m_avail, f); }
    void set_used_event(uint16_t v) { (void)m_mem.write_obj<uint16_t>(m_avail + 4 + 2ull * m_size, v); }

    uint16_t used_idx() const { return m_mem.read_obj<uint16_t>(m_used + 2).value(); }
    // The used element at ring position `i`: {id, len}.
    std::pair<uint32_t, uint32_t> used(uint16_t i) const {
        uint64_t at = m_used + 4 + 8ull * (i % m_size);
        return {m_mem.read_obj<uint32_t>(at).value(), m_mem.read_obj<uint32_t>(at + 4).value()};
    }
    uint16_t avail_event() const { return m_mem.read_obj<uint16_t>(m_used + 4 + 8ull * m_size).value(); }

    uint64_t desc_table() const { return m_desc; }

private:
    const GuestMemory& m_mem;
    uint16_t m_size;
    uint64_t m_desc, m_avail, m_used, m_next_data;
    uint16_t m_next_desc = 0;
};

// Sets queue `index` of a virtio-mmio device up on `d`'s rings, as a driver does through the registers
// (QueueSel, QueueNum, the ring addresses, QueueReady).
inline void setup_queue(IoDevice& dev, uint32_t index, const FakeDriver& d) {
    Queue shadow(256);
    d.configure(shadow);
    mmio_write32(dev, 0x30, index);
    mmio_write32(dev, 0x38, shadow.size());
    mmio_write32(dev, 0x80, uint32_t(shadow.desc_table()));
    mmio_write32(dev, 0x90, uint32_t(shadow.avail_ring()));
    mmio_write32(dev, 0xa0, uint32_t(shadow.used_ring()));
    mmio_write32(dev, 0x44, 1);
}

}  // namespace husk::virtio::testing
