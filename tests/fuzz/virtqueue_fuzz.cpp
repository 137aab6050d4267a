// The split virtqueue's device side on its own: descriptor tables, avail
// rings, indirect tables and chains written by the fuzzer, popped and
// returned until the queue is empty or refuses.
//   u8 flags (bit 0 EVENT_IDX, bits 1-3 queue size 1 << n, a non-power of two
//   when bit 4 is set), then guest memory from 0x10000 (the rings as
//   ring_layout places queue 0's, data after).
#include <cstring>

#include "tests/fuzz/virtio_harness.h"
#include "vmm/devices/virtio/queue/queue.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace husk;
    static GuestMemory memory = GuestMemory::create(fuzz::kGuestRam).release_value();
    if (size < 1) return 0;
    uint8_t* ram = memory.host_base();
    std::memset(ram, 0, fuzz::kGuestRam);
    size_t image = std::min(size - 1, fuzz::kMaxImage);
    std::memcpy(ram + fuzz::kImageBase, data + 1, image);

    uint16_t qsize = uint16_t(1u << ((data[0] >> 1) & 7));
    if (data[0] & 16) qsize = uint16_t(qsize + 3);
    virtio::Queue q(256);
    q.set_size(qsize);
    auto rings = fuzz::ring_layout(0, qsize);
    q.set_desc_table(rings.desc);
    q.set_avail_ring(rings.avail);
    q.set_used_ring(rings.used);
    q.set_event_idx(data[0] & 1);
    if (q.validate(memory).is_error()) return 0;
    q.set_ready(true);
    uint8_t reply[64];
    std::memset(reply, 0xa5, sizeof reply);
    for (int i = 0; i < 1024; ++i) {
        auto chain = q.pop(memory);
        if (!chain || !chain.value()) break;
        const auto& c = *chain.value();
        (void)c.readable_bytes();
        uint32_t written = virtio::write_to_chain(memory, c, reply);
        if (q.add_used(memory, c.head(), written).is_error()) break;
    }
    (void)q.should_notify(memory);
    (void)q.enable_notifications(memory);
    return 0;
}
