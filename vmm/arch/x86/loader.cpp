#include "vmm/arch/x86/loader.h"

#include <elf.h>

#include <cstring>

#include "vmm/arch/x86/layout.h"

namespace husk::x86 {
namespace {

constexpr uint32_t kXenElfnotePhys32Entry = 18;  // xen/include/public/elfnote.h

// Bounds check within the image file; the image is user input.
bool in_image(std::span<const uint8_t> image, uint64_t offset, uint64_t len) {
    return offset <= image.size() && len <= image.size() - offset;
}

template <typename T>
T read_at(std::span<const uint8_t> image, uint64_t offset) {
    T v;
    std::memcpy(&v, image.data() + offset, sizeof v);
    return v;
}

Result<Elf64_Ehdr> elf_header(std::span<const uint8_t> elf) {
    if (!in_image(elf, 0, sizeof(Elf64_Ehdr))) return Error::from_string("kernel ELF header truncated");
    auto eh = read_at<Elf64_Ehdr>(elf, 0);
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB)
        return Error::from_string("kernel is not a 64-bit little-endian ELF");
    if (eh.e_machine != EM_X86_64) return Error::from_string("kernel ELF is not for x86-64");
    if (eh.e_phentsize != sizeof(Elf64_Phdr)) return Error::from_string("kernel ELF has odd program headers");
    if (!in_image(elf, eh.e_phoff, uint64_t(eh.e_phnum) * sizeof(Elf64_Phdr)))
        return Error::from_string("kernel ELF program headers truncated");
    return eh;
}

Result<LoadedKernel> load_elf(const GuestMemory& mem, std::span<const uint8_t> elf, EntryPreference pref) {
    auto eh = TRY(elf_header(elf));
    uint64_t end = 0;
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
        auto ph = read_at<Elf64_Phdr>(elf, eh.e_phoff + uint64_t(i) * sizeof(Elf64_Phdr));
        if (ph.p_type != PT_LOAD) continue;
        if (!in_image(elf, ph.p_offset, ph.p_filesz)) return Error::from_string("kernel ELF segment truncated");
        if (ph.p_filesz > ph.p_memsz) return Error::from_string("kernel ELF segment larger in file than in memory");
        if (ph.p_paddr < kHighMemory)
            return Error::from_string("kernel ELF segment loads below 1 MiB, over the boot structures");
        auto dst =
            TRY(mem.writable_slice(ph.p_paddr, ph.p_memsz).context("kernel ELF segment does not fit in guest RAM"));
        std::memcpy(dst.data(), elf.data() + ph.p_offset, ph.p_filesz);
        std::memset(dst.data() + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
        end = std::max(end, ph.p_paddr + ph.p_memsz);
    }
    if (end == 0) return Error::from_string("kernel ELF has no loadable segment");

    auto pvh = TRY(find_pvh_entry(elf));
    LoadedKernel k{};
    k.kernel_end = end;
    if (pref == EntryPreference::Pvh || (pref == EntryPreference::Auto && pvh)) {
        if (!pvh)
            return Error::from_string(
                "kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y");
        k.mode = EntryMode::Pvh;
        k.entry = *pvh;
    } else {
        k.mode = EntryMode::Linux64;
        k.entry = eh.e_entry;
    }
    return k;
}

Result<LoadedKernel> load_bzimage(const GuestMemory& mem, std::span<const uint8_t> image, EntryPreference pref) {
    if (pref == EntryPreference::Pvh)
        return Error::from_string("a bzImage has no PVH entry; use entry = \"linux64\" or a vmlinux");
    constexpr uint64_t kHdrOffset = 0x1f1;
    if (!in_image(image, kHdrOffset, sizeof(setup_header))) return Error::from_string("bzImage setup header truncated");
    auto hdr = read_at<setup_header>(image, kHdrOffset);
    // Boot protocol 2.12+ has xloadflags; XLF_KERNEL_64 says a 64-bit entry exists at +0x200.
    if (hdr.version < 0x020c || !(hdr.xloadflags & XLF_KERNEL_64))
        return Error::from_string("bzImage has no 64-bit entry point (boot protocol 2.12+ with XLF_KERNEL_64 needed)");
    uint64_t setup_sects = hdr.setup_sects ? hdr.setup_sects : 4;
    uint64_t offset = (setup_sects + 1) * 512;
    if (offset >= image.size()) return Error::from_string("bzImage has no protected-mode kernel");
    uint64_t size = image.size() - offset;
    // The decompressor needs init_size bytes from the load address.
    uint64_t needed = std::max<uint64_t>(size, hdr.init_size);
    TRY(mem.slice(kBzImageLoad, needed).context("bzImage does not fit in guest RAM"));
    TRY(mem.write(kBzImageLoad, image.subspan(offset)));
    LoadedKernel k{};
    k.mode = EntryMode::Linux64;
    k.entry = kBzImageLoad + 0x200;
    k.kernel_end = kBzImageLoad + needed;
    k.bzimage_header = hdr;
    return k;
}

}  // namespace

KernelFormat detect_kernel_format(std::span<const uint8_t> image) {
    if (image.size() >= 4 && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0) return KernelFormat::Elf;
    if (image.size() >= 0x206 && std::memcmp(image.data() + 0x202, "HdrS", 4) == 0) return KernelFormat::BzImage;
    return KernelFormat::Unknown;
}

Result<std::optional<uint64_t>> find_pvh_entry(std::span<const uint8_t> elf) {
    auto eh = TRY(elf_header(elf));
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
        auto ph = read_at<Elf64_Phdr>(elf, eh.e_phoff + uint64_t(i) * sizeof(Elf64_Phdr));
        if (ph.p_type != PT_NOTE) continue;
        if (!in_image(elf, ph.p_offset, ph.p_filesz)) return Error::from_string("kernel ELF note segment truncated");
        uint64_t pos = ph.p_offset, end = ph.p_offset + ph.p_filesz;
        while (end - pos >= sizeof(Elf64_Nhdr)) {
            auto nh = read_at<Elf64_Nhdr>(elf, pos);
            uint64_t name_at = pos + sizeof nh;
            uint64_t desc_at = name_at + ((uint64_t(nh.n_namesz) + 3) & ~3ull);
            uint64_t next = desc_at + ((uint64_t(nh.n_descsz) + 3) & ~3ull);
            if (next > end || next <= pos) break;
            if (nh.n_type == kXenElfnotePhys32Entry && nh.n_namesz == 4 &&
                std::memcmp(elf.data() + name_at, "Xen", 4) == 0) {
                if (nh.n_descsz == 4) return std::optional<uint64_t>(read_at<uint32_t>(elf, desc_at));
                if (nh.n_descsz == 8) return std::optional<uint64_t>(read_at<uint64_t>(elf, desc_at));
                return Error::from_string("kernel PVH note has a bad size");
            }
            pos = next;
        }
    }
    return std::optional<uint64_t>();
}

Result<LoadedKernel> load_kernel(const GuestMemory& mem, std::span<const uint8_t> image, EntryPreference pref) {
    switch (detect_kernel_format(image)) {
        case KernelFormat::Elf:
            return load_elf(mem, image, pref);
        case KernelFormat::BzImage:
            return load_bzimage(mem, image, pref);
        case KernelFormat::Unknown:
            break;
    }
    return Error::from_string("kernel is neither an ELF vmlinux nor a bzImage");
}

}  // namespace husk::x86
