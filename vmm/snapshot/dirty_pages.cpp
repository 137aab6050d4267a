#include "vmm/snapshot/dirty_pages.h"

#include "vmm/kvm/vm.h"
#include "vmm/memory/guest_memory.h"

namespace husk::snapshot {

PageBitmap empty_page_bitmap(const GuestMemory& memory) {
    return PageBitmap((memory.size() / GuestMemory::kPageSize + 63) / 64);
}

Result<void> collect_dirty(Vm& vm, const GuestMemory& memory, PageBitmap& bitmap) {
    memory.take_vmm_dirty(bitmap);
    uint32_t slot = 0;
    for (const auto& r : memory.regions()) {
        uint64_t pages = r.size / GuestMemory::kPageSize;
        std::vector<uint64_t> slot_bits((pages + 63) / 64);
        TRY(vm.dirty_log(slot++, slot_bits));
        uint64_t first = r.file_offset / GuestMemory::kPageSize;
        for (uint64_t w = 0; w < slot_bits.size(); ++w) {
            uint64_t bits = slot_bits[w];
            while (bits) {
                uint64_t p = first + w * 64 + uint64_t(__builtin_ctzll(bits));
                bits &= bits - 1;
                bitmap[p / 64] |= 1ull << (p % 64);
            }
        }
    }
    return {};
}

Result<uint64_t> revert_dirty(const GuestMemory& memory, const PageBitmap& bitmap) {
    uint64_t pages = memory.size() / GuestMemory::kPageSize, total = 0;
    auto is_set = [&](uint64_t p) { return (bitmap[p / 64] >> (p % 64)) & 1; };
    for (uint64_t p = 0; p < pages;) {
        if (p % 64 == 0 && bitmap[p / 64] == 0) {
            p += 64;
            continue;
        }
        if (!is_set(p)) {
            ++p;
            continue;
        }
        uint64_t end = p + 1;
        while (end < pages && is_set(end)) ++end;
        TRY(memory.revert_pages(p, end - p));
        total += end - p;
        p = end;
    }
    return total;
}

Result<uint64_t> reset_memory(Vm& vm, GuestMemory& memory, const std::string& remap_from) {
    auto bitmap = empty_page_bitmap(memory);
    if (remap_from.empty()) {
        TRY(collect_dirty(vm, memory, bitmap));
        return revert_dirty(memory, bitmap);
    }
    TRY(memory.remap_from_file(remap_from));
    TRY(collect_dirty(vm, memory, bitmap));  // clears the logs: from here on, pages differ from the new file
    return memory.size() / GuestMemory::kPageSize;
}

}  // namespace husk::snapshot
