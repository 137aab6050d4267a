// virtio-fs (virtio 1.2 §5.11): host directories shared with the guest. The
// FUSE requests on the queues are served by a FuseServer (fuse_server.h), on
// the event loop thread. A READ's or WRITE's data never pass through the
// device's own buffers: the event loop's io_uring (READV, WRITEV) moves them
// between the host file and the guest's buffers, and the request is answered
// when that completes, while the requests after it are served. One device per
// VM, tag "husk": its root directory holds each share under its name; the
// guest mounts the tag once and binds each share where it is needed. The
// device exists with or without shares, so a template made with it serves
// the shares its restores are given.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "vmm/devices/virtio/device.h"
#include "vmm/devices/virtio/fs/fuse_server.h"

namespace husk::virtio {

inline constexpr uint32_t kTypeFs = 26;

class Fs final : public VirtioDevice {
public:
    static constexpr const char* kTag = "husk";
    // Queue 0 is the high-priority queue (FORGET, INTERRUPT), queue 1 the one request queue.
    // 1024 descriptors: a 1 MiB READ or WRITE is 256 pages plus its headers in one chain.
    static constexpr uint16_t kQueueSize = 1024;
    // Largest request or reply: the negotiated max_write plus room for its headers.
    static constexpr uint32_t kMaxMessage = (1u << 20) + 4096;

    static Result<std::unique_ptr<Fs>> create(std::vector<fs::ShareOptions> shares);

    uint32_t device_type() const override { return kTypeFs; }
    uint64_t device_features() const override { return 0; }
    std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;

    Result<void> activate(uint64_t features, std::span<Queue> queues, DeviceContext ctx) override;
    void queue_notify(size_t index) override;
    // The FUSE session ends with the device: every host fd it held is closed.
    void reset() override;
    // A restored guest may still have the tag mounted, but the host files its
    // node ids named are not carried in a snapshot: its requests get errors
    // until it mounts again. Templates are made before anything is mounted.
    void restored() override;
    // A READ or WRITE on the io_uring reads or writes guest memory until it completes.
    bool busy() const override { return m_in_flight > 0; }

    uint64_t requests_served() const { return m_requests; }

private:
    explicit Fs(std::unique_ptr<fs::FuseServer> server) : m_server(std::move(server)) {}
    struct InFlight;
    // Serves every chain the driver has made available on `queue`.
    void serve(Queue& queue);
    // A READ's or WRITE's I/O submitted to the event loop's io_uring; its reply is written when it completes.
    void submit(Queue& queue, std::shared_ptr<InFlight> op);
    void finish(Queue& queue, InFlight& op, int result);
    void schedule_notify(Queue& queue);

    std::unique_ptr<fs::FuseServer> m_server;
    std::span<Queue> m_queues;
    DeviceContext m_ctx;
    // One request and its reply, reused: kMaxMessage each, never zeroed (a
    // page costs memory only once a request has used it).
    std::unique_ptr<uint8_t[]> m_in = std::make_unique_for_overwrite<uint8_t[]>(kMaxMessage);
    std::unique_ptr<uint8_t[]> m_out = std::make_unique_for_overwrite<uint8_t[]>(kMaxMessage);
    uint64_t m_requests = 0;
    uint64_t m_generation = 0;  // bumped on reset: a deferred notify of an older session is dropped
    uint32_t m_in_flight = 0;   // READs and WRITEs submitted, not completed (counted across resets)
    bool m_notify_scheduled = false;
};

}  // namespace husk::virtio
