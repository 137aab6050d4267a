#include "vmm/api/api_command.h"

#include <fmt/format.h>
#include <signal.h>

namespace husk::api {
namespace {

Error invalid(const std::string& what) {
    return Error::from_string(what, EINVAL);
}

// A field that must be a non-empty string when present; "" when absent.
Result<std::string> string_field(const nlohmann::json& request, const char* cmd, const char* name) {
    if (!request.contains(name)) return std::string();
    const auto& v = request[name];
    if (!v.is_string() || v.get<std::string>().empty())
        return invalid(fmt::format("{}: \"{}\" must be a non-empty string", cmd, name));
    return v.get<std::string>();
}

Result<bool> bool_field(const nlohmann::json& request, const char* cmd, const char* name, bool fallback) {
    if (!request.contains(name)) return fallback;
    if (!request[name].is_boolean()) return invalid(fmt::format("{}: \"{}\" must be true or false", cmd, name));
    return request[name].get<bool>();
}

// A whole number in [low, high] when present, `fallback` when absent.
Result<int64_t> int_field(const nlohmann::json& request, const char* cmd, const char* name, int64_t low, int64_t high,
                          std::optional<int64_t> fallback) {
    if (!request.contains(name)) {
        if (fallback) return *fallback;
        return invalid(fmt::format("{} needs \"{}\"", cmd, name));
    }
    const auto& v = request[name];
    bool whole = v.is_number_integer() && (v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t(INT64_MAX) : true);
    if (!whole || v.get<int64_t>() < low || v.get<int64_t>() > high)
        return invalid(fmt::format("{}: \"{}\" must be a whole number from {} to {}", cmd, name, low, high));
    return v.get<int64_t>();
}

}  // namespace

Result<Command> parse_command(const nlohmann::json& request) {
    if (!request.is_object() || !request.contains("cmd") || !request["cmd"].is_string())
        return invalid("a request is a JSON object with a \"cmd\" string");
    const std::string cmd = request["cmd"].get<std::string>();
    if (cmd == "state") return State{};
    if (cmd == "pause") return Pause{};
    if (cmd == "resume") return Resume{};
    if (cmd == "stats") return Stats{};
    if (cmd == "reset") return Reset{};
    if (cmd == "start") return Start{};
    if (cmd == "plug_net") return PlugNet{};
    if (cmd == "balloon") {
        Balloon b;
        if (request.contains("target_mib")) {
            const auto& t = request["target_mib"];
            if (!t.is_number_unsigned() || t.get<uint64_t>() > UINT32_MAX)
                return invalid("balloon: target_mib must be a whole number of MiB");
            b.target_mib = t.get<uint32_t>();
        }
        b.fresh_stats = TRY(bool_field(request, "balloon", "stats", true));
        return b;
    }
    if (cmd == "snapshot") {
        auto path = TRY(string_field(request, "snapshot", "path"));
        if (path.empty()) return invalid("snapshot needs a \"path\": the directory to write");
        return Snapshot{path};
    }
    if (cmd == "restore") {
        auto path = TRY(string_field(request, "restore", "path"));
        if (path.empty()) return invalid("restore needs a \"path\": a snapshot directory");
        return Restore{path};
    }
    if (cmd == "kill") {
        int64_t sig = TRY(int_field(request, "kill", "signal", 1, NSIG - 1, SIGTERM));
        bool all = TRY(bool_field(request, "kill", "all", false));
        return Kill{int(sig), all};
    }
    if (cmd == "resize") {
        if (!request.contains("rows") || !request.contains("cols")) return invalid("resize needs rows and cols");
        int64_t rows = TRY(int_field(request, "resize", "rows", 1, 65535, std::nullopt));
        int64_t cols = TRY(int_field(request, "resize", "cols", 1, 65535, std::nullopt));
        return Resize{uint16_t(rows), uint16_t(cols)};
    }
    return invalid("unknown command `" + cmd + "`");
}

const char* command_name(const Command& command) {
    static constexpr const char* kNames[] = {"state", "pause",   "resume", "stats", "balloon", "snapshot",
                                             "reset", "restore", "start",  "kill",  "resize",  "plug_net"};
    static_assert(std::size(kNames) == std::variant_size_v<Command>);
    return kNames[command.index()];
}

bool needs_container(const Command& command) {
    return std::holds_alternative<Start>(command) || std::holds_alternative<Kill>(command) ||
           std::holds_alternative<Resize>(command);
}

}  // namespace husk::api
