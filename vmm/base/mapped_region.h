// MappedRegion: owns one mmap()ed range; move-only; a move empties the source.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "vmm/base/result.h"

namespace husk {

class MappedRegion {
public:
    MappedRegion() = default;
    ~MappedRegion() { reset(); }

    // mmap(2) wrapper; fd -1 for anonymous mappings.
    static Result<MappedRegion> map(size_t size, int prot, int flags, int fd = -1, off_t offset = 0);
    // Takes ownership of an existing mapping.
    static MappedRegion adopt(void* base, size_t size) { return MappedRegion(base, size); }

    MappedRegion(const MappedRegion&) = delete;
    MappedRegion& operator=(const MappedRegion&) = delete;
    MappedRegion(MappedRegion&& other) noexcept
        : m_base(std::exchange(other.m_base, nullptr)), m_size(std::exchange(other.m_size, 0)) {}
    MappedRegion& operator=(MappedRegion&& other) noexcept {
        if (this != &other) {
            reset();
            m_base = std::exchange(other.m_base, nullptr);
            m_size = std::exchange(other.m_size, 0);
        }
        return *this;
    }

    uint8_t* data() const { return static_cast<uint8_t*>(m_base); }
    size_t size() const { return m_size; }
    bool valid() const { return m_base != nullptr; }
    std::span<uint8_t> bytes() const { return {data(), m_size}; }
    void reset();

private:
    MappedRegion(void* base, size_t size) : m_base(base), m_size(size) {}

    void* m_base = nullptr;
    size_t m_size = 0;
};

}  // namespace husk
