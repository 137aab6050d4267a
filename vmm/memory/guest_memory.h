// GuestMemory: guest RAM in one memfd (or mapped copy-on-write from a
// snapshot's memory file), laid out around the 32-bit MMIO hole, with
// bounds-checked access. Every address here may come from the guest.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "vmm/base/mapped_region.h"
#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk {

struct GuestRegion {
    uint64_t guest_phys;   // first guest-physical address
    uint64_t size;         // bytes
    uint64_t file_offset;  // offset in the backing memfd (and in the host mapping)
};

enum class HugePages { Off, On };

class GuestMemory {
public:
    // The 32-bit MMIO hole: [3 GiB, 4 GiB). RAM beyond 3 GiB continues at 4 GiB.
    static constexpr uint64_t kMmioHoleStart = 0xC000'0000;
    static constexpr uint64_t kMmioHoleEnd = 0x1'0000'0000;

    static constexpr uint64_t kPageSize = 4096;

    static Result<GuestMemory> create(uint64_t size_bytes, HugePages huge = HugePages::Off);
    // Guest RAM mapped MAP_PRIVATE from a snapshot's memory file: pages load
    // lazily, stay shared through the page cache until written, and a written
    // page is the process's own copy.
    static Result<GuestMemory> from_file(const std::string& path, uint64_t size_bytes);
    // Only the layout; used by tests and the loaders' planning.
    static std::vector<GuestRegion> layout(uint64_t size_bytes);

    const std::vector<GuestRegion>& regions() const { return m_regions; }
    uint64_t size() const { return m_mapping.size(); }
    int fd() const { return m_fd.get(); }
    uint8_t* host_base() const { return m_mapping.data(); }
    // End of RAM below the MMIO hole.
    uint64_t low_ram_end() const { return m_regions.front().guest_phys + m_regions.front().size; }

    // The host view of [gpa, gpa+len), which must lie inside one region, to read. guest-controlled
    Result<std::span<const uint8_t>> slice(uint64_t gpa, uint64_t len) const;
    // The same range to write (or to hand to the host kernel to write into):
    // its pages are recorded as written by the VMM, which KVM's dirty log
    // does not see, so a reset reverts them. The only way to a writable span.
    Result<std::span<uint8_t>> writable_slice(uint64_t gpa, uint64_t len) const;
    bool contains(uint64_t gpa, uint64_t len) const { return !slice(gpa, len).is_error(); }

    Result<void> write(uint64_t gpa, std::span<const uint8_t> data) const;
    // From here on, writable_slice() and write() record the pages they hand out.
    void track_vmm_writes();
    // Moves the VMM-written pages (one bit per page of the host mapping) into `bitmap`.
    void take_vmm_dirty(std::span<uint64_t> bitmap) const;

    // Snapshot-backed memory only: pages [first, first+count) of the host
    // mapping hold the memory file's content again (copied back for short
    // runs, dropped so the file shows through for long ones).
    Result<void> revert_pages(uint64_t first_page, uint64_t count) const;
    // Maps another memory file of the same size over the whole range (in place,
    // so KVM's memory slots stay valid) and makes it the backing.
    Result<void> remap_from_file(const std::string& path);
    bool snapshot_backed() const { return m_private; }
    // Gives [gpa, gpa+len) back to the host (a balloon's inflated or reported
    // pages): whole pages only, inside one region. The range reads as zeros
    // afterwards. A memfd's pages are punched out of the file; on a snapshot's
    // private mapping the range is remapped anonymous (dropping the private
    // copy alone would show the snapshot's data again). KVM's MMU notifiers
    // drop the EPT/NPT entries. The VMM-write tracker records the range, so a
    // reset reverts it. Thread-safe against other discards and guest access.
    Result<void> discard(uint64_t gpa, uint64_t len) const;
    // Writes every page to `path` (sparse: pages never written stay holes).
    Result<void> save(const std::string& path) const;
    Result<void> read(uint64_t gpa, std::span<uint8_t> out) const;

    template <typename T>
    requires std::is_trivially_copyable_v<T> Result<void> write_obj(uint64_t gpa, const T& value)
    const { return write(gpa, std::span(reinterpret_cast<const uint8_t*>(&value), sizeof(T))); }
    template <typename T>
    requires std::is_trivially_copyable_v<T> Result<T> read_obj(uint64_t gpa)
    const {
        T value;
        TRY(read(gpa, std::span(reinterpret_cast<uint8_t*>(&value), sizeof(T))));
        return value;
    }

private:
    Result<std::span<uint8_t>> range(uint64_t gpa, uint64_t len) const;
    // Records that the VMM itself wrote [gpa, gpa+len). A no-op until track_vmm_writes().
    void mark_dirty(uint64_t gpa, uint64_t len) const;
    GuestMemory(UniqueFd fd, MappedRegion mapping, std::vector<GuestRegion> regions, bool is_private)
        : m_fd(std::move(fd)), m_mapping(std::move(mapping)), m_regions(std::move(regions)), m_private(is_private) {}

    UniqueFd m_fd;
    MappedRegion m_mapping;
    std::vector<GuestRegion> m_regions;
    bool m_private = false;
    MappedRegion m_file_view;  // the memory file, read-only and shared: what reverted pages copy from
    // One bit per page the VMM wrote since the last take; null when not tracking.
    std::unique_ptr<std::atomic<uint64_t>[]> m_vmm_dirty;
    // Snapshot-backed memory: one bit per page remapped anonymous by discard();
    // reverting such a page maps the file back instead of copying.
    std::unique_ptr<std::atomic<uint64_t>[]> m_anonymous;
    // Pages whose bit is set in `bits` within [first, first+count).
    static bool any_set(const std::atomic<uint64_t>* bits, uint64_t first, uint64_t count);
    Result<void> map_file_over(uint64_t first_page, uint64_t count) const;
};

}  // namespace husk
