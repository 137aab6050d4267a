// IoDevice: what the vCPU threads dispatch PIO and MMIO exits to.
// `offset` is relative to the base the device was registered at. Devices lock
// themselves: several vCPUs may access one device at once.
#pragma once

#include <cstdint>
#include <span>

namespace husk {

class IoDevice {
public:
    virtual ~IoDevice() = default;
    // Fill `data` (1, 2, 4 or 8 bytes). guest-controlled offset and width.
    virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

}  // namespace husk
