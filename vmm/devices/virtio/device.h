// VirtioDevice: what a virtio device implements; the transport (mmio/) does
// feature negotiation, queue setup, status and interrupts (virtio 1.2 §2, §4.2).
//
// One folder per device: <dev>.h/.cpp the device (its queues and the
// driver's requests); event_handler.cpp its host side on the event loop where
// that is more than a completion callback (vsock's sockets); persist.cpp its
// typed, versioned persisted state (persist.h).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/devices/virtio/queue/queue.h"
#include "vmm/memory/guest_memory.h"

namespace husk {
class EventLoop;
}

namespace husk::virtio {

// Device types (§5).
inline constexpr uint32_t kTypeNet = 1, kTypeBlock = 2, kTypeRng = 4, kTypeBalloon = 5, kTypeVsock = 19;

// Reserved feature bits (§6) the transport offers for every device.
inline constexpr uint64_t kFeatureIndirectDesc = 1ull << 28;
inline constexpr uint64_t kFeatureEventIdx = 1ull << 29;
inline constexpr uint64_t kFeatureVersion1 = 1ull << 32;

// What an activated device works with. All callbacks are safe from the event loop thread.
struct DeviceContext {
    const GuestMemory* memory = nullptr;
    EventLoop* loop = nullptr;
    // Tells the driver used buffers are ready (sets InterruptStatus bit 0, fires the irqfd).
    std::function<void()> signal_used;
    // Tells the driver the configuration space changed (§2.5.1: InterruptStatus bit 1).
    std::function<void()> signal_config;
    // The driver broke the rules: DEVICE_NEEDS_RESET (§2.1.2); the device stops processing.
    std::function<void(const Error&)> fail;
    // Serialises device work with the transport (register access on vCPU threads).
    std::mutex* lock = nullptr;
};

// The quiesce contract. What a snapshot, a reset and husk-vmm's exit rely on
// from every device with host I/O (block, net, vsock), all with ctx.lock held:
// - busy(): host I/O submitted whose completion will still read or write
//   guest memory or a queue (block's reads and writes, net's TX writev).
//   Snapshot and reset wait, device locks held, until no device is busy.
//   A device that copies under its lock and only polls its host fds
//   (vsock, net's RX into its own buffer) is never busy.
// - reset(): the device forgets its guest-visible state; a completion still in
//   flight lands in nothing (generation counters), and every host connection
//   is shut down so its peer sees EOF.
// - has_pending_output(): guest data accepted but not yet handed to the host;
//   husk-vmm's exit waits for it (at most 2 s).
// - save_state()/load_state(), then restored(): the persisted state, and what
//   cannot survive a restore (host connections) dropped after it.
// Devices without host I/O (rng, balloon) keep the defaults.
class VirtioDevice {
public:
    virtual ~VirtioDevice() = default;

    virtual uint32_t device_type() const = 0;
    // Device-specific feature bits; the transport adds VERSION_1, EVENT_IDX and INDIRECT_DESC.
    virtual uint64_t device_features() const = 0;
    virtual std::vector<uint16_t> queue_max_sizes() const = 0;

    // Device configuration space (§4.2.2 offset 0x100+). guest-controlled offset and width.
    virtual void read_config(uint64_t offset, std::span<uint8_t> data) const = 0;
    virtual void write_config(uint64_t /*offset*/, std::span<const uint8_t> /*data*/) {}

    // DRIVER_OK: features are final and the queues are valid. Called with ctx.lock held.
    virtual Result<void> activate(uint64_t features, std::span<Queue> queues, DeviceContext ctx) = 0;
    // The driver notified queue `index`. Event loop thread, ctx.lock held.
    virtual void queue_notify(size_t index) = 0;
    // Device reset (status 0): drop all state; in-flight I/O completes into nothing. ctx.lock held.
    virtual void reset() = 0;
    // Guest data accepted but not yet handed to the host (a socket that was
    // slow to read); the VMM lets it drain before it exits. ctx.lock held.
    virtual bool has_pending_output() const { return false; }

    // Snapshots (ctx.lock held). What the device keeps beyond the transport's
    // registers and queue positions; load_state runs after re-activation.
    virtual std::string save_state() const { return {}; }
    virtual Result<void> load_state(std::string_view bytes) {
        if (!bytes.empty()) return Error::from_string("unexpected device state");
        return {};
    }
    // Host I/O submitted and not yet completed; snapshots wait for none.
    virtual bool busy() const { return false; }
    // After load_state: drop what cannot survive a restore (host connections).
    virtual void restored() {}
};

// Interrupts the driver if it wants to hear about the used buffers added to `queue`
// (§2.7.10); a broken ring fails the device instead.
inline void notify_if_wanted(Queue& queue, const DeviceContext& ctx) {
    auto notify = queue.should_notify(*ctx.memory);
    if (notify.is_error()) return ctx.fail(notify.error());
    if (notify.value()) ctx.signal_used();
}

// Copies `data` into the config space image `config` at `offset`, bounds-checked.
inline void read_config_bytes(std::span<const uint8_t> config, uint64_t offset, std::span<uint8_t> data) {
    for (size_t i = 0; i < data.size(); ++i) data[i] = offset + i < config.size() ? config[offset + i] : 0;
}

}  // namespace husk::virtio
