// The husk debug port: the boot timer, a guest-requested exit status, and a
// scratch register for round-trip tests. Mapped at I/O port 0x440 and at the
// first MMIO device page, with the same registers:
//
//   +0  write: "init reached" (the boot timer); read: 'H' (0x48), identifies the device
//   +1  write: end the VM with this byte as husk-vmm's exit status
//   +4  32-bit scratch register: reads return the last value written
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

#include "vmm/devices/io_device.h"

namespace husk {

class DebugPort final : public IoDevice {
public:
    static constexpr uint16_t kPioBase = 0x440;
    static constexpr uint64_t kSize = 8;
    static constexpr uint8_t kIdentity = 'H';

    struct Callbacks {
        std::function<void()> init_reached;
        std::function<void(uint8_t)> exit_requested;
    };
    explicit DebugPort(Callbacks callbacks) : m_callbacks(std::move(callbacks)) {}

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    std::mutex m_lock;
    Callbacks m_callbacks;
    uint32_t m_scratch = 0;
};

}  // namespace husk
