// Split virtqueue (virtio 1.2 §2.7), device side. Everything read from guest
// memory is hostile: ring indices, descriptor addresses, lengths and flags are
// checked, and a chain is bounded by the queue size. A violation returns an
// error; the transport then marks the device DEVICE_NEEDS_RESET (§2.1.2).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/memory/guest_memory.h"

namespace husk::virtio {

inline constexpr uint16_t kDescFlagNext = 1;
inline constexpr uint16_t kDescFlagWrite = 2;
inline constexpr uint16_t kDescFlagIndirect = 4;
inline constexpr uint16_t kAvailFlagNoInterrupt = 1;
inline constexpr uint16_t kMaxQueueSize = 32768;  // §2.7: Queue Size is at most 32768

// One buffer of a chain: a range of guest memory the device reads or writes.
struct Buffer {
    uint64_t addr;  // guest-physical, checked to lie in guest RAM
    uint32_t len;
    bool device_writable;
};

// A popped descriptor chain: its head index (returned in the used ring) and
// its buffers, device-readable ones first (§2.7.4.2). Move-only.
class DescriptorChain {
public:
    DescriptorChain(uint16_t head, std::vector<Buffer> buffers) : m_head(head), m_buffers(std::move(buffers)) {}
    DescriptorChain(DescriptorChain&&) = default;
    DescriptorChain& operator=(DescriptorChain&&) = default;
    DescriptorChain(const DescriptorChain&) = delete;
    DescriptorChain& operator=(const DescriptorChain&) = delete;

    uint16_t head() const { return m_head; }
    const std::vector<Buffer>& buffers() const { return m_buffers; }
    uint64_t readable_bytes() const;
    uint64_t writable_bytes() const;

private:
    uint16_t m_head;
    std::vector<Buffer> m_buffers;
};

// Writes `bytes` across a chain's device-writable buffers, in order; returns how
// many fitted. The buffers were bounds-checked when the chain was popped.
uint32_t write_to_chain(const GuestMemory& mem, const DescriptorChain& chain, std::span<const uint8_t> bytes);

class Queue {
public:
    explicit Queue(uint16_t max_size) : m_max_size(max_size), m_size(max_size) {}

    // Set by the transport while the driver configures the queue.
    uint16_t max_size() const { return m_max_size; }
    uint16_t size() const { return m_size; }
    void set_size(uint16_t size) { m_size = size; }
    void set_desc_table(uint64_t addr) { m_desc_table = addr; }
    void set_avail_ring(uint64_t addr) { m_avail_ring = addr; }
    void set_used_ring(uint64_t addr) { m_used_ring = addr; }
    uint64_t desc_table() const { return m_desc_table; }
    uint64_t avail_ring() const { return m_avail_ring; }
    uint64_t used_ring() const { return m_used_ring; }
    bool ready() const { return m_ready; }
    void set_ready(bool ready) { m_ready = ready; }
    void set_event_idx(bool on) { m_event_idx = on; }

    // Checks size (a power of 2, §2.7) and that the three areas lie in guest RAM, aligned.
    Result<void> validate(const GuestMemory& mem) const;

    // The next available chain, or nullopt when the driver has offered none.
    Result<std::optional<DescriptorChain>> pop(const GuestMemory& mem);
    // Returns a chain to the driver with `written` bytes written into its writable buffers.
    Result<void> add_used(const GuestMemory& mem, uint16_t head, uint32_t written);
    // Whether the driver wants an interrupt for the used buffers added since the last call
    // (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event with VIRTIO_F_EVENT_IDX: §2.7.10).
    Result<bool> should_notify(const GuestMemory& mem);

    // Notification suppression while the device is busy anyway (§2.7.7, §2.7.10):
    // disabled, the driver stops kicking (VIRTQ_USED_F_NO_NOTIFY, or avail_event
    // left behind with EVENT_IDX) and the device polls the ring itself.
    Result<void> disable_notifications(const GuestMemory& mem);
    // Re-enables kicks; returns true if the driver added buffers meanwhile (poll again).
    Result<bool> enable_notifications(const GuestMemory& mem);

    // Asks for a notification when the driver next adds a buffer, even with
    // buffers still pending (EVENT_IDX: avail_event = the driver's avail index).
    // Returns that avail index.
    Result<uint16_t> notify_on_next_buffer(const GuestMemory& mem);
    // The driver's avail index as it is in guest memory now.
    Result<uint16_t> avail_index(const GuestMemory& mem) const;

    // Back to the state after a device reset (§2.4).
    void reset();

    // For snapshots and tests.
    uint16_t next_avail() const { return m_next_avail; }
    uint16_t next_used() const { return m_next_used; }
    void set_indices(uint16_t next_avail, uint16_t next_used) {
        m_next_avail = next_avail;
        m_next_used = next_used;
        m_signalled_used = next_used;
    }

private:
    Result<void> walk(const GuestMemory& mem, uint16_t head, std::vector<Buffer>& out) const;

    uint16_t m_max_size;
    uint16_t m_size;
    bool m_ready = false;
    bool m_event_idx = false;
    uint64_t m_desc_table = 0, m_avail_ring = 0, m_used_ring = 0;
    uint16_t m_next_avail = 0;
    uint16_t m_next_used = 0;
    uint16_t m_signalled_used = 0;
    bool m_notifications = true;
};

}  // namespace husk::virtio
