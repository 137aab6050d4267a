// virtio-balloon (virtio 1.2 §5.5): the host asks for guest memory back.
//
// - inflateq: the driver hands over pages (le32 PFNs); they go back to the
//   host at once (GuestMemory::discard), PFNs sorted and coalesced into runs
//   so a large inflate costs few system calls.
// - deflateq: the driver takes pages back; nothing to do (they read as zeros).
// - statsq (STATS_VQ): the driver's memory statistics, on the host's request.
// - reporting_vq (REPORTING): free page reporting; the ranges are discarded.
// - DEFLATE_ON_OOM: the driver may deflate when the guest runs out of memory.
//
// Every PFN and range is checked to lie in guest RAM (not the MMIO hole)
// before anything is discarded; a request with one bad entry is refused whole.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "vmm/base/wire.h"
#include "vmm/devices/virtio/device.h"
#include "vmm/devices/virtio/persist.h"

namespace husk::virtio {

struct BalloonOptions {
    uint32_t target_pages = 0;  // 4 KiB pages the guest should give up
    bool deflate_on_oom = true;
    bool free_page_reporting = true;
};

// What the host knows of the balloon: its target, the driver's answer, what
// was returned, and the guest's last statistics.
struct BalloonInfo {
    uint32_t target_pages = 0;
    uint32_t actual_pages = 0;  // what the driver says the balloon holds
    bool driver_ready = false;
    uint64_t inflated_pages = 0;  // PFNs accepted on inflateq, in total
    uint64_t deflated_pages = 0;
    uint64_t reported_bytes = 0;    // free page reporting, in total
    uint64_t discard_calls = 0;     // discard system calls (ranges after coalescing)
    uint64_t refused_requests = 0;  // requests with a PFN or range outside guest RAM
    uint64_t stats_updates = 0;     // statistics buffers received
    std::map<std::string, uint64_t> stats;
};

// What a snapshot keeps of the balloon (persist.h).
struct BalloonState {
    static constexpr uint32_t kVersion = 1;
    static constexpr const char* kName = "virtio-balloon state";
    uint32_t target_pages = 0;
    uint32_t actual_pages = 0;
    int32_t stats_head = -1;  // the stats buffer the driver left with the device, or -1
    void encode(wire::Writer& w) const;
    static BalloonState decode(wire::Reader& r);
};

class Balloon final : public VirtioDevice {
public:
    static constexpr uint16_t kQueueSize = 256;
    static constexpr uint32_t kPfnShift = 12;  // PFNs are of 4 KiB pages, whatever the guest's page size
    static constexpr uint32_t kPagesPerMib = (1u << 20) >> kPfnShift;
    // Feature bits (§5.5.3).
    static constexpr uint64_t kFeatureStatsVq = 1ull << 1, kFeatureDeflateOnOom = 1ull << 2,
                              kFeatureReporting = 1ull << 5;
    // Statistics tags (§5.5.6.3).
    static const char* stat_name(uint16_t tag);

    explicit Balloon(BalloonOptions options) : m_options(options), m_target(options.target_pages) {}

    uint32_t device_type() const override { return kTypeBalloon; }
    uint64_t device_features() const override;
    // inflateq, deflateq, then statsq and reporting_vq when negotiated (a
    // queue that does not exist takes no index: Linux numbers them in order).
    std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize, kQueueSize, kQueueSize}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;

    Result<void> activate(uint64_t features, std::span<Queue> queues, DeviceContext ctx) override;
    void queue_notify(size_t index) override;
    void reset() override;
    std::string save_state() const override;
    Result<void> load_state(std::string_view bytes) override;

    // Host side; the transport's lock (hold()) must be held.
    // Sets how many pages the guest should give up; the driver hears of it.
    void set_target(uint32_t pages);
    // Asks the driver for fresh statistics; false if it holds no stats buffer
    // (not negotiated, or a request is outstanding). BalloonInfo.stats_updates
    // moves when the answer arrives.
    bool request_stats();
    BalloonInfo info() const;

private:
    enum Role { kInflate, kDeflate, kStats, kReporting, kNone };
    Role role(size_t index) const;
    // Pops every chain, hands it to `handle` and returns it used (length 0);
    // one interrupt at the end. False once the device failed.
    bool serve(Queue& queue, const std::function<bool(const DescriptorChain&)>& handle);
    void handle_pfns(Queue& queue, bool inflate);
    void handle_reports(Queue& queue);
    void handle_stats(Queue& queue);
    // The PFNs sorted and coalesced into (gpa, bytes) runs; nullopt if any lies outside guest RAM.
    std::optional<std::vector<std::pair<uint64_t, uint64_t>>> checked_runs(std::vector<uint32_t>& pfns) const;

    BalloonOptions m_options;
    uint32_t m_target;
    uint32_t m_actual = 0;
    std::span<Queue> m_queues;
    size_t m_stats_index = SIZE_MAX, m_reporting_index = SIZE_MAX;
    DeviceContext m_ctx;
    bool m_active = false;
    // The stats buffer the driver left with us; returning it asks for new figures.
    int32_t m_stats_head = -1;
    BalloonInfo m_counts;
};

}  // namespace husk::virtio
