#include "vmm/arch/x86/loader.h"

#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "vmm/arch/x86/boot.h"
#include "vmm/arch/x86/layout.h"

namespace husk::x86 {
namespace {

// A minimal ELF64 with one PT_LOAD at 2 MiB and optionally a PVH note.
std::vector<uint8_t> make_elf(bool pvh_note, uint64_t paddr = 0x200000) {
    std::vector<uint8_t> img(0x400, 0);
    Elf64_Ehdr eh{};
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_entry = paddr + 0x10;
    eh.e_phoff = sizeof eh;
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = pvh_note ? 2 : 1;
    std::memcpy(img.data(), &eh, sizeof eh);
    Elf64_Phdr load{};
    load.p_type = PT_LOAD;
    load.p_offset = 0x200;
    load.p_paddr = paddr;
    load.p_filesz = 0x100;
    load.p_memsz = 0x2000;
    std::memcpy(img.data() + sizeof eh, &load, sizeof load);
    for (int i = 0; i < 0x100; ++i) img[0x200 + size_t(i)] = 0xcc;
    if (pvh_note) {
        Elf64_Phdr note{};
        note.p_type = PT_NOTE;
        note.p_offset = 0x300;
        note.p_filesz = 12 + 4 + 4;
        std::memcpy(img.data() + sizeof eh + sizeof load, &note, sizeof note);
        uint32_t hdr[3] = {4, 4, 18};
        std::memcpy(img.data() + 0x300, hdr, 12);
        std::memcpy(img.data() + 0x30c, "Xen", 4);
        uint32_t entry = 0x200040;
        std::memcpy(img.data() + 0x310, &entry, 4);
    }
    return img;
}

TEST(Loader, ElfWithPvhNoteEntersThroughIt) {
    auto mem = GuestMemory::create(16 << 20).release_value();
    auto k = load_kernel(mem, make_elf(true), EntryPreference::Auto);
    ASSERT_FALSE(k.is_error()) << k.error().message();
    EXPECT_EQ(k.value().mode, EntryMode::Pvh);
    EXPECT_EQ(k.value().entry, 0x200040u);
    EXPECT_EQ(k.value().kernel_end, 0x202000u);
    EXPECT_EQ(mem.read_obj<uint8_t>(0x200000).value(), 0xcc);
    EXPECT_EQ(mem.read_obj<uint8_t>(0x200100).value(), 0);  // bss zeroed
}

TEST(Loader, ElfWithoutNoteEntersIn64BitMode) {
    auto mem = GuestMemory::create(16 << 20).release_value();
    auto k = load_kernel(mem, make_elf(false), EntryPreference::Auto);
    ASSERT_FALSE(k.is_error());
    EXPECT_EQ(k.value().mode, EntryMode::Linux64);
    EXPECT_EQ(k.value().entry, 0x200010u);
    auto forced = load_kernel(mem, make_elf(false), EntryPreference::Pvh);
    ASSERT_TRUE(forced.is_error());
    EXPECT_NE(forced.error().message().find("CONFIG_PVH"), std::string::npos);
}

TEST(Loader, RejectsGarbageAndTruncation) {
    auto mem = GuestMemory::create(16 << 20).release_value();
    std::vector<uint8_t> junk(100, 0x41);
    EXPECT_EQ(load_kernel(mem, junk, EntryPreference::Auto).error().message(),
              "kernel is neither an ELF vmlinux nor a bzImage");
    auto elf = make_elf(true);
    elf.resize(0x250);  // segment runs past the end of the file
    EXPECT_TRUE(load_kernel(mem, elf, EntryPreference::Auto).is_error());
    auto big = make_elf(false, (16ull << 20) - 0x1000);  // memsz crosses the end of RAM
    EXPECT_TRUE(load_kernel(mem, big, EntryPreference::Auto).is_error());
    auto low = make_elf(false, 0x1000);  // over the boot structures
    EXPECT_TRUE(load_kernel(mem, low, EntryPreference::Auto).is_error());
}

TEST(Loader, BzImageNeeds64BitEntry) {
    auto mem = GuestMemory::create(32 << 20).release_value();
    std::vector<uint8_t> img(0x2000, 0);
    std::memcpy(img.data() + 0x202, "HdrS", 4);
    img[0x1f1] = 1;  // setup_sects
    uint16_t version = 0x020f;
    std::memcpy(img.data() + 0x206, &version, 2);
    EXPECT_NE(load_kernel(mem, img, EntryPreference::Auto).error().message().find("64-bit entry"), std::string::npos);
    uint16_t xlf = XLF_KERNEL_64;
    std::memcpy(img.data() + offsetof(setup_header, xloadflags) + 0x1f1, &xlf, 2);
    auto k = load_kernel(mem, img, EntryPreference::Auto);
    ASSERT_FALSE(k.is_error()) << k.error().message();
    EXPECT_EQ(k.value().entry, kBzImageLoad + 0x200);
    EXPECT_TRUE(k.value().bzimage_header.has_value());
}

TEST(Boot, PvhStartInfoAndInitramfsPlacement) {
    auto mem = GuestMemory::create(64 << 20).release_value();
    auto k = load_kernel(mem, make_elf(true), EntryPreference::Auto).release_value();
    std::vector<uint8_t> initrd(10000, 0x77);
    BootInputs in{"console=ttyS0", initrd, 2};
    auto at = write_boot_structures(mem, k, in);
    ASSERT_FALSE(at.is_error()) << at.error().message();
    EXPECT_EQ(at.value(), kPvhStartInfo);
    EXPECT_EQ(mem.read_obj<uint32_t>(kPvhStartInfo).value(), 0x336ec578u);
    EXPECT_EQ(mem.read_obj<uint32_t>(kPvhStartInfo + 12).value(), 1u);  // one module
    uint64_t mod = mem.read_obj<uint64_t>(kPvhStartInfo + 16).value();
    uint64_t initrd_at = mem.read_obj<uint64_t>(mod).value();
    EXPECT_EQ(initrd_at % 4096, 0u);
    EXPECT_LE(initrd_at + initrd.size(), 64u << 20);
    EXPECT_EQ(mem.read_obj<uint8_t>(initrd_at).value(), 0x77);
    EXPECT_EQ(mem.read_obj<char>(kCmdline).value(), 'c');
}

TEST(Boot, CommandLineTooLongIsRefused) {
    auto mem = GuestMemory::create(64 << 20).release_value();
    auto k = load_kernel(mem, make_elf(false), EntryPreference::Auto).release_value();
    BootInputs in{std::string(kCmdlineMax, 'x'), {}, 1};
    EXPECT_TRUE(write_boot_structures(mem, k, in).is_error());
}

TEST(Boot, E820SkipsTheHole) {
    auto mem = GuestMemory::create((3ull << 30) + (64ull << 20)).release_value();
    auto map = e820_map(mem);
    ASSERT_EQ(map.size(), 4u);
    EXPECT_EQ(map[1].type, kE820Reserved);
    EXPECT_EQ(map[3].addr, 1ull << 32);
    EXPECT_EQ(map[3].size, 64ull << 20);
}

}  // namespace
}  // namespace husk::x86
