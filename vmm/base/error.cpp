#include "vmm/base/error.h"

#include <cstring>

namespace husk {

Error Error::from_errno(int code, std::string_view context) {
    Error e(code, true);
    e.m_context.emplace_back(context);
    return e;
}

Error Error::from_string(std::string_view message, int code) {
    Error e(code, false);
    e.m_context.emplace_back(message);
    return e;
}

Error&& Error::with_context(std::string_view context) && {
    m_context.insert(m_context.begin(), std::string(context));
    return std::move(*this);
}

Error& Error::with_context(std::string_view context) & {
    m_context.insert(m_context.begin(), std::string(context));
    return *this;
}

std::string Error::message() const {
    std::string out;
    for (const auto& part : m_context) {
        if (part.empty()) continue;
        if (!out.empty()) out += ": ";
        out += part;
    }
    if (m_errno_text) {
        if (!out.empty()) out += ": ";
        out += std::strerror(m_code);
    }
    return out;
}

}  // namespace husk
