// The guest-physical layout husk uses on x86-64. Low memory follows the PC
// conventions Linux expects (EBDA below 640 KiB, BIOS area reserved up to 1 MiB).
#pragma once

#include <cstdint>

namespace husk::x86 {

inline constexpr uint64_t kBootGdt = 0x500;        // GDT used at entry
inline constexpr uint64_t kBootIdt = 0x520;        // empty IDT at entry
inline constexpr uint64_t kPvhStartInfo = 0x6000;  // hvm_start_info, module list and memory map follow
inline constexpr uint64_t kZeroPage = 0x7000;      // Linux boot_params ("zero page")
inline constexpr uint64_t kBootStack = 0x8ff0;     // initial stack for 64-bit entry
inline constexpr uint64_t kPml4 = 0x9000;          // identity page tables for 64-bit entry:
inline constexpr uint64_t kPdpt = 0xa000;          //   PML4 -> PDPT -> 4 page directories of 2 MiB pages
inline constexpr uint64_t kPd = 0xb000;            //   covering the first 4 GiB (0xb000..0xefff)
inline constexpr uint64_t kCmdline = 0x20000;      // kernel command line
inline constexpr uint64_t kCmdlineMax = 0x10000;   // bytes, including the NUL
inline constexpr uint64_t kEbdaStart = 0x9fc00;    // MP table lives here, reserved in the e820 map
inline constexpr uint64_t kHighMemory = 0x100000;  // 1 MiB: kernels load at or above this
inline constexpr uint64_t kBzImageLoad = 0x100000;

// In the MMIO hole.
inline constexpr uint64_t kTssAddr = 0xfffb'd000;          // 3 pages for Intel's real-mode TSS
inline constexpr uint64_t kIdentityMapAddr = 0xfffb'c000;  // 1 page
inline constexpr uint64_t kIoapicAddr = 0xfec0'0000;
inline constexpr uint64_t kLapicAddr = 0xfee0'0000;
inline constexpr uint64_t kMmioDevicesStart = 0xd000'0000;  // virtio-mmio and other MMIO devices

}  // namespace husk::x86
