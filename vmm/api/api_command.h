// The control socket's requests as types (vmm/api/API.md): a request line is
// checked and turned into one of these at the socket, and the VMM handles
// the type, never the JSON.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>

#include "vmm/base/result.h"

namespace husk::api {

struct State {};
struct Pause {};
struct Resume {};
struct Stats {};
struct Balloon {
    std::optional<uint32_t> target_mib;  // none: leave the target as it is
    bool fresh_stats = true;             // ask the guest for new statistics first
};
struct Snapshot {
    std::string path;  // a directory, made if missing
};
struct Reset {};
struct Restore {
    std::string path;  // another snapshot of the same machine
};
// Container commands: need --container.
struct Start {};
struct Kill {
    int signal;
    bool all = false;
};
struct Resize {
    uint16_t rows, cols;
};
struct PlugNet {};

using Command =
    std::variant<State, Pause, Resume, Stats, Balloon, Snapshot, Reset, Restore, Start, Kill, Resize, PlugNet>;

// The request's "cmd" and fields, checked: an unknown command, a missing or
// mistyped field, a value out of range is an error naming it (EINVAL).
Result<Command> parse_command(const nlohmann::json& request);

// The command's "cmd" string.
const char* command_name(const Command& command);
bool needs_container(const Command& command);

}  // namespace husk::api
