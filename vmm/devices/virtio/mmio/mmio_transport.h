// virtio-mmio transport, version 2 (virtio 1.2 §4.2): one 4 KiB register
// window per device, declared to Linux as virtio_mmio.device=4K@ADDR:IRQ.
// Queue notifications go through an ioeventfd per queue (no exit to user
// space); interrupts leave through an irqfd.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"
#include "vmm/base/wire.h"
#include "vmm/devices/io_device.h"
#include "vmm/devices/virtio/device.h"

namespace husk {
class Vm;
class EventLoop;
}  // namespace husk

namespace husk::virtio {

// Device status bits (§2.1).
inline constexpr uint32_t kStatusAcknowledge = 1, kStatusDriver = 2, kStatusDriverOk = 4, kStatusFeaturesOk = 8,
                          kStatusNeedsReset = 64, kStatusFailed = 128;

// What a snapshot keeps of a virtio-mmio device (persist.h): the transport's
// registers, each queue's addresses and ring positions, and the device's own
// persisted state (empty unless the driver had it running).
struct MmioState {
    static constexpr uint32_t kVersion = 1;
    static constexpr const char* kName = "virtio-mmio state";
    struct QueueState {
        uint16_t size = 0;
        bool ready = false;
        uint64_t desc_table = 0, avail_ring = 0, used_ring = 0;
        uint16_t next_avail = 0, next_used = 0;
    };
    uint32_t device_type = 0;
    uint32_t status = 0;
    uint64_t driver_features = 0;
    uint32_t device_features_sel = 0, driver_features_sel = 0, queue_sel = 0;
    uint32_t interrupt_status = 0;
    uint32_t config_generation = 0;
    std::vector<QueueState> queues;
    std::string device;  // the device's own persist() bytes
    void encode(wire::Writer& w) const;
    static MmioState decode(wire::Reader& r);
};

class MmioTransport final : public IoDevice {
public:
    static constexpr uint64_t kWindowSize = 0x1000;
    static constexpr uint64_t kNotifyOffset = 0x50;

    // `id`: the device's stable name, which its snapshot state carries (snapshot::DeviceState).
    MmioTransport(std::unique_ptr<VirtioDevice> device, std::string id, const GuestMemory& memory, EventLoop& loop,
                  uint32_t gsi);
    const std::string& id() const { return m_id; }

    // Registers one ioeventfd per queue at base+QueueNotify (matching the queue
    // index) and the irqfd on the GSI. Call once the window's base is known.
    Result<void> attach(Vm& vm, uint64_t base);
    // For the kernel command line.
    std::string cmdline_entry(uint64_t base) const;

    // An unplugged device is a placeholder (§4.2.2: device ID 0) that the
    // guest's driver leaves alone: its registers read as zero but for the
    // magic and version, and writes are ignored. plug() shows the device; the
    // guest then probes its window again (the agent binds it, agent/network.h).
    void set_unplugged() {
        std::lock_guard guard(m_lock);
        m_unplugged = true;
    }
    bool plug() {
        std::lock_guard guard(m_lock);
        return std::exchange(m_unplugged, false);
    }
    bool unplugged() const {
        std::lock_guard guard(m_lock);
        return m_unplugged;
    }

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // A queue notification as the ioeventfd delivers it (event loop thread).
    void queue_notify(size_t index) { on_queue_notify(index); }
    bool has_pending_output() const {
        std::lock_guard guard(m_lock);
        return m_device->has_pending_output();
    }

    // Snapshots: registers, queues (addresses and ring positions) and the
    // device's own state. Loading re-activates a device the driver had set up.
    // save_state_locked needs hold() held.
    std::unique_lock<std::mutex> hold() const { return std::unique_lock(m_lock); }
    std::string save_state_locked() const;
    Result<void> load_state(std::string_view bytes);
    // Device reset from the host side (hold() held): its I/O stops until load_state.
    void quiesce_locked() { reset_locked(); }
    // Host I/O in flight (hold() held); a snapshot waits until there is none.
    // A device the driver has reset can still have some: not only when active.
    bool busy_locked() const { return m_device->busy(); }

    uint32_t status() const;
    uint32_t interrupt_status() const;
    VirtioDevice& device() { return *m_device; }

private:
    uint32_t read_register(uint64_t offset);
    void write_register(uint64_t offset, uint32_t value);
    void set_status(uint32_t value);
    void reset_locked();
    Result<void> activate_device();
    void signal(uint32_t bits);
    void fail(const Error& error);
    void on_queue_notify(size_t index);
    Queue* selected_queue();

    mutable std::mutex m_lock;
    std::unique_ptr<VirtioDevice> m_device;
    const GuestMemory& m_memory;
    EventLoop& m_loop;
    uint32_t m_gsi;
    std::string m_id;
    std::vector<Queue> m_queues;
    std::vector<UniqueFd> m_notify_fds;
    UniqueFd m_irqfd;

    uint32_t m_status = 0;
    uint32_t m_device_features_sel = 0;
    uint32_t m_driver_features_sel = 0;
    uint64_t m_driver_features = 0;
    uint32_t m_queue_sel = 0;
    uint32_t m_interrupt_status = 0;
    uint32_t m_config_generation = 0;
    bool m_active = false;
    bool m_unplugged = false;
};

}  // namespace husk::virtio
