#include "vmm/base/wire.h"

namespace husk::wire {

uint64_t fnv1a64(std::string_view bytes) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : bytes) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    return h;
}

Writer& Writer::u8(uint8_t v) {
    m_out.push_back(char(v));
    return *this;
}
Writer& Writer::u16(uint16_t v) {
    for (int i = 0; i < 2; ++i) m_out.push_back(char(v >> (8 * i)));
    return *this;
}
Writer& Writer::u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) m_out.push_back(char(v >> (8 * i)));
    return *this;
}
Writer& Writer::u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) m_out.push_back(char(v >> (8 * i)));
    return *this;
}
Writer& Writer::str(std::string_view v) {
    u32(uint32_t(v.size()));
    m_out.append(v);
    return *this;
}
Writer& Writer::strings(const std::vector<std::string>& v) {
    u32(uint32_t(v.size()));
    for (const auto& s : v) str(s);
    return *this;
}

bool Reader::take(void* out, size_t size) {
    if (m_failure || m_in.size() - m_pos < size) {
        if (!m_failure) m_failure = "a field runs past the end of the payload";
        std::memset(out, 0, size);
        return false;
    }
    std::memcpy(out, m_in.data() + m_pos, size);
    m_pos += size;
    return true;
}

uint8_t Reader::u8() {
    uint8_t b = 0;
    take(&b, 1);
    return b;
}
uint16_t Reader::u16() {
    uint8_t b[2];
    take(b, 2);
    return uint16_t(b[0] | b[1] << 8);
}
uint32_t Reader::u32() {
    uint8_t b[4];
    take(b, 4);
    return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
}
uint64_t Reader::u64() {
    uint64_t lo = u32();
    uint64_t hi = u32();
    return lo | hi << 32;
}
bool Reader::boolean() {
    uint8_t b = u8();
    if (b > 1 && !m_failure) m_failure = "a boolean is neither 0 nor 1";
    return b == 1;
}
std::string Reader::str() {
    uint32_t size = u32();
    if (m_failure) return {};
    if (size > m_in.size() - m_pos) {
        m_failure = "a string is longer than the payload";
        return {};
    }
    std::string s(m_in.substr(m_pos, size));
    m_pos += size;
    return s;
}
uint32_t Reader::count(size_t min_item_size) {
    uint32_t n = u32();
    if (m_failure) return 0;
    if (min_item_size > 0 && n > remaining() / min_item_size) {
        m_failure = "a list is longer than the payload";
        return 0;
    }
    return n;
}
std::vector<std::string> Reader::strings() {
    // Each string takes at least its 4-byte length.
    uint32_t n = count(4);
    std::vector<std::string> out;
    out.reserve(n);
    for (uint32_t i = 0; i < n && !m_failure; ++i) out.push_back(str());
    return out;
}
Result<void> Reader::finish(std::string_view what) const {
    std::string prefix = m_domain.empty() ? "" : std::string(m_domain) + ": ";
    prefix += "malformed " + std::string(what) + ": ";
    if (m_failure) return Error::from_string(prefix + m_failure);
    if (m_pos != m_in.size())
        return Error::from_string(prefix + std::to_string(m_in.size() - m_pos) + " trailing bytes");
    return {};
}

}  // namespace husk::wire
