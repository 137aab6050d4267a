// Vm: one KVM virtual machine — memory slots, in-kernel irqchip and PIT, vCPUs.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <span>

#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"
#include "vmm/kvm/kvm.h"

namespace husk {

class Vcpu;

class Vm {
public:
    static Result<Vm> create(const Kvm& kvm);

    Result<void> set_user_memory_region(uint32_t slot, uint64_t guest_phys, uint64_t size, void* host,
                                        uint32_t flags = 0);
    // In-kernel PIC + IOAPIC + per-vCPU LAPIC, and the PIT (i8254) on IRQ 0.
    Result<void> create_irqchip_and_pit();
    // Intel needs three pages for its real-mode TSS and one for the identity map; harmless on AMD.
    Result<void> set_tss_and_identity_map(uint64_t tss_addr, uint64_t identity_map_addr);
    Result<void> set_irq_line(uint32_t irq, bool level);
    // With `datamatch`, only writes of that value signal the eventfd.
    Result<void> register_ioeventfd(int fd, uint64_t addr, uint32_t len, bool pio,
                                    std::optional<uint64_t> datamatch = std::nullopt);
    Result<void> register_irqfd(int fd, uint32_t gsi);
    Result<Vcpu> create_vcpu(uint32_t id);

    // VM-wide state for snapshots: kvmclock, the PIC/IOAPIC chips, the PIT.
    Result<kvm_clock_data> clock() const;
    Result<void> set_clock(const kvm_clock_data& clock);
    Result<kvm_irqchip> irqchip(uint32_t chip_id) const;
    Result<void> set_irqchip(const kvm_irqchip& chip);
    Result<kvm_pit_state2> pit() const;
    Result<void> set_pit(const kvm_pit_state2& pit);
    // KVM_GET_DIRTY_LOG: the slot's pages written since the last call (one
    // bit per page), which KVM write-protects again. The slot needs
    // KVM_MEM_LOG_DIRTY_PAGES.
    Result<void> dirty_log(uint32_t slot, std::span<uint64_t> bitmap);

    int fd() const { return m_fd.get(); }
    size_t vcpu_mmap_size() const { return m_vcpu_mmap_size; }

private:
    Vm(UniqueFd fd, size_t vcpu_mmap_size, bool identity_map_cap)
        : m_fd(std::move(fd)), m_vcpu_mmap_size(vcpu_mmap_size), m_identity_map_cap(identity_map_cap) {}

    // Copied from the Kvm at creation, so a Vm does not depend on the Kvm object's lifetime.
    UniqueFd m_fd;
    size_t m_vcpu_mmap_size;
    bool m_identity_map_cap;
};

}  // namespace husk
