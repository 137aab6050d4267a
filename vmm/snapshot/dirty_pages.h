// Dirty pages: which pages of guest RAM changed since a snapshot (KVM's
// dirty logs plus husk-vmm's own writes), and putting exactly those back —
// the memory half of an in-place reset.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vmm/base/result.h"

namespace husk {
class GuestMemory;
class Vm;
}  // namespace husk

namespace husk::snapshot {

// One bit per page of guest RAM, page 0 in bit 0 of word 0.
using PageBitmap = std::vector<uint64_t>;

PageBitmap empty_page_bitmap(const GuestMemory& memory);

// ORs into `bitmap` the pages written since the last call: the dirty log of
// every memory slot (KVM_GET_DIRTY_LOG, which clears it) and the VMM's own
// writes (devices). Slots are numbered in the order of memory.regions().
Result<void> collect_dirty(Vm& vm, const GuestMemory& memory, PageBitmap& bitmap);

// Puts every page set in `bitmap` back to the snapshot's content, one call
// per run of consecutive pages. Returns how many pages it reverted.
Result<uint64_t> revert_dirty(const GuestMemory& memory, const PageBitmap& bitmap);

// The memory half of a reset: the pages written since the snapshot are put
// back (returns how many). With `remap_from` (another snapshot's memory file),
// all of guest memory is mapped from that file instead, and the dirty logs
// start again from it.
Result<uint64_t> reset_memory(Vm& vm, GuestMemory& memory, const std::string& remap_from = {});

}  // namespace husk::snapshot
