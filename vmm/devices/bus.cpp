#include "vmm/devices/bus.h"

#include <algorithm>
#include <cstring>

namespace husk {

Result<void> Bus::insert(uint64_t base, uint64_t len, std::shared_ptr<IoDevice> device) {
    if (len == 0 || base + len < base) return Error::from_string(m_name + " bus: bad range");
    for (const auto& r : m_ranges)
        if (base < r.base + r.len && r.base < base + len)
            return Error::from_string(m_name + " bus: range overlaps an existing device", EEXIST);
    m_ranges.push_back({base, len, std::move(device)});
    std::sort(m_ranges.begin(), m_ranges.end(), [](const Range& a, const Range& b) { return a.base < b.base; });
    return {};
}

const Bus::Range* Bus::find(uint64_t addr, uint64_t len) const {
    auto it = std::upper_bound(m_ranges.begin(), m_ranges.end(), addr,
                               [](uint64_t a, const Range& r) { return a < r.base; });
    if (it == m_ranges.begin()) return nullptr;
    --it;
    uint64_t offset = addr - it->base;
    // The whole access must fall inside the device's range.
    if (offset >= it->len || len > it->len - offset) return nullptr;
    return &*it;
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) const {
    const Range* r = find(addr, data.size());
    if (!r) {
        std::memset(data.data(), 0xff, data.size());
        return false;
    }
    r->device->read(addr - r->base, data);
    return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) const {
    const Range* r = find(addr, data.size());
    if (!r) return false;
    r->device->write(addr - r->base, data);
    return true;
}

}  // namespace husk
