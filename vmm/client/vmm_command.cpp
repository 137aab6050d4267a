#include "vmm/client/vmm_command.h"

#include <fmt/format.h>

namespace husk {

Result<std::string> toml_string(std::string_view text) {
    std::string out = "\"";
    for (size_t i = 0; i < text.size();) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c < 0x80) {
            if (c == '"' || c == '\\')
                out += '\\', out += char(c);
            else if (c < 0x20 || c == 0x7f)
                out += fmt::format("\\u{:04X}", c);
            else
                out += char(c);
            ++i;
            continue;
        }
        // A UTF-8 sequence: its code point as an escape, or an error.
        size_t length = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
        uint32_t cp = length == 4 ? c & 0x07 : length == 3 ? c & 0x0f : c & 0x1f;
        bool ok = length != 0 && i + length <= text.size();
        for (size_t k = 1; ok && k < length; ++k) {
            auto next = static_cast<unsigned char>(text[i + k]);
            ok = (next & 0xc0) == 0x80;
            cp = (cp << 6) | (next & 0x3f);
        }
        static const uint32_t kLeast[5] = {0, 0, 0x80, 0x800, 0x10000};
        ok = ok && cp >= kLeast[length] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
        if (!ok)
            return Error::from_string(fmt::format("`{}` is not UTF-8: it cannot be written to vm.toml", text), EINVAL);
        out += cp <= 0xffff ? fmt::format("\\u{:04X}", cp) : fmt::format("\\U{:08X}", cp);
        i += length;
    }
    return out + "\"";
}

Result<std::string> VmmCommand::vm_toml() const {
    std::string text = "# husk-vmm's configuration, written by the runtime (vmm/config/vm_config.h)\n";
    std::string table;
    auto in = [&](const char* name) {
        if (table == name) return;
        table = name;
        text += fmt::format("\n[{}]\n", name);
    };
    auto string_key = [&](const char* t, const char* key, const std::string& value) -> Result<void> {
        if (value.empty()) return {};
        in(t);
        text += fmt::format("{} = {}\n", key, TRY(toml_string(value)));
        return {};
    };
    if (restore.empty()) {
        TRY(string_key("boot", "kernel", kernel));
        TRY(string_key("boot", "initramfs", initramfs));
        auto integer_key = [&](const char* key, uint32_t value) {
            if (!value) return;
            in("machine");
            text += fmt::format("{} = {}\n", key, value);
        };
        integer_key("memory_mib", memory_mib);
        integer_key("vcpus", vcpus);
    } else {
        TRY(string_key("snapshot", "restore", restore));
    }
    TRY(string_key("snapshot", "on_ready", snapshot_on_ready));
    if (console == Console::None) TRY(string_key("console", "output", "none"));
    for (const auto& d : drives) {
        table = "drive";
        text += fmt::format("\n[[drive]]\npath = {}\n", TRY(toml_string(d)));
        if (drives_read_only) text += "read_only = true\n";
    }
    if (fs) {
        in("fs");
        text += "enabled = true\n";
    }
    for (const auto& sh : shares) {
        table = "share";
        text +=
            fmt::format("\n[[share]]\nname = {}\npath = {}\n", TRY(toml_string(sh.name)), TRY(toml_string(sh.path)));
        if (sh.read_only) text += "read_only = true\n";
    }
    for (const auto& nic : nics) {
        table = "net";
        text += fmt::format("\n[[net]]\ntap = {}\n", TRY(toml_string(nic.tap)));
        if (!nic.mac.empty()) text += fmt::format("mac = {}\n", TRY(toml_string(nic.mac)));
        if (nic.unplugged) text += "unplugged = true\n";
    }
    TRY(string_key("vsock", "socket", vsock_socket));
    TRY(string_key("vsock", "dns_forward", vsock_dns_forward));
    TRY(string_key("api", "socket", api_socket));
    TRY(string_key("container", "specs", container_specs));
    if (wait_for_start) {
        in("container");
        text += "wait_for_start = true\n";
    }
    return text;
}

std::vector<std::string> VmmCommand::argv(const std::string& vm_toml_path) const {
    std::vector<std::string> a = {vmm, "--config", vm_toml_path};
    if (ready_fd) a.insert(a.end(), {"--ready-fd", std::to_string(*ready_fd)});
    if (!log.empty()) a.insert(a.end(), {"--log", log});
    if (log_format == LogFormat::Json) a.insert(a.end(), {"--log-format", "json"});
    if (debug) a.push_back("--debug");
    return a;
}

}  // namespace husk
