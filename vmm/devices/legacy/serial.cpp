#include "vmm/devices/legacy/serial.h"

#include <unistd.h>

#include <cerrno>

#include "vmm/base/wire.h"

namespace husk {
namespace {

// Register offsets (16550A datasheet).
constexpr uint64_t kData = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;
constexpr uint8_t kIerRdi = 0x01, kIerThri = 0x02;
constexpr uint8_t kIirNone = 0x01, kIirThre = 0x02, kIirRdi = 0x04, kIirFifo = 0xc0;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kLsrDataReady = 0x01, kLsrThre = 0x20, kLsrTemt = 0x40;
constexpr uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08, kMcrLoop = 0x10;
constexpr uint8_t kMsrCts = 0x10, kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;
constexpr const char kPanicBanner[] = "Kernel panic - not syncing";
constexpr const char kPowerDownBanner[] = "reboot: Power down";
constexpr const char kRestartBanner[] = "reboot: Restarting system";
constexpr const char kHaltBanner[] = "reboot: System halted";

}  // namespace

Serial::Serial(int output_fd, std::function<void()> raise_irq, std::function<void()> on_halt)
    : m_output_fd(output_fd), m_raise_irq(std::move(raise_irq)), m_on_halt(std::move(on_halt)) {}

std::string Serial::save_state() const {
    std::lock_guard guard(m_lock);
    wire::Writer w;
    w.u8(m_ier).u8(m_lcr).u8(m_mcr).u8(m_scr).u8(m_dll).u8(m_dlm);
    w.boolean(m_fifo_enabled).boolean(m_thre_pending).boolean(m_irq_asserted);
    w.str(std::string(m_input.begin(), m_input.end()));
    return w.take();
}

Result<void> Serial::load_state(std::string_view bytes) {
    std::lock_guard guard(m_lock);
    wire::Reader r(bytes, "snapshot");
    m_ier = r.u8();
    m_lcr = r.u8();
    m_mcr = r.u8();
    m_scr = r.u8();
    m_dll = r.u8();
    m_dlm = r.u8();
    m_fifo_enabled = r.boolean();
    m_thre_pending = r.boolean();
    m_irq_asserted = r.boolean();
    std::string input = r.str();
    TRY(r.finish("serial state"));
    if (input.size() > kInputLimit) return Error::from_string("snapshot: serial input longer than its buffer");
    m_input.assign(input.begin(), input.end());
    return {};
}

void Serial::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard guard(m_lock);
    // Byte-wide registers; wider reads see the register repeated in the low byte only.
    std::fill(data.begin(), data.end(), 0);
    if (!data.empty()) data[0] = read_register(offset);
}

void Serial::write(uint64_t offset, std::span<const uint8_t> data) {
    std::lock_guard guard(m_lock);
    if (!data.empty()) write_register(offset, data[0]);
}

uint8_t Serial::interrupt_id() const {
    if ((m_ier & kIerRdi) && !m_input.empty()) return kIirRdi;
    if ((m_ier & kIerThri) && m_thre_pending) return kIirThre;
    return kIirNone;
}

void Serial::update_interrupt() {
    bool want = interrupt_id() != kIirNone;
    // Edge-triggered ISA line: pulse on a new pending interrupt.
    if (want && !m_irq_asserted && m_raise_irq) m_raise_irq();
    m_irq_asserted = want;
}

uint8_t Serial::read_register(uint64_t offset) {
    if ((m_lcr & kLcrDlab) && offset <= kIer) return offset == kData ? m_dll : m_dlm;
    switch (offset) {
        case kData: {
            if (m_input.empty()) return 0;
            uint8_t b = m_input.front();
            m_input.pop_front();
            update_interrupt();
            return b;
        }
        case kIer:
            return m_ier;
        case kIir: {
            uint8_t id = interrupt_id();
            // Reading IIR acknowledges a THRE interrupt.
            if (id == kIirThre) m_thre_pending = false;
            update_interrupt();
            return uint8_t(id | (m_fifo_enabled ? kIirFifo : 0));
        }
        case kLcr:
            return m_lcr;
        case kMcr:
            return m_mcr;
        case kLsr:
            return uint8_t(kLsrThre | kLsrTemt | (m_input.empty() ? 0 : kLsrDataReady));
        case kMsr:
            if (m_mcr & kMcrLoop)
                return uint8_t(((m_mcr & kMcrRts) ? kMsrCts : 0) | ((m_mcr & kMcrDtr) ? kMsrDsr : 0) |
                               ((m_mcr & kMcrOut1) ? kMsrRi : 0) | ((m_mcr & kMcrOut2) ? kMsrDcd : 0));
            return kMsrDcd | kMsrDsr | kMsrCts;
        case kScr:
            return m_scr;
        default:
            return 0xff;
    }
}

void Serial::write_register(uint64_t offset, uint8_t value) {
    if ((m_lcr & kLcrDlab) && offset <= kIer) {
        (offset == kData ? m_dll : m_dlm) = value;
        return;
    }
    switch (offset) {
        case kData:
            if (m_mcr & kMcrLoop) {
                if (m_input.size() < kInputLimit) m_input.push_back(value);
            } else {
                transmit(value);
            }
            m_thre_pending = true;
            update_interrupt();
            break;
        case kIer: {
            bool thri_enabled = !(m_ier & kIerThri) && (value & kIerThri);
            m_ier = value & 0x0f;
            // THR is always empty: enabling THRI raises it at once.
            if (thri_enabled) m_thre_pending = true;
            update_interrupt();
            break;
        }
        case kIir:  // FCR
            m_fifo_enabled = value & 0x01;
            if (value & 0x02) m_input.clear();
            update_interrupt();
            break;
        case kLcr:
            m_lcr = value;
            break;
        case kMcr:
            m_mcr = value & 0x1f;
            break;
        case kScr:
            m_scr = value;
            break;
        default:
            break;  // LSR and MSR are read-only
    }
}

void Serial::transmit(uint8_t byte) {
    if (m_output_fd >= 0) {
        ssize_t n;
        do {
            n = ::write(m_output_fd, &byte, 1);
        } while (n < 0 && errno == EINTR);
        // A closed or full console must not stop the guest: drop the byte.
    }
    if (byte == '\n') {
        // The last lines are kept for the report of a guest crash.
        m_recent.push_back(std::move(m_line));
        if (m_recent.size() > kRecentLines) m_recent.pop_front();
        m_line.clear();
    } else if (m_line.size() < 256) {
        m_line.push_back(char(byte));
        if (!m_panic && m_line.find(kPanicBanner) != std::string::npos) m_panic = true;
        if (!m_power_down && m_line.find(kPowerDownBanner) != std::string::npos) m_power_down = true;
        if (!m_restart && m_line.find(kRestartBanner) != std::string::npos) m_restart = true;
        if (!m_halted &&
            (m_line.find(kHaltBanner) != std::string::npos || m_line.find(kPowerDownBanner) != std::string::npos)) {
            m_halted = true;
            if (m_on_halt) m_on_halt();
        }
    }
}

void Serial::enqueue_input(std::span<const uint8_t> bytes) {
    std::lock_guard guard(m_lock);
    for (uint8_t b : bytes) {
        if (m_input.size() >= kInputLimit) break;
        m_input.push_back(b);
    }
    update_interrupt();
}

std::string Serial::recent_output() const {
    std::lock_guard guard(m_lock);
    std::string out;
    for (const auto& line : m_recent) out += line + "\n";
    return out + m_line;
}

bool Serial::saw_restart() const {
    std::lock_guard guard(m_lock);
    return m_restart;
}

bool Serial::saw_power_down() const {
    std::lock_guard guard(m_lock);
    return m_power_down;
}

bool Serial::saw_kernel_panic() const {
    std::lock_guard guard(m_lock);
    return m_panic;
}

}  // namespace husk
