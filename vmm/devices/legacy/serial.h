// 16550A UART at 0x3f8 (COM1): the guest console.
//
// Transmit is immediate (THR is always empty), so the guest never waits on
// us; THRE and received-data interrupts follow the 16550A datasheet's IIR
// priorities so Linux's interrupt-driven tty path works.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "vmm/base/result.h"
#include "vmm/devices/io_device.h"

namespace husk {

class Serial final : public IoDevice {
public:
    static constexpr uint16_t kCom1Base = 0x3f8;
    static constexpr uint32_t kCom1Irq = 4;
    static constexpr size_t kInputLimit = 4096;  // bytes buffered from the host before input is dropped

    // `output_fd`: where transmitted bytes go (-1 drops them). `raise_irq` pulses the UART's IRQ line.
    // `on_halt` runs once when Linux prints "reboot: System halted" or "reboot: Power down":
    // without ACPI the kernel turns a power-off into a halt with every CPU stopped
    // (interrupts off), which KVM never reports, so the console is the only sign.
    Serial(int output_fd, std::function<void()> raise_irq, std::function<void()> on_halt = {});

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Snapshots: the registers, pending interrupt and unread input.
    std::string save_state() const;
    Result<void> load_state(std::string_view bytes);

    // Host -> guest bytes (console input).
    void enqueue_input(std::span<const uint8_t> bytes);
    // The console's last lines (at most 12, each cut at 256 bytes), printed or not.
    std::string recent_output() const;
    // True once the guest printed Linux's panic banner.
    bool saw_kernel_panic() const;
    // True once Linux printed "reboot: Power down": a power-off request. Without
    // ACPI the kernel cannot power off, so init exits and the kernel panics and
    // resets; this tells that apart from a real panic.
    bool saw_power_down() const;
    // True once Linux printed "reboot: Restarting system": a reboot request
    // (with reboot=t it arrives as a triple fault).
    bool saw_restart() const;

private:
    uint8_t read_register(uint64_t offset);
    void write_register(uint64_t offset, uint8_t value);
    void transmit(uint8_t byte);
    void update_interrupt();  // caller holds m_lock
    uint8_t interrupt_id() const;

    mutable std::mutex m_lock;
    int m_output_fd;
    std::function<void()> m_raise_irq;
    std::function<void()> m_on_halt;
    bool m_halted = false;
    std::deque<uint8_t> m_input;
    uint8_t m_ier = 0, m_lcr = 0, m_mcr = 0x08, m_scr = 0, m_dll = 0x0c, m_dlm = 0;
    bool m_fifo_enabled = false;
    bool m_thre_pending = false;
    bool m_irq_asserted = false;
    // A short tail of the output, to spot "Kernel panic - not syncing".
    std::string m_line;
    static constexpr size_t kRecentLines = 12;
    std::deque<std::string> m_recent;
    bool m_panic = false;
    bool m_power_down = false;
    bool m_restart = false;
};

}  // namespace husk
