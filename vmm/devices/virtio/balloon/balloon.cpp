#include "vmm/devices/virtio/balloon/balloon.h"

#include <algorithm>
#include <cstring>

#include "vmm/base/log.h"
#include "vmm/base/wire.h"

namespace husk::virtio {
namespace {

constexpr uint64_t kPage = 1ull << Balloon::kPfnShift;
constexpr size_t kConfigSize = 16;                 // num_pages, actual, free_page_hint_cmd_id, poison_val
constexpr uint32_t kMaxPfnsPerRequest = 1u << 20;  // 4 GiB of pages per buffer: more is not a driver

void put_le32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}

}  // namespace

const char* Balloon::stat_name(uint16_t tag) {
    static const char* const names[] = {"swap_in", "swap_out",  "major_faults", "minor_faults",   "free",
                                        "total",   "available", "caches",       "hugetlb_allocs", "hugetlb_failures"};
    return tag < std::size(names) ? names[tag] : nullptr;
}

uint64_t Balloon::device_features() const {
    return kFeatureStatsVq | (m_options.deflate_on_oom ? kFeatureDeflateOnOom : 0) |
           (m_options.free_page_reporting ? kFeatureReporting : 0);
}

void Balloon::read_config(uint64_t offset, std::span<uint8_t> data) const {
    uint8_t config[kConfigSize] = {};
    put_le32(config, m_target);
    put_le32(config + 4, m_actual);
    read_config_bytes(config, offset, data);
}

void Balloon::write_config(uint64_t offset, std::span<const uint8_t> data) {
    // Only `actual` is the driver's to write (poison_val needs PAGE_POISON, never offered).
    uint8_t config[kConfigSize] = {};
    put_le32(config + 4, m_actual);
    for (size_t i = 0; i < data.size(); ++i)
        if (offset + i >= 4 && offset + i < 8) config[offset + i] = data[i];
    uint32_t actual = 0;
    for (int i = 0; i < 4; ++i) actual |= uint32_t(config[4 + i]) << (8 * i);
    if (actual != m_actual) log::debug("virtio-balloon: the driver holds {} pages (target {})", actual, m_target);
    m_actual = actual;
}

Result<void> Balloon::activate(uint64_t features, std::span<Queue> queues, DeviceContext ctx) {
    if (queues.size() < 2 || !queues[0].ready() || !queues[1].ready())
        return Error::from_string("virtio-balloon: inflate and deflate queues not ready");
    m_queues = queues;
    size_t next = 2;
    m_stats_index = (features & kFeatureStatsVq) ? next++ : SIZE_MAX;
    m_reporting_index = (features & kFeatureReporting) ? next++ : SIZE_MAX;
    m_ctx = std::move(ctx);
    m_active = true;
    m_stats_head = -1;
    // Linux's driver queues its first statistics buffer and kicks before it
    // sets DRIVER_OK (virtballoon_probe → init_vqs), when that kick finds the
    // device inactive and is dropped. Without the buffer no statistics could
    // ever be requested, so activation takes what is already on the ring.
    if (m_stats_index != SIZE_MAX && m_stats_index < m_queues.size() && m_queues[m_stats_index].ready())
        handle_stats(m_queues[m_stats_index]);
    return {};
}

void Balloon::reset() {
    m_active = false;
    m_queues = {};
    m_stats_head = -1;
    m_actual = 0;
}

Balloon::Role Balloon::role(size_t index) const {
    if (index == 0) return kInflate;
    if (index == 1) return kDeflate;
    if (index == m_stats_index) return kStats;
    if (index == m_reporting_index) return kReporting;
    return kNone;
}

void Balloon::queue_notify(size_t index) {
    if (!m_active || index >= m_queues.size() || !m_queues[index].ready()) return;
    Queue& q = m_queues[index];
    switch (role(index)) {
        case kInflate:
            return handle_pfns(q, true);
        case kDeflate:
            return handle_pfns(q, false);
        case kStats:
            return handle_stats(q);
        case kReporting:
            return handle_reports(q);
        case kNone:
            return;
    }
}

std::optional<std::vector<std::pair<uint64_t, uint64_t>>> Balloon::checked_runs(std::vector<uint32_t>& pfns) const {
    std::sort(pfns.begin(), pfns.end());
    pfns.erase(std::unique(pfns.begin(), pfns.end()), pfns.end());
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    for (size_t i = 0; i < pfns.size();) {
        size_t j = i + 1;
        while (j < pfns.size() && pfns[j] == pfns[j - 1] + 1) ++j;
        runs.emplace_back(uint64_t(pfns[i]) << kPfnShift, uint64_t(j - i) * kPage);
        i = j;
    }
    for (const auto& [gpa, len] : runs)
        if (!m_ctx.memory->contains(gpa, len)) return std::nullopt;
    return runs;
}

bool Balloon::serve(Queue& queue, const std::function<bool(const DescriptorChain&)>& handle) {
    const GuestMemory& mem = *m_ctx.memory;
    bool used = false;
    for (;;) {
        auto next = queue.pop(mem);
        if (next.is_error()) {
            m_ctx.fail(next.error());
            return false;
        }
        if (!next.value()) break;
        if (!handle(*next.value())) return false;
        if (auto r = queue.add_used(mem, next.value()->head(), 0); r.is_error()) {
            m_ctx.fail(r.error());
            return false;
        }
        used = true;
    }
    if (used) notify_if_wanted(queue, m_ctx);
    return true;
}

void Balloon::handle_pfns(Queue& queue, bool inflate) {
    const GuestMemory& mem = *m_ctx.memory;
    serve(queue, [&](const DescriptorChain& chain) {
        std::vector<uint32_t> pfns;
        bool ok = chain.readable_bytes() % 4 == 0 && chain.readable_bytes() / 4 <= kMaxPfnsPerRequest;
        for (const auto& b : chain.buffers()) {
            if (!ok || b.device_writable) break;
            auto bytes = mem.slice(b.addr, b.len);  // checked at pop
            if (bytes.is_error()) {
                m_ctx.fail(bytes.error());
                return false;
            }
            size_t first = pfns.size();
            pfns.resize(first + b.len / 4);
            std::memcpy(pfns.data() + first, bytes.value().data(), b.len / 4 * 4);
        }
        // Every PFN is checked before anything is discarded.
        auto runs = ok ? checked_runs(pfns) : std::nullopt;
        ok = runs.has_value();
        if (ok && inflate) {
            for (const auto& [gpa, len] : *runs) {
                if (auto r = mem.discard(gpa, len); r.is_error()) {
                    log::warn("virtio-balloon: {}", r.error().message());
                    continue;
                }
                ++m_counts.discard_calls;
            }
        }
        if (ok) {
            (inflate ? m_counts.inflated_pages : m_counts.deflated_pages) += pfns.size();
        } else if (m_counts.refused_requests++ == 0) {
            log::warn("virtio-balloon: the driver sent a PFN outside guest RAM; the request is refused");
        }
        return true;
    });
}

void Balloon::handle_reports(Queue& queue) {
    const GuestMemory& mem = *m_ctx.memory;
    serve(queue, [&](const DescriptorChain& chain) {
        // Each buffer is a free range; only whole pages inside it go. The
        // buffers were checked to lie in guest RAM when the chain was popped.
        for (const auto& b : chain.buffers()) {
            uint64_t start = (b.addr + kPage - 1) & ~(kPage - 1), end = (b.addr + b.len) & ~(kPage - 1);
            if (end <= start) continue;
            if (auto r = mem.discard(start, end - start); r.is_error()) {
                log::warn("virtio-balloon: {}", r.error().message());
                continue;
            }
            ++m_counts.discard_calls;
            m_counts.reported_bytes += end - start;
        }
        return true;
    });
}

void Balloon::handle_stats(Queue& queue) {
    const GuestMemory& mem = *m_ctx.memory;
    for (;;) {
        auto next = queue.pop(mem);
        if (next.is_error()) return m_ctx.fail(next.error());
        if (!next.value()) break;
        auto& chain = *next.value();
        // Entries are packed: le16 tag, le64 value (10 bytes each).
        std::string bytes;
        for (const auto& b : chain.buffers()) {
            if (b.device_writable || bytes.size() + b.len > 4096) break;
            auto src = mem.slice(b.addr, b.len);
            if (src.is_error()) return m_ctx.fail(src.error());
            bytes.append(reinterpret_cast<const char*>(src.value().data()), b.len);
        }
        for (size_t off = 0; off + 10 <= bytes.size(); off += 10) {
            uint16_t tag = uint16_t(uint8_t(bytes[off]) | uint8_t(bytes[off + 1]) << 8);
            uint64_t value = 0;
            for (int i = 0; i < 8; ++i) value |= uint64_t(uint8_t(bytes[off + 2 + i])) << (8 * i);
            if (const char* name = stat_name(tag)) m_counts.stats[name] = value;
        }
        ++m_counts.stats_updates;
        // The driver expects one buffer in flight: an older one goes back unread.
        if (m_stats_head >= 0) {
            if (auto r = queue.add_used(mem, uint16_t(m_stats_head), 0); r.is_error()) return m_ctx.fail(r.error());
            notify_if_wanted(queue, m_ctx);
        }
        m_stats_head = chain.head();
    }
}

void Balloon::set_target(uint32_t pages) {
    if (pages == m_target) return;
    m_target = pages;
    if (m_active && m_ctx.signal_config) m_ctx.signal_config();
}

bool Balloon::request_stats() {
    if (!m_active || m_stats_head < 0 || m_stats_index == SIZE_MAX) return false;
    Queue& q = m_queues[m_stats_index];
    if (auto r = q.add_used(*m_ctx.memory, uint16_t(m_stats_head), 0); r.is_error()) {
        m_ctx.fail(r.error());
        return false;
    }
    m_stats_head = -1;
    notify_if_wanted(q, m_ctx);
    return true;
}

BalloonInfo Balloon::info() const {
    BalloonInfo i = m_counts;
    i.target_pages = m_target;
    i.actual_pages = m_actual;
    i.driver_ready = m_active;
    return i;
}

}  // namespace husk::virtio
