// Little-endian field encoding shared by the agent protocol and snapshot files.
// The Reader is for untrusted bytes: every read is bounds-checked.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "vmm/base/result.h"

namespace husk::wire {

// FNV-1a, 64-bit: checksums and short stable names (not for security).
uint64_t fnv1a64(std::string_view bytes);

// Appends little-endian fields.
class Writer {
public:
    Writer& u8(uint8_t v);
    Writer& u16(uint16_t v);
    Writer& u32(uint32_t v);
    Writer& u64(uint64_t v);
    Writer& i32(int32_t v) { return u32(uint32_t(v)); }
    Writer& boolean(bool v) { return u8(v ? 1 : 0); }
    // A 32-bit length, then the bytes.
    Writer& str(std::string_view v);
    Writer& strings(const std::vector<std::string>& v);
    // A plain struct as its bytes, preceded by its size so a reader built
    // against a different layout refuses it.
    template <typename T>
    requires std::is_trivially_copyable_v<T> Writer& object(const T& v) {
        return str(std::string_view(reinterpret_cast<const char*>(&v), sizeof v));
    }
    std::string take() { return std::move(m_out); }
    size_t size() const { return m_out.size(); }

private:
    std::string m_out;
};

// Reads fields back. A read past the end, or a string longer than what is
// left, puts the reader in a failed state; all later reads return zero/empty
// and finish() reports the first failure as "<domain>: malformed <what>: ...".
class Reader {
public:
    explicit Reader(std::string_view payload, std::string_view domain = "") : m_in(payload), m_domain(domain) {}
    uint8_t u8();
    uint16_t u16();
    uint32_t u32();
    uint64_t u64();
    int32_t i32() { return int32_t(u32()); }
    bool boolean();
    std::string str();
    std::vector<std::string> strings();
    template <typename T>
    requires std::is_trivially_copyable_v<T> T object() {
        T v{};
        std::string bytes = str();
        if (!m_failure && bytes.size() != sizeof v) m_failure = "a record has the wrong size";
        if (!m_failure) std::memcpy(&v, bytes.data(), sizeof v);
        return v;
    }
    // A count of items each at least `min_item_size` bytes long; a count the
    // rest of the input cannot hold fails the reader (and returns 0).
    uint32_t count(size_t min_item_size);
    bool failed() const { return m_failure != nullptr; }
    size_t remaining() const { return m_in.size() - m_pos; }
    // Fails unless every byte was consumed and no read overran.
    Result<void> finish(std::string_view what) const;

private:
    bool take(void* out, size_t size);
    std::string_view m_in;
    std::string_view m_domain;
    size_t m_pos = 0;
    const char* m_failure = nullptr;
};

}  // namespace husk::wire
