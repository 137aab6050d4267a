// Boot structures: e820 map, command line, initramfs, and either the Linux
// zero page (boot_params) or the PVH hvm_start_info.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vmm/arch/x86/loader.h"
#include "vmm/base/result.h"
#include "vmm/memory/guest_memory.h"

namespace husk::x86 {

inline constexpr uint32_t kE820Ram = 1, kE820Reserved = 2;

struct E820Entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
};

std::vector<E820Entry> e820_map(const GuestMemory& mem);

struct BootInputs {
    std::string cmdline;
    std::span<const uint8_t> initramfs;  // may be empty
    uint32_t vcpu_count = 1;
};

// Writes everything the kernel reads at entry; returns the address that goes
// in RSI (zero page) or EBX (start_info).
Result<uint64_t> write_boot_structures(const GuestMemory& mem, const LoadedKernel& kernel, const BootInputs& in);

}  // namespace husk::x86
