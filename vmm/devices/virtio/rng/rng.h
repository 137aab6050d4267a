// virtio-rng (virtio 1.2 §5.4): one request queue; the device fills each
// device-writable buffer from getrandom(2).
#pragma once

#include "vmm/devices/virtio/device.h"

namespace husk::virtio {

class Rng final : public VirtioDevice {
public:
    static constexpr uint16_t kQueueSize = 256;
    static constexpr uint32_t kMaxRequest = 64 * 1024;  // bytes per buffer; larger buffers are filled partly

    uint32_t device_type() const override { return kTypeRng; }
    uint64_t device_features() const override { return 0; }
    std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
    void read_config(uint64_t, std::span<uint8_t> data) const override { std::fill(data.begin(), data.end(), 0); }

    Result<void> activate(uint64_t features, std::span<Queue> queues, DeviceContext ctx) override;
    void queue_notify(size_t index) override;
    void reset() override { m_queue = nullptr; }

    uint64_t bytes_served() const { return m_bytes; }

private:
    Queue* m_queue = nullptr;
    DeviceContext m_ctx;
    uint64_t m_bytes = 0;
};

}  // namespace husk::virtio
