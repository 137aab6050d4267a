#include "runtime/install.h"

#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "vmm/base/toml.h"

namespace husk::runtime {
namespace {

// ordered_json: a rewritten daemon.json keeps its keys in the order they were in.
using OrderedJson = nlohmann::ordered_json;

// daemon.json as an object; whitespace alone (or no file) is an empty one.
Result<OrderedJson> parse_daemon_json(std::string_view text) {
    if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) return OrderedJson::object();
    OrderedJson j;
    try {
        j = OrderedJson::parse(text);
    } catch (const OrderedJson::exception& e) {
        // Not only parse_error: a number too large for a double ("1e999") is out_of_range.
        // nlohmann's message names the line and column; drop its "[json.exception...]" prefix.
        std::string what = e.what();
        if (auto at = what.find("] "); at != std::string::npos) what = what.substr(at + 2);
        return Error::from_string("not valid JSON: " + what);
    }
    if (!j.is_object()) return Error::from_string("not a JSON object");
    return j;
}

Result<std::string> dump_daemon_json(const OrderedJson& j) {
    try {
        return j.dump(2) + "\n";  // Docker's documentation indents daemon.json by two
    } catch (const OrderedJson::exception&) {
        return Error::from_string("the husk path is not valid UTF-8");  // all else came from a parse
    }
}

// A TOML basic string (TOML 1.0 "String"): quotes, backslashes and control characters escaped.
std::string toml_string(std::string_view s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += char(c);
        } else if (c < 0x20 || c == 0x7f) {
            char escape[8];
            (void)std::snprintf(escape, sizeof escape, "\\u%04X", c);
            out += escape;
        } else {
            out += char(c);
        }
    }
    return out + "\"";
}

Result<toml::table> parse_toml(const std::string& text) {
    if (auto bad = check_ascii(text)) return Error::from_string(*bad);
    try {
        return toml::parse(text);
    } catch (const toml::parse_error& e) {
        return Error::from_string("not valid TOML: line " + std::to_string(e.source().begin.line) + ": " +
                                  std::string(e.description()));
    }
}

// The CRI plugin's key under [plugins], by config version. containerd reads a
// file without `version` as version 1, where plugins go by their short names;
// version 3 (containerd 2.x) moved the runtimes to the cri.v1.runtime plugin.
constexpr const char* kCriPlugins[] = {"cri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"};

Result<std::string> cri_plugin(const toml::table& doc) {
    auto version = doc["version"];
    if (!version) return std::string(kCriPlugins[0]);
    auto n = version.value_exact<int64_t>();
    if (!n) return Error::from_string("`version` is not an integer");
    if (*n < 1 || *n > 3)
        return Error::from_string("config version " + std::to_string(*n) +
                                  " is not one husk install knows (1, 2 or 3); register husk by hand");
    return std::string(kCriPlugins[*n - 1]);
}

// `plugins."<plugin>".containerd.runtimes.husk`, as a table header names it.
std::string runtime_table(const std::string& plugin) {
    std::string key = plugin.find('.') == std::string::npos ? plugin : "\"" + plugin + "\"";
    return "plugins." + key + ".containerd.runtimes." + kRuntimeName;
}

std::string containerd_block(const std::string& plugin, const std::string& husk) {
    std::string table = runtime_table(plugin);
    return std::string(kBlockBegin) + "\n[" + table + "]\n  runtime_type = \"io.containerd.runc.v2\"\n  [" + table +
           ".options]\n    BinaryName = " + toml_string(husk) + "\n" + kBlockEnd + "\n";
}

// config.toml cut around husk's block: the block is its marker lines and all between.
struct Marked {
    std::string before, block, after;
    bool found = false;
};

std::string_view trimmed(std::string_view line) {
    size_t first = line.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos) return {};
    return line.substr(first, line.find_last_not_of(" \t\r\n") - first + 1);
}

Result<Marked> split_block(std::string_view text) {
    constexpr size_t kNone = std::string_view::npos;
    size_t begin = kNone, end = kNone;
    for (size_t at = 0; at < text.size();) {
        size_t eol = text.find('\n', at);
        size_t next = eol == kNone ? text.size() : eol + 1;
        std::string_view line = trimmed(text.substr(at, next - at));
        if (line == kBlockBegin) {
            if (begin != kNone) return Error::from_string("more than one `" + std::string(kBlockBegin) + "` line");
            begin = at;
        } else if (line == kBlockEnd) {
            if (begin == kNone || end != kNone)
                return Error::from_string("a `" + std::string(kBlockEnd) + "` line without its begin");
            end = next;
        }
        at = next;
    }
    if (begin == kNone) return Marked{std::string(text), "", "", false};
    if (end == kNone) return Error::from_string("a `" + std::string(kBlockBegin) + "` line without its end");
    return Marked{std::string(text.substr(0, begin)), std::string(text.substr(begin, end - begin)),
                  std::string(text.substr(end)), true};
}

}  // namespace

Result<std::string> docker_with_husk(std::string_view daemon_json, const std::string& husk) {
    OrderedJson j = TRY(parse_daemon_json(daemon_json));
    OrderedJson& runtimes = j["runtimes"];
    if (runtimes.is_null()) runtimes = OrderedJson::object();
    if (!runtimes.is_object()) return Error::from_string("\"runtimes\" is not an object");
    OrderedJson& entry = runtimes[kRuntimeName];
    if (entry.is_null()) entry = OrderedJson::object();
    if (!entry.is_object()) return Error::from_string("\"runtimes\".\"husk\" is not an object");
    if (entry.contains("path") && entry["path"] == husk) return std::string(daemon_json);
    entry["path"] = husk;  // any other key of husk's entry (runtimeArgs) is the user's: kept
    return dump_daemon_json(j);
}

Result<std::string> docker_without_husk(std::string_view daemon_json) {
    OrderedJson j = TRY(parse_daemon_json(daemon_json));
    auto runtimes = j.find("runtimes");
    if (runtimes == j.end() || !runtimes->is_object() || !runtimes->contains(kRuntimeName))
        return std::string(daemon_json);
    if (auto d = j.find("default-runtime"); d != j.end() && *d == kRuntimeName)
        return Error::from_string(
            "\"default-runtime\" is husk: set another first (dockerd does not start without its default runtime)");
    runtimes->erase(kRuntimeName);
    if (runtimes->empty()) j.erase("runtimes");
    return dump_daemon_json(j);
}

Result<std::string> containerd_with_husk(std::string_view config_toml, const std::string& husk) {
    Marked parts = TRY(split_block(config_toml));
    toml::table rest = TRY(parse_toml(parts.before + parts.after));
    // No key at all: a new (or comments-only) file, which gets version 2, the
    // version containerd 1.x and 2.x both read.
    bool fresh = rest.empty();
    std::string plugin = fresh ? kCriPlugins[1] : TRY(cri_plugin(rest));
    if (rest["plugins"][plugin]["containerd"]["runtimes"][kRuntimeName])
        return Error::from_string("[" + runtime_table(plugin) + "] is defined outside husk install's `" + kBlockBegin +
                                  "` block; remove that table for husk install to write its own, or keep it and "
                                  "leave containerd out (--docker, --podman)");
    std::string block = containerd_block(plugin, husk);
    std::string head = parts.before;
    if (fresh) head = "version = 2\n" + std::string(head.empty() ? "" : "\n") + head;
    std::string out;
    if (parts.found) {
        if (parts.block == block && !fresh) return std::string(config_toml);
        out = head + block + parts.after;
    } else {
        out = head;
        if (!out.empty() && out.back() != '\n') out += '\n';
        if (!out.empty() && !out.ends_with("\n\n")) out += '\n';  // a blank line before the block
        out += block;
    }
    // A table may not be added to one written inline (`runtimes = { ... }`):
    // the result is checked, not assumed.
    if (auto check = parse_toml(out); !check)
        return Error::from_string("adding husk's runtime would make it invalid (" + check.error().message() +
                                  "); register husk by hand");
    return out;
}

Result<std::string> containerd_without_husk(std::string_view config_toml) {
    Marked parts = TRY(split_block(config_toml));
    if (!parts.found) return std::string(config_toml);
    std::string before = parts.before;
    if (before.ends_with("\n\n")) before.pop_back();  // the blank line install put before the block
    std::string out = before + parts.after;
    toml::table rest = TRY(parse_toml(out));
    for (const char* plugin : kCriPlugins)
        if (rest["plugins"][plugin]["containerd"]["default_runtime_name"].value<std::string>() == kRuntimeName)
            return Error::from_string(
                std::string("the CRI plugin's default_runtime_name is husk: set another first "
                            "(containerd's CRI plugin fails without its default runtime)"));
    return out;
}

std::string podman_dropin(const std::string& husk) {
    return "# Written by `husk install`; `husk uninstall` removes this file.\n[engine.runtimes]\n" +
           std::string(kRuntimeName) + " = [" + toml_string(husk) + "]\n";
}

}  // namespace husk::runtime
