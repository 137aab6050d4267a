#include "vmm/devices/virtio/queue/queue.h"

#include <fmt/format.h>

#include <atomic>
#include <cstring>

namespace husk::virtio {
namespace {

struct Desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
static_assert(sizeof(Desc) == 16);

Error queue_error(const std::string& what) {
    return Error::from_string("virtqueue: " + what, EPROTO);
}

}  // namespace

uint64_t DescriptorChain::readable_bytes() const {
    uint64_t n = 0;
    for (const auto& b : m_buffers)
        if (!b.device_writable) n += b.len;
    return n;
}

uint64_t DescriptorChain::writable_bytes() const {
    uint64_t n = 0;
    for (const auto& b : m_buffers)
        if (b.device_writable) n += b.len;
    return n;
}

uint32_t write_to_chain(const GuestMemory& mem, const DescriptorChain& chain, std::span<const uint8_t> bytes) {
    size_t off = 0;
    for (const auto& b : chain.buffers()) {
        if (!b.device_writable || off == bytes.size()) continue;
        size_t n = std::min<size_t>(b.len, bytes.size() - off);
        (void)mem.write(b.addr, bytes.subspan(off, n));
        off += n;
    }
    return uint32_t(off);
}

Result<void> Queue::validate(const GuestMemory& mem) const {
    if (m_size == 0 || m_size > m_max_size || (m_size & (m_size - 1)) != 0)
        return queue_error(fmt::format("size {} is not a power of 2 up to {}", m_size, m_max_size));
    // §2.7: descriptor table 16-byte aligned, available ring 2, used ring 4.
    if (m_desc_table % 16 || m_avail_ring % 2 || m_used_ring % 4) return queue_error("misaligned ring");
    uint64_t n = m_size;
    if (!mem.contains(m_desc_table, 16 * n)) return queue_error("descriptor table outside guest RAM");
    if (!mem.contains(m_avail_ring, 6 + 2 * n)) return queue_error("available ring outside guest RAM");
    if (!mem.contains(m_used_ring, 6 + 8 * n)) return queue_error("used ring outside guest RAM");
    return {};
}

Result<void> Queue::walk(const GuestMemory& mem, uint16_t head, std::vector<Buffer>& out) const {
    // One chain holds at most `size` descriptors, counting those of an indirect
    // table: a longer walk means a loop or a driver bug (§2.7.5.3.1).
    uint32_t budget = m_size;
    bool seen_writable = false;
    auto take = [&](const Desc& d) -> Result<void> {
        bool writable = d.flags & kDescFlagWrite;
        if (!writable && seen_writable) return queue_error("device-readable descriptor after a writable one");
        seen_writable |= writable;
        if (d.len == 0) return {};  // nothing to transfer; harmless
        TRY(mem.slice(d.addr, d.len).context("virtqueue buffer"));
        out.push_back({d.addr, d.len, writable});
        return {};
    };

    uint16_t index = head;
    for (;;) {
        if (index >= m_size) return queue_error(fmt::format("descriptor index {} out of range", index));
        if (budget-- == 0) return queue_error("descriptor chain longer than the queue (a loop?)");
        auto d = TRY(mem.read_obj<Desc>(m_desc_table + uint64_t(index) * sizeof(Desc)));
        if (d.flags & kDescFlagIndirect) {
            // §2.7.5.3.1: no NEXT together with INDIRECT, whole descriptors, no nesting.
            if (d.flags & kDescFlagNext) return queue_error("indirect descriptor with NEXT set");
            if (d.len == 0 || d.len % sizeof(Desc)) return queue_error("indirect table of a bad length");
            uint32_t count = d.len / uint32_t(sizeof(Desc));
            if (count > budget + 1u) return queue_error("indirect table longer than the queue");
            auto table = TRY(mem.slice(d.addr, d.len).context("indirect descriptor table"));
            uint32_t i = 0;
            for (uint32_t steps = 0;; ++steps) {
                if (steps >= count) return queue_error("indirect chain loops");
                Desc id;
                std::memcpy(&id, table.data() + size_t(i) * sizeof(Desc), sizeof id);
                if (id.flags & kDescFlagIndirect) return queue_error("nested indirect descriptor");
                TRY(take(id));
                if (!(id.flags & kDescFlagNext)) break;
                if (id.next >= count) return queue_error("indirect descriptor index out of range");
                i = id.next;
            }
            return {};  // an indirect descriptor ends the chain
        }
        TRY(take(d));
        if (!(d.flags & kDescFlagNext)) return {};
        index = d.next;
    }
}

Result<std::optional<DescriptorChain>> Queue::pop(const GuestMemory& mem) {
    auto avail_idx = TRY(mem.read_obj<uint16_t>(m_avail_ring + 2));
    // The ring entries were written before the index (§2.7.13): read them after it.
    std::atomic_thread_fence(std::memory_order_acquire);
    uint16_t pending = uint16_t(avail_idx - m_next_avail);
    if (pending == 0) return std::optional<DescriptorChain>();
    if (pending > m_size)
        return queue_error(fmt::format("available index moved by {} on a queue of {}", pending, m_size));
    uint64_t slot = m_avail_ring + 4 + 2 * uint64_t(m_next_avail % m_size);
    auto head = TRY(mem.read_obj<uint16_t>(slot));
    std::vector<Buffer> buffers;
    TRY(walk(mem, head, buffers));
    ++m_next_avail;
    if (m_event_idx && m_notifications) {
        // avail_event (§2.7.10): notify us again once the driver goes past this index.
        TRY(mem.write_obj<uint16_t>(m_used_ring + 4 + 8 * uint64_t(m_size), m_next_avail));
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }
    return std::optional<DescriptorChain>(DescriptorChain(head, std::move(buffers)));
}

Result<void> Queue::add_used(const GuestMemory& mem, uint16_t head, uint32_t written) {
    uint64_t elem = m_used_ring + 4 + 8 * uint64_t(m_next_used % m_size);
    struct {
        uint32_t id, len;
    } e{head, written};
    TRY(mem.write_obj(elem, e));
    // The element must be visible before the index that publishes it (§2.7.8).
    std::atomic_thread_fence(std::memory_order_release);
    ++m_next_used;
    TRY(mem.write_obj<uint16_t>(m_used_ring + 2, m_next_used));
    return {};
}

Result<bool> Queue::should_notify(const GuestMemory& mem) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    uint16_t old_used = m_signalled_used, new_used = m_next_used;
    m_signalled_used = new_used;
    if (m_event_idx) {
        auto used_event = TRY(mem.read_obj<uint16_t>(m_avail_ring + 4 + 2 * uint64_t(m_size)));
        // vring_need_event(): notify if used_event lies in (old_used, new_used].
        return uint16_t(new_used - used_event - 1) < uint16_t(new_used - old_used);
    }
    auto flags = TRY(mem.read_obj<uint16_t>(m_avail_ring));
    return old_used != new_used && !(flags & kAvailFlagNoInterrupt);
}

Result<void> Queue::disable_notifications(const GuestMemory& mem) {
    if (!m_notifications) return {};
    m_notifications = false;
    // With EVENT_IDX, avail_event simply stays behind; without it, the used ring flag says so.
    if (!m_event_idx) TRY(mem.write_obj<uint16_t>(m_used_ring, 1));
    return {};
}

Result<bool> Queue::enable_notifications(const GuestMemory& mem) {
    m_notifications = true;
    if (m_event_idx)
        TRY(mem.write_obj<uint16_t>(m_used_ring + 4 + 8 * uint64_t(m_size), m_next_avail));
    else
        TRY(mem.write_obj<uint16_t>(m_used_ring, 0));
    // The driver may have added buffers before it could see the change (§2.7.10).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    auto avail_idx = TRY(mem.read_obj<uint16_t>(m_avail_ring + 2));
    return avail_idx != m_next_avail;
}

Result<uint16_t> Queue::avail_index(const GuestMemory& mem) const {
    return mem.read_obj<uint16_t>(m_avail_ring + 2);
}

Result<uint16_t> Queue::notify_on_next_buffer(const GuestMemory& mem) {
    m_notifications = true;
    auto avail_idx = TRY(avail_index(mem));
    if (m_event_idx)
        TRY(mem.write_obj<uint16_t>(m_used_ring + 4 + 8 * uint64_t(m_size), avail_idx));
    else
        TRY(mem.write_obj<uint16_t>(m_used_ring, 0));
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return avail_idx;
}

void Queue::reset() {
    m_notifications = true;
    m_size = m_max_size;
    m_ready = false;
    m_event_idx = false;
    m_desc_table = m_avail_ring = m_used_ring = 0;
    m_next_avail = m_next_used = m_signalled_used = 0;
}

}  // namespace husk::virtio
