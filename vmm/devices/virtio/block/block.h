// virtio-blk (virtio 1.2 §5.2) on a raw image file, with its I/O on the VM's
// io_uring: guest buffers go straight into readv/writev iovecs (no copy), and
// every request popped in one notification is submitted in one io_uring_enter.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "vmm/base/unique_fd.h"
#include "vmm/base/wire.h"
#include "vmm/devices/virtio/device.h"
#include "vmm/devices/virtio/persist.h"

namespace husk::virtio {

struct BlockOptions {
    std::string path;
    bool read_only = false;
    bool direct = false;  // O_DIRECT: bypass the host page cache
    std::string id;       // answered to VIRTIO_BLK_T_GET_ID (at most 20 bytes)
};

// What a snapshot keeps of a disk (persist.h): its size then, so a restore
// onto another size tells the driver.
struct BlockState {
    static constexpr uint32_t kVersion = 1;
    static constexpr const char* kName = "virtio-blk state";
    uint64_t sectors = 0;
    void encode(wire::Writer& w) const;
    static BlockState decode(wire::Reader& r);
};

class Block final : public VirtioDevice {
public:
    static constexpr uint16_t kQueueSize = 256;
    static constexpr uint32_t kSectorSize = 512;
    static constexpr uint32_t kSegMax = kQueueSize - 2;  // header and status take two descriptors

    // Feature bits (§5.2.3).
    static constexpr uint64_t kFeatureSegMax = 1ull << 2, kFeatureRo = 1ull << 5, kFeatureBlkSize = 1ull << 6,
                              kFeatureFlush = 1ull << 9, kFeatureDiscard = 1ull << 13, kFeatureWriteZeroes = 1ull << 14;
    // Request types and status values (§5.2.6).
    static constexpr uint32_t kTypeIn = 0, kTypeOut = 1, kTypeFlush = 4, kTypeGetId = 8, kTypeDiscard = 11,
                              kTypeWriteZeroes = 13;
    static constexpr uint8_t kStatusOk = 0, kStatusIoErr = 1, kStatusUnsupported = 2;

    static Result<std::unique_ptr<Block>> open(const BlockOptions& options);

    uint32_t device_type() const override { return kTypeBlock; }
    uint64_t device_features() const override;
    std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;

    Result<void> activate(uint64_t features, std::span<Queue> queues, DeviceContext ctx) override;
    void queue_notify(size_t index) override;
    void reset() override;
    // Counts requests a reset has orphaned too: their reads still land in guest memory.
    bool busy() const override { return m_host_ops > 0; }
    // The capacity the driver knew; a restore onto another disk tells it of the new one.
    std::string save_state() const override;
    Result<void> load_state(std::string_view bytes) override;
    void restored() override;

    uint64_t capacity_sectors() const { return m_sectors; }
    uint64_t completed_requests() const { return m_completed; }

private:
    struct Request;
    Block(BlockOptions options, UniqueFd fd, uint64_t sectors)
        : m_options(std::move(options)), m_fd(std::move(fd)), m_sectors(sectors) {}

    // Starts one request; returns false when the chain is malformed (device fails).
    bool start(DescriptorChain chain);
    // Requests handed to io_uring and back (device lock held).
    void io_started();
    void io_done(const Request& req);
    void finish(const std::shared_ptr<Request>& req, uint8_t status, uint32_t data_written);
    void schedule_notify();
    // Pops and starts every available request. While requests are in flight the
    // driver's kicks are suppressed and each completion turn polls the ring
    // instead: fewer exits for a guest with a deep queue.
    void drain();

    BlockOptions m_options;
    UniqueFd m_fd;
    uint64_t m_sectors;
    Queue* m_queue = nullptr;
    DeviceContext m_ctx;
    uint64_t m_generation = 0;  // bumped on reset: completions of older requests are dropped
    uint64_t m_completed = 0;
    bool m_notify_scheduled = false;  // one interrupt check per event-loop turn
    uint32_t m_in_flight = 0;         // this generation's requests in io_uring (kicks stay off meanwhile)
    uint32_t m_host_ops = 0;          // every request in io_uring, whatever its generation
    uint64_t m_restored_sectors = 0;
};

}  // namespace husk::virtio
