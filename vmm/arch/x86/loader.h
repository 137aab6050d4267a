// Kernel loaders: an ELF vmlinux (entered through its PVH note, or in 64-bit
// mode at e_entry when it has none) and a bzImage (Linux 64-bit boot protocol).
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>
#include <span>

#include "vmm/arch/x86/regs.h"
#include "vmm/base/result.h"
#include "vmm/memory/guest_memory.h"

namespace husk::x86 {

enum class EntryPreference { Auto, Pvh, Linux64 };

struct LoadedKernel {
    EntryMode mode;
    uint64_t entry;       // guest-physical entry point
    uint64_t kernel_end;  // first byte above the loaded image
    std::optional<setup_header> bzimage_header;  // for the zero page
};

enum class KernelFormat { Elf, BzImage, Unknown };
KernelFormat detect_kernel_format(std::span<const uint8_t> image);

// Finds XEN_ELFNOTE_PHYS32_ENTRY in an ELF image's PT_NOTE segments.
Result<std::optional<uint64_t>> find_pvh_entry(std::span<const uint8_t> elf);

Result<LoadedKernel> load_kernel(const GuestMemory& mem, std::span<const uint8_t> image, EntryPreference pref);

}  // namespace husk::x86
