#include "vmm/base/mapped_region.h"

#include <cerrno>

namespace husk {

Result<MappedRegion> MappedRegion::map(size_t size, int prot, int flags, int fd, off_t offset) {
    void* base = ::mmap(nullptr, size, prot, flags, fd, offset);
    if (base == MAP_FAILED) return Error::from_errno(errno, "mmap");
    return MappedRegion(base, size);
}

void MappedRegion::reset() {
    if (m_base) ::munmap(m_base, m_size);
    m_base = nullptr;
    m_size = 0;
}

}  // namespace husk
