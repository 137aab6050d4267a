// Bus: maps address ranges (I/O ports or guest-physical MMIO) to devices.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/devices/io_device.h"

namespace husk {

class Bus {
public:
    explicit Bus(std::string name) : m_name(std::move(name)) {}

    // Fails if [base, base+len) overlaps a registered range or wraps.
    Result<void> insert(uint64_t base, uint64_t len, std::shared_ptr<IoDevice> device);

    // False when nothing is mapped at addr; reads then see all ones (a floating bus).
    bool read(uint64_t addr, std::span<uint8_t> data) const;
    bool write(uint64_t addr, std::span<const uint8_t> data) const;

private:
    struct Range {
        uint64_t base, len;
        std::shared_ptr<IoDevice> device;
    };
    const Range* find(uint64_t addr, uint64_t len) const;

    std::string m_name;
    std::vector<Range> m_ranges;  // sorted by base; set up before vCPUs start, read-only after
};

}  // namespace husk
