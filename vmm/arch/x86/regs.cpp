#include "vmm/arch/x86/regs.h"

#include <array>
#include <cstring>

#include "vmm/arch/x86/layout.h"

namespace husk::x86 {
namespace {

constexpr uint64_t kCr0Pe = 1ull << 0, kCr0Mp = 1ull << 1, kCr0Et = 1ull << 4, kCr0Ne = 1ull << 5,
                   kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kEferLme = 1ull << 8, kEferLma = 1ull << 10;

// Selectors: 0x10 code, 0x18 data, 0x20 TSS.
constexpr uint16_t kCodeSelector = 0x10, kDataSelector = 0x18, kTssSelector = 0x20;

std::array<uint64_t, 5> gdt_for(EntryMode mode) {
    // Flags: [15] G, [14] D/B, [13] L, [7] P, [6:5] DPL, [4] S, [3:0] type.
    uint16_t code = mode == EntryMode::Linux64 ? 0xa09b : 0xc09b;  // long mode code vs 32-bit code
    return {
        0,
        0,
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),  // data, read/write, accessed
        gdt_entry(0x008b, 0, 0x67),     // 32/64-bit TSS, busy
    };
}

}  // namespace

uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit) {
    return ((uint64_t(base) & 0xff000000ull) << 32) | ((uint64_t(flags) & 0xf0ffull) << 40) |
           ((uint64_t(limit) & 0x000f0000ull) << 32) | ((uint64_t(base) & 0x00ffffffull) << 16) |
           (uint64_t(limit) & 0x0000ffffull);
}

kvm_segment segment_from_gdt(uint64_t e, uint16_t selector) {
    kvm_segment s{};
    s.base = uint64_t(((e >> 16) & 0xffffff) | ((e >> 32) & 0xff000000));
    uint32_t limit = uint32_t((e & 0xffff) | ((e >> 32) & 0xf0000));
    s.g = (e >> 55) & 1;
    s.limit = s.g ? (limit << 12) | 0xfff : limit;
    s.selector = selector;
    s.type = (e >> 40) & 0xf;
    s.s = (e >> 44) & 1;
    s.dpl = (e >> 45) & 3;
    s.present = (e >> 47) & 1;
    s.avl = (e >> 52) & 1;
    s.l = (e >> 53) & 1;
    s.db = (e >> 54) & 1;
    s.unusable = s.present ? 0 : 1;
    return s;
}

Result<void> write_boot_tables(const GuestMemory& mem, EntryMode mode) {
    auto gdt = gdt_for(mode);
    TRY(mem.write_obj(kBootGdt, gdt).context("write boot GDT"));
    TRY(mem.write_obj<uint64_t>(kBootIdt, 0).context("write boot IDT"));
    if (mode == EntryMode::Linux64) {
        // PML4[0] -> PDPT; PDPT[0..3] -> four PDs of 512 2-MiB pages: identity map of 4 GiB.
        TRY(mem.write_obj<uint64_t>(kPml4, kPdpt | 0x3).context("write page tables"));
        for (uint64_t i = 0; i < 4; ++i) {
            TRY(mem.write_obj<uint64_t>(kPdpt + i * 8, (kPd + i * 0x1000) | 0x3).context("write page tables"));
            std::array<uint64_t, 512> pd;
            for (uint64_t j = 0; j < 512; ++j) pd[j] = ((i * 512 + j) << 21) | 0x83;  // present, writable, 2 MiB
            TRY(mem.write_obj(kPd + i * 0x1000, pd).context("write page tables"));
        }
    }
    return {};
}

kvm_sregs boot_sregs(kvm_sregs s, EntryMode mode) {
    auto gdt = gdt_for(mode);
    kvm_segment code = segment_from_gdt(gdt[2], kCodeSelector);
    kvm_segment data = segment_from_gdt(gdt[3], kDataSelector);
    kvm_segment tss = segment_from_gdt(gdt[4], kTssSelector);
    s.cs = code;
    s.ds = s.es = s.fs = s.gs = s.ss = data;
    s.tr = tss;
    s.gdt.base = kBootGdt;
    s.gdt.limit = uint16_t(sizeof(uint64_t) * gdt.size() - 1);
    s.idt.base = kBootIdt;
    s.idt.limit = 7;
    if (mode == EntryMode::Linux64) {
        s.cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Pg;
        s.cr3 = kPml4;
        s.cr4 = kCr4Pae;
        s.efer = kEferLme | kEferLma;
    } else {
        // PVH boot ABI (xen/include/public/arch-x86/hvm/start_info.h): CR0.PE and ET, paging off.
        s.cr0 = kCr0Pe | kCr0Et;
        s.cr3 = 0;
        s.cr4 = 0;
        s.efer = 0;
    }
    return s;
}

std::vector<kvm_msr_entry> boot_msrs() {
    auto msr = [](uint32_t index, uint64_t value) {
        kvm_msr_entry e{};
        e.index = index;
        e.data = value;
        return e;
    };
    return {
        msr(0x174, 0),                         // IA32_SYSENTER_CS
        msr(0x175, 0),                         // IA32_SYSENTER_ESP
        msr(0x176, 0),                         // IA32_SYSENTER_EIP
        msr(0xc0000081, 0),                    // STAR
        msr(0xc0000082, 0),                    // LSTAR
        msr(0xc0000083, 0),                    // CSTAR
        msr(0xc0000102, 0),                    // KERNEL_GS_BASE
        msr(0xc0000084, 0),                    // SYSCALL_MASK
        msr(0x10, 0),                          // TSC
        msr(0x1a0, 1),                         // IA32_MISC_ENABLE: fast strings
        msr(0x2ff, (1ull << 11) | 6),          // MTRRdefType: MTRRs on, default write-back
    };
}

Result<void> setup_common(Vcpu& vcpu) {
    kvm_fpu fpu{};
    fpu.fcw = 0x37f;      // FNINIT value
    fpu.mxcsr = 0x1f80;   // all SIMD exceptions masked
    TRY(vcpu.set_fpu(fpu));
    TRY(vcpu.set_msrs(boot_msrs()));
    // Virtual wire mode: LINT0 takes the PIC's ExtINT, LINT1 takes NMI (MP spec §3.6.2.2).
    auto lapic = TRY(vcpu.lapic());
    auto set_lvt = [&](size_t reg, uint32_t mode) {
        uint32_t v;
        std::memcpy(&v, lapic.regs + reg, 4);
        v = (v & ~0x700u) | (mode << 8);
        std::memcpy(lapic.regs + reg, &v, 4);
    };
    set_lvt(0x350, 7);  // LVT LINT0: ExtINT
    set_lvt(0x360, 4);  // LVT LINT1: NMI
    TRY(vcpu.set_lapic(lapic));
    return {};
}

Result<void> setup_boot_vcpu(Vcpu& vcpu, EntryMode mode, uint64_t entry, uint64_t boot_struct) {
    auto sregs = TRY(vcpu.sregs());
    TRY(vcpu.set_sregs(boot_sregs(sregs, mode)));
    kvm_regs regs{};
    regs.rflags = 0x2;  // bit 1 is reserved and always set
    regs.rip = entry;
    if (mode == EntryMode::Linux64) {
        regs.rsi = boot_struct;
        regs.rsp = regs.rbp = kBootStack;
    } else {
        regs.rbx = boot_struct;
    }
    TRY(vcpu.set_regs(regs));
    return setup_common(vcpu);
}

Result<void> setup_ap_vcpu(Vcpu& vcpu) { return setup_common(vcpu); }

}  // namespace husk::x86
