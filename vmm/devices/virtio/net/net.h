// virtio-net (virtio 1.2 §5.1) over a host TAP device: frames the guest
// transmits are written to the TAP (io_uring writev from guest memory), frames
// read from the TAP (io_uring read) fill the guest's receive buffers. One rx
// and one tx queue, the MAC from the configuration. Offloads both ways: the
// TAP speaks the same 12-byte virtio_net_hdr (IFF_VNET_HDR), so checksums
// left to the device and TCP segments of up to 64 KiB (TSO/GSO) pass through
// as they are; the TAP is told at activation which ones the guest took.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vmm/base/unique_fd.h"
#include "vmm/devices/virtio/device.h"

namespace husk::virtio {

struct NetOptions {
    std::string tap;               // TAP interface name (created if missing, needs CAP_NET_ADMIN)
    std::array<uint8_t, 6> mac{};  // all zero: a locally administered MAC is generated
};

// Parses "aa:bb:cc:dd:ee:ff".
Result<std::array<uint8_t, 6>> parse_mac(std::string_view text);

class Net final : public VirtioDevice {
public:
    static constexpr uint16_t kQueueSize = 256;
    static constexpr uint64_t kFeatureCsum = 1ull << 0;       // the guest may leave its checksums to us
    static constexpr uint64_t kFeatureGuestCsum = 1ull << 1;  // we may leave checksums to the guest
    static constexpr uint64_t kFeatureMac = 1ull << 5;
    static constexpr uint64_t kFeatureGuestTso4 = 1ull << 7;
    static constexpr uint64_t kFeatureGuestTso6 = 1ull << 8;
    static constexpr uint64_t kFeatureHostTso4 = 1ull << 11;
    static constexpr uint64_t kFeatureHostTso6 = 1ull << 12;
    static constexpr uint64_t kOffloads =
        kFeatureCsum | kFeatureGuestCsum | kFeatureGuestTso4 | kFeatureGuestTso6 | kFeatureHostTso4 | kFeatureHostTso6;
    static constexpr size_t kHeaderSize = 12;   // struct virtio_net_hdr with num_buffers (VERSION_1)
    static constexpr size_t kMaxFrame = 65550;  // §5.1.6.2: a GSO packet, headers included
    static constexpr size_t kMaxPacket = kHeaderSize + kMaxFrame;
    static constexpr size_t kRxBatch = 64;  // packets delivered per interrupt, at most

    static Result<std::unique_ptr<Net>> open(const NetOptions& options);

    uint32_t device_type() const override { return kTypeNet; }
    uint64_t device_features() const override { return kFeatureMac | kOffloads; }
    std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;

    Result<void> activate(uint64_t features, std::span<Queue> queues, DeviceContext ctx) override;
    void queue_notify(size_t index) override;
    void reset() override;
    // A TX write in flight holds a chain popped from the guest's avail ring
    // and not yet used: a snapshot taken now would lose it.
    bool busy() const override { return m_tx_in_flight > 0; }

    uint64_t rx_frames() const { return m_rx_frames; }
    uint64_t tx_frames() const { return m_tx_frames; }

private:
    Net(NetOptions options, UniqueFd tap) : m_options(std::move(options)), m_tap(std::move(tap)) {}
    void process_tx();
    void process_rx();
    void arm_tap_read();
    void schedule_notify(Queue& queue);

    NetOptions m_options;
    UniqueFd m_tap;
    Queue* m_rx = nullptr;
    Queue* m_tx = nullptr;
    DeviceContext m_ctx;
    uint64_t m_generation = 0;
    bool m_read_armed = false;
    uint32_t m_tx_in_flight = 0;  // TAP writes submitted, not completed (at most the queue size)
    std::string m_pending;        // a frame read from the TAP while the guest had no rx buffer
    std::vector<iovec> m_tx_iov;  // the frame being written on the loop thread
    uint64_t m_rx_frames = 0, m_tx_frames = 0;
};

}  // namespace husk::virtio
