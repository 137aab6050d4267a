// i8042 keyboard controller, just enough for Linux to probe it and for
// "reboot=k": the CPU reset command (0xFE on port 0x64) ends the VM.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

#include "vmm/devices/io_device.h"

namespace husk {

class I8042 final : public IoDevice {
public:
    static constexpr uint16_t kDataPort = 0x60;
    static constexpr uint16_t kCommandPort = 0x64;

    // Registered over 0x60..0x64 (5 ports); offsets 0 and 4 are the data and command ports.
    explicit I8042(std::function<void()> on_reset) : m_on_reset(std::move(on_reset)) {}

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    void push_output(uint8_t byte);

    std::mutex m_lock;
    std::function<void()> m_on_reset;
    uint8_t m_ctr = 0x47;  // keyboard interrupt on, system flag, translation
    uint8_t m_pending_command = 0;
    uint8_t m_output = 0;
    bool m_output_full = false;
};

}  // namespace husk
