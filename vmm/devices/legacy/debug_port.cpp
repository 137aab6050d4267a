#include "vmm/devices/legacy/debug_port.h"

#include <cstring>

namespace husk {

void DebugPort::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard guard(m_lock);
    std::fill(data.begin(), data.end(), 0);
    if (offset == 0 && !data.empty()) {
        data[0] = kIdentity;
    } else if (offset >= 4) {
        // guest-controlled offset and width: copy only what lies inside the register.
        uint64_t at = offset - 4;
        if (at < 4) std::memcpy(data.data(), reinterpret_cast<uint8_t*>(&m_scratch) + at, std::min<uint64_t>(data.size(), 4 - at));
    }
}

void DebugPort::write(uint64_t offset, std::span<const uint8_t> data) {
    if (data.empty()) return;
    if (offset == 0) {
        if (m_callbacks.init_reached) m_callbacks.init_reached();
    } else if (offset == 1) {
        if (m_callbacks.exit_requested) m_callbacks.exit_requested(data[0]);
    } else if (offset >= 4) {
        std::lock_guard guard(m_lock);
        uint64_t at = offset - 4;
        if (at < 4) std::memcpy(reinterpret_cast<uint8_t*>(&m_scratch) + at, data.data(), std::min<uint64_t>(data.size(), 4 - at));
    }
}

}  // namespace husk
