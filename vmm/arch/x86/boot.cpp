#include "vmm/arch/x86/boot.h"

#include <cstring>

#include "vmm/arch/x86/layout.h"
#include "vmm/arch/x86/mptable.h"
#include "vmm/arch/x86/regs.h"

namespace husk::x86 {
namespace {

// PVH boot ABI structures (xen/include/public/arch-x86/hvm/start_info.h), version 1.
struct HvmStartInfo {
    uint32_t magic;  // 0x336ec578
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
};
struct HvmModlistEntry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};
struct HvmMemmapEntry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56 && sizeof(HvmModlistEntry) == 32 && sizeof(HvmMemmapEntry) == 24);
constexpr uint32_t kHvmStartMagic = 0x336ec578;

constexpr uint64_t kPage = 4096;

// Highest page-aligned address at which `size` bytes fit below `limit` and above `floor`.
Result<uint64_t> place_initramfs(const GuestMemory& mem, uint64_t size, uint64_t floor, uint64_t limit) {
    uint64_t top = std::min(mem.low_ram_end(), limit);
    if (size > top) return Error::from_string("initramfs does not fit in guest RAM");
    uint64_t at = (top - size) & ~(kPage - 1);
    if (at < floor) return Error::from_string("initramfs does not fit in guest RAM above the kernel; give the VM more memory");
    return at;
}

}  // namespace

std::vector<E820Entry> e820_map(const GuestMemory& mem) {
    std::vector<E820Entry> map;
    map.push_back({0, kEbdaStart, kE820Ram});
    map.push_back({kEbdaStart, kHighMemory - kEbdaStart, kE820Reserved});
    const auto& regions = mem.regions();
    map.push_back({kHighMemory, regions[0].size - kHighMemory, kE820Ram});
    for (size_t i = 1; i < regions.size(); ++i) map.push_back({regions[i].guest_phys, regions[i].size, kE820Ram});
    return map;
}

Result<uint64_t> write_boot_structures(const GuestMemory& mem, const LoadedKernel& kernel, const BootInputs& in) {
    if (mem.low_ram_end() < 16ull << 20) return Error::from_string("guest memory must be at least 16 MiB");
    if (in.cmdline.size() + 1 > kCmdlineMax)
        return Error::from_string("kernel command line is longer than " + std::to_string(kCmdlineMax - 1) + " bytes");
    std::vector<uint8_t> cmdline(in.cmdline.begin(), in.cmdline.end());
    cmdline.push_back(0);
    TRY(mem.write(kCmdline, cmdline).context("write kernel command line"));
    TRY(write_boot_tables(mem, kernel.mode));
    TRY(write_mptable(mem, in.vcpu_count));

    uint64_t initrd_addr = 0;
    if (!in.initramfs.empty()) {
        uint64_t limit = ~0ull;
        if (kernel.bzimage_header && kernel.bzimage_header->initrd_addr_max)
            limit = uint64_t(kernel.bzimage_header->initrd_addr_max) + 1;
        uint64_t floor = (kernel.kernel_end + kPage - 1) & ~(kPage - 1);
        initrd_addr = TRY(place_initramfs(mem, in.initramfs.size(), floor, limit));
        TRY(mem.write(initrd_addr, in.initramfs).context("write initramfs"));
    }

    auto map = e820_map(mem);
    if (kernel.mode == EntryMode::Pvh) {
        // start_info, then one module entry, then the memory map.
        uint64_t modlist = kPvhStartInfo + sizeof(HvmStartInfo);
        uint64_t memmap = modlist + sizeof(HvmModlistEntry);
        HvmStartInfo si{};
        si.magic = kHvmStartMagic;
        si.version = 1;
        si.cmdline_paddr = kCmdline;
        si.memmap_paddr = memmap;
        si.memmap_entries = uint32_t(map.size());
        if (initrd_addr) {
            si.nr_modules = 1;
            si.modlist_paddr = modlist;
            HvmModlistEntry mod{};
            mod.paddr = initrd_addr;
            mod.size = in.initramfs.size();
            TRY(mem.write_obj(modlist, mod));
        }
        for (size_t i = 0; i < map.size(); ++i) {
            HvmMemmapEntry e{map[i].addr, map[i].size, map[i].type, 0};
            TRY(mem.write_obj(memmap + i * sizeof e, e));
        }
        TRY(mem.write_obj(kPvhStartInfo, si).context("write PVH start info"));
        return kPvhStartInfo;
    }

    // Linux boot protocol (Documentation/x86/boot.rst) zero page.
    boot_params zp{};
    if (kernel.bzimage_header) zp.hdr = *kernel.bzimage_header;
    zp.hdr.type_of_loader = 0xff;  // undefined boot loader
    zp.hdr.boot_flag = 0xaa55;
    zp.hdr.header = 0x53726448;  // "HdrS"
    zp.hdr.loadflags |= CAN_USE_HEAP | LOADED_HIGH | KEEP_SEGMENTS;
    zp.hdr.heap_end_ptr = 0xfe00;
    zp.hdr.cmd_line_ptr = uint32_t(kCmdline);
    zp.hdr.cmdline_size = uint32_t(cmdline.size());
    zp.hdr.kernel_alignment = zp.hdr.kernel_alignment ? zp.hdr.kernel_alignment : 0x1000000;
    if (initrd_addr) {
        zp.hdr.ramdisk_image = uint32_t(initrd_addr);
        zp.hdr.ramdisk_size = uint32_t(in.initramfs.size());
        zp.ext_ramdisk_image = uint32_t(initrd_addr >> 32);
        zp.ext_ramdisk_size = uint32_t(uint64_t(in.initramfs.size()) >> 32);
    }
    if (map.size() > E820_MAX_ENTRIES_ZEROPAGE) return Error::from_string("too many e820 entries");
    for (size_t i = 0; i < map.size(); ++i) {
        zp.e820_table[i].addr = map[i].addr;
        zp.e820_table[i].size = map[i].size;
        zp.e820_table[i].type = map[i].type;
    }
    zp.e820_entries = uint8_t(map.size());
    TRY(mem.write_obj(kZeroPage, zp).context("write zero page"));
    return kZeroPage;
}

}  // namespace husk::x86
