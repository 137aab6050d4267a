// JSON text that never throws on the bytes it carries. Strings that come from
// a guest — console lines, husk-agent's error messages, a container's
// annotations — may be invalid UTF-8; nlohmann's dump() throws on those
// (type_error 316), which in a logging or replying thread would abort
// husk-vmm. Here the bad bytes become U+FFFD instead.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace husk {

inline std::string json_text(const nlohmann::json& j, int indent = -1) {
    return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace husk
