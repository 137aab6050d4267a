#include "vmm/memory/guest_memory.h"

#include <linux/memfd.h>
#include <sys/mman.h>

#include <fmt/format.h>

#include "vmm/base/system.h"

namespace husk {

std::vector<GuestRegion> GuestMemory::layout(uint64_t size) {
    std::vector<GuestRegion> regions;
    uint64_t low = std::min(size, kMmioHoleStart);
    regions.push_back({0, low, 0});
    if (size > low) regions.push_back({kMmioHoleEnd, size - low, low});
    return regions;
}

Result<GuestMemory> GuestMemory::create(uint64_t size, HugePages huge) {
    constexpr uint64_t kPage = 4096, kHugePage = 2ull << 20;
    uint64_t align = huge == HugePages::On ? kHugePage : kPage;
    if (size == 0 || size % align != 0)
        return Error::from_string("guest memory size must be a non-zero multiple of " +
                                  std::to_string(align >> 10) + " KiB");
    unsigned flags = huge == HugePages::On ? (MFD_HUGETLB | MFD_HUGE_2MB) : 0;
    auto fd = TRY(sys::memfd_create("husk-guest-ram", flags)
                      .context(huge == HugePages::On ? "allocate guest RAM with 2 MiB hugepages (are any reserved in "
                                                       "/proc/sys/vm/nr_hugepages?)"
                                                     : "allocate guest RAM"));
    TRY(sys::ftruncate(fd.get(), off_t(size)).context("size guest RAM"));
    // MAP_NORESERVE: pages are allocated on first touch; an idle guest costs what it uses.
    auto mapping = TRY(MappedRegion::map(size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd.get())
                           .context("map guest RAM"));
    return GuestMemory(std::move(fd), std::move(mapping), layout(size));
}

Result<std::span<uint8_t>> GuestMemory::slice(uint64_t gpa, uint64_t len) const {
    for (const auto& r : m_regions) {
        if (gpa < r.guest_phys) continue;
        uint64_t offset = gpa - r.guest_phys;
        // Overflow-safe: offset <= size and len <= size - offset.
        if (offset > r.size || len > r.size - offset) continue;
        return std::span<uint8_t>(m_mapping.data() + r.file_offset + offset, len);
    }
    return Error::from_string(fmt::format("guest range [{:#x}, +{:#x}) is outside guest RAM", gpa, len), EFAULT);
}

Result<void> GuestMemory::write(uint64_t gpa, std::span<const uint8_t> data) const {
    auto dst = TRY(slice(gpa, data.size()));
    if (!data.empty()) std::memcpy(dst.data(), data.data(), data.size());
    return {};
}

Result<void> GuestMemory::read(uint64_t gpa, std::span<uint8_t> out) const {
    auto src = TRY(slice(gpa, out.size()));
    if (!out.empty()) std::memcpy(out.data(), src.data(), out.size());
    return {};
}

}  // namespace husk
