// Initial vCPU state for each entry mode: GDT, page tables, segment and
// control registers, general registers, MSRs, FPU and LAPIC.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/kvm/vcpu.h"
#include "vmm/memory/guest_memory.h"

namespace husk::x86 {

enum class EntryMode {
    Pvh,      // 32-bit protected mode, paging off, EBX = hvm_start_info (PVH boot ABI)
    Linux64,  // 64-bit long mode, identity-mapped first 4 GiB, RSI = boot_params (Linux boot protocol)
};

// Writes the boot GDT (and for Linux64 the identity page tables) into guest memory.
Result<void> write_boot_tables(const GuestMemory& mem, EntryMode mode);

// Segment/control registers for the entry mode.
kvm_sregs boot_sregs(kvm_sregs base, EntryMode mode);

// Sets up the boot vCPU: sregs, regs (entry point, boot structure pointer), FPU, MSRs, LAPIC.
Result<void> setup_boot_vcpu(Vcpu& vcpu, EntryMode mode, uint64_t entry, uint64_t boot_struct);
// Application processors wait for INIT/SIPI from the BSP; they only need FPU, MSRs and LAPIC.
Result<void> setup_ap_vcpu(Vcpu& vcpu);

// MSR values a freshly reset CPU has that KVM does not set for us.
std::vector<kvm_msr_entry> boot_msrs();

// GDT descriptors used at entry (SDM Vol. 3A §3.4.5).
uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit);
kvm_segment segment_from_gdt(uint64_t entry, uint16_t selector);

}  // namespace husk::x86
