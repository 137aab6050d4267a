#include "vmm/kvm/vm.h"

#include "vmm/base/system.h"
#include "vmm/kvm/vcpu.h"

namespace husk {

Result<Vm> Vm::create(const Kvm& kvm) {
    // Machine type 0: the default x86 VM.
    int fd = TRY(sys::ioctl(kvm.fd(), KVM_CREATE_VM, 0ul, "KVM_CREATE_VM"));
    return Vm(UniqueFd(fd), kvm.vcpu_mmap_size(), kvm.check_extension(KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0);
}

Result<void> Vm::set_user_memory_region(uint32_t slot, uint64_t guest_phys, uint64_t size, void* host, uint32_t flags) {
    kvm_userspace_memory_region region{};
    region.slot = slot;
    region.flags = flags;
    region.guest_phys_addr = guest_phys;
    region.memory_size = size;
    region.userspace_addr = reinterpret_cast<uint64_t>(host);
    TRY(sys::ioctl(m_fd.get(), KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION"));
    return {};
}

Result<void> Vm::create_irqchip_and_pit() {
    TRY(sys::ioctl(m_fd.get(), KVM_CREATE_IRQCHIP, 0ul, "KVM_CREATE_IRQCHIP"));
    kvm_pit_config pit{};
    // Without KVM_PIT_SPEAKER_DUMMY, port 0x61 exits to user space on every access.
    pit.flags = KVM_PIT_SPEAKER_DUMMY;
    TRY(sys::ioctl(m_fd.get(), KVM_CREATE_PIT2, &pit, "KVM_CREATE_PIT2"));
    return {};
}

Result<void> Vm::set_tss_and_identity_map(uint64_t tss_addr, uint64_t identity_map_addr) {
    TRY(sys::ioctl(m_fd.get(), KVM_SET_TSS_ADDR, tss_addr, "KVM_SET_TSS_ADDR"));
    if (m_identity_map_cap) {
        uint64_t addr = identity_map_addr;
        TRY(sys::ioctl(m_fd.get(), KVM_SET_IDENTITY_MAP_ADDR, &addr, "KVM_SET_IDENTITY_MAP_ADDR"));
    }
    return {};
}

Result<void> Vm::set_irq_line(uint32_t irq, bool level) {
    kvm_irq_level line{};
    line.irq = irq;
    line.level = level ? 1 : 0;
    TRY(sys::ioctl(m_fd.get(), KVM_IRQ_LINE, &line, "KVM_IRQ_LINE"));
    return {};
}

Result<void> Vm::register_ioeventfd(int fd, uint64_t addr, uint32_t len, bool pio, std::optional<uint64_t> datamatch) {
    kvm_ioeventfd ev{};
    ev.addr = addr;
    ev.len = len;
    ev.fd = fd;
    ev.flags = (pio ? KVM_IOEVENTFD_FLAG_PIO : 0) | (datamatch ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0);
    ev.datamatch = datamatch.value_or(0);
    TRY(sys::ioctl(m_fd.get(), KVM_IOEVENTFD, &ev, "KVM_IOEVENTFD"));
    return {};
}

Result<void> Vm::register_irqfd(int fd, uint32_t gsi) {
    kvm_irqfd irqfd{};
    irqfd.fd = uint32_t(fd);
    irqfd.gsi = gsi;
    TRY(sys::ioctl(m_fd.get(), KVM_IRQFD, &irqfd, "KVM_IRQFD"));
    return {};
}

Result<Vcpu> Vm::create_vcpu(uint32_t id) {
    return Vcpu::create(*this, id);
}

Result<kvm_clock_data> Vm::clock() const {
    kvm_clock_data c{};
    TRY(sys::ioctl(m_fd.get(), KVM_GET_CLOCK, &c, "KVM_GET_CLOCK"));
    return c;
}

Result<void> Vm::set_clock(const kvm_clock_data& clock) {
    TRY(sys::ioctl(m_fd.get(), KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK"));
    return {};
}

Result<kvm_irqchip> Vm::irqchip(uint32_t chip_id) const {
    kvm_irqchip chip{};
    chip.chip_id = chip_id;
    TRY(sys::ioctl(m_fd.get(), KVM_GET_IRQCHIP, &chip, "KVM_GET_IRQCHIP"));
    return chip;
}

Result<void> Vm::set_irqchip(const kvm_irqchip& chip) {
    TRY(sys::ioctl(m_fd.get(), KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP"));
    return {};
}

Result<kvm_pit_state2> Vm::pit() const {
    kvm_pit_state2 p{};
    TRY(sys::ioctl(m_fd.get(), KVM_GET_PIT2, &p, "KVM_GET_PIT2"));
    return p;
}

Result<void> Vm::set_pit(const kvm_pit_state2& pit) {
    TRY(sys::ioctl(m_fd.get(), KVM_SET_PIT2, &pit, "KVM_SET_PIT2"));
    return {};
}

Result<void> Vm::dirty_log(uint32_t slot, std::span<uint64_t> bitmap) {
    kvm_dirty_log log{};
    log.slot = slot;
    log.dirty_bitmap = bitmap.data();
    TRY(sys::ioctl(m_fd.get(), KVM_GET_DIRTY_LOG, &log, "KVM_GET_DIRTY_LOG"));
    return {};
}

}  // namespace husk
