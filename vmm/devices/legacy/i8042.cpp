#include "vmm/devices/legacy/i8042.h"

namespace husk {
namespace {

// Status bit 4 set means "keyboard not inhibited" (no keylock).
constexpr uint8_t kStatusOutputFull = 0x01, kStatusSystem = 0x04, kStatusCommand = 0x08, kStatusUnlocked = 0x10;
constexpr uint8_t kCmdReadCtr = 0x20, kCmdWriteCtr = 0x60, kCmdSelfTest = 0xaa, kCmdKbdTest = 0xab,
                  kCmdWriteOutput = 0xd1, kCmdReset = 0xfe;

}  // namespace

void I8042::push_output(uint8_t byte) {
    m_output = byte;
    m_output_full = true;
}

void I8042::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard guard(m_lock);
    std::fill(data.begin(), data.end(), 0);
    if (data.empty()) return;
    if (offset == 0) {
        data[0] = m_output;
        m_output_full = false;
    } else if (offset == 4) {
        data[0] = uint8_t(kStatusSystem | kStatusUnlocked | (m_pending_command ? kStatusCommand : 0) |
                          (m_output_full ? kStatusOutputFull : 0));
    } else {
        data[0] = 0xff;
    }
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data) {
    if (data.empty()) return;
    uint8_t v = data[0];
    bool reset = false;
    {
        std::lock_guard guard(m_lock);
        if (offset == 4) {
            switch (v) {
            case kCmdReadCtr:
                push_output(m_ctr);
                break;
            case kCmdWriteCtr:
            case kCmdWriteOutput:
                m_pending_command = v;
                break;
            case kCmdSelfTest:
                push_output(0x55);  // self test passed
                break;
            case kCmdKbdTest:
                push_output(0x00);  // interface test passed
                break;
            case kCmdReset:
                reset = true;
                break;
            default:
                break;  // enable/disable port commands need no state here
            }
        } else if (offset == 0) {
            if (m_pending_command == kCmdWriteCtr) {
                m_ctr = v;
            } else if (m_pending_command == kCmdWriteOutput) {
                // Output port bit 0 low pulses the CPU reset line.
                if (!(v & 0x01)) reset = true;
            } else {
                push_output(0xfa);  // keyboard ACK
            }
            m_pending_command = 0;
        }
    }
    if (reset && m_on_reset) m_on_reset();
}

}  // namespace husk
