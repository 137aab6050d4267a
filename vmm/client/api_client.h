// A client of husk-vmm's control socket (vmm/api/API.md): one request, one
// reply. A reply {"error": ...} comes back as an Error with that sentence.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "vmm/base/result.h"

namespace husk {

// Lines longer than this are refused both ways.
inline constexpr size_t kMaxApiLine = 64 * 1024;

Result<nlohmann::json> api_call(const std::string& path, const nlohmann::json& request, int timeout_ms = 10000);

}  // namespace husk
