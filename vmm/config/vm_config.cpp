#include "vmm/config/vm_config.h"

#include <arpa/inet.h>

#include <sstream>
#include <variant>
#include <vector>

#include "vmm/base/toml.h"
#include "vmm/jail/jail.h"

namespace husk {
namespace {

std::string where(std::string_view source, const toml::source_region& r) {
    std::ostringstream s;
    s << source << ":" << r.begin.line << ":" << r.begin.column;
    return s.str();
}

const ConfigKey* find_key(std::string_view table, std::string_view key) {
    for (const auto& k : vm_config_keys())
        if (table == k.table && key == k.key) return &k;
    return nullptr;
}

}  // namespace

Result<BootEntry> parse_boot_entry(std::string_view text) {
    if (text == "auto") return BootEntry::Auto;
    if (text == "pvh") return BootEntry::Pvh;
    if (text == "linux64") return BootEntry::Linux64;
    return Error::from_string("boot.entry must be auto, pvh or linux64, not `" + std::string(text) + "`", EINVAL);
}

Result<CpuTemplate> parse_cpu_template(std::string_view text) {
    if (text == "host") return CpuTemplate::Host;
    if (text == "baseline") return CpuTemplate::Baseline;
    return Error::from_string("machine.cpu_template must be host or baseline, not `" + std::string(text) + "`", EINVAL);
}

const char* to_string(CpuTemplate t) {
    return t == CpuTemplate::Baseline ? "baseline" : "host";
}

Result<ConsoleOutput> parse_console_output(std::string_view text) {
    using Kind = ConsoleOutput::Kind;
    if (text.empty()) return Error::from_string("console.output must not be empty (use none)", EINVAL);
    if (text == "auto") return ConsoleOutput{Kind::Auto, {}};
    if (text == "stdout") return ConsoleOutput{Kind::Stdout, {}};
    if (text == "stderr") return ConsoleOutput{Kind::Stderr, {}};
    if (text == "none") return ConsoleOutput{Kind::None, {}};
    if (text.rfind("unix:", 0) == 0) {
        if (text.size() == 5) return Error::from_string("console.output unix: needs a socket path", EINVAL);
        return ConsoleOutput{Kind::UnixSocket, std::string(text.substr(5))};
    }
    return ConsoleOutput{Kind::File, std::string(text)};
}

Result<ConsoleInput> parse_console_input(std::string_view text) {
    if (text == "none") return ConsoleInput::None;
    if (text == "stdin") return ConsoleInput::Stdin;
    return Error::from_string("console.input must be none or stdin, not `" + std::string(text) + "`", EINVAL);
}

const std::vector<ConfigKey>& vm_config_keys() {
    static const std::vector<ConfigKey> keys = {
        {"boot", "kernel", "path", "guest kernel: an uncompressed vmlinux (PVH entry) or a bzImage (required)"},
        {"boot", "initramfs", "path", "initramfs (cpio, optionally gzip-compressed) given to the kernel"},
        {"boot", "cmdline", "string", "kernel command line (default: console=ttyS0 reboot=k panic=-1 ...)"},
        {"boot", "entry", "string", "entry protocol: auto (PVH if the ELF has the note), pvh, linux64"},
        {"machine", "vcpus", "integer", "number of vCPUs, 1-254 (default 1)"},
        {"machine", "memory_mib", "integer", "guest RAM in MiB, at least 16 (default 128)"},
        {"machine", "hugepages", "boolean", "back guest RAM with 2 MiB hugepages (default false)"},
        {"machine", "cpu_template", "string",
         "CPUID the guest sees: host (default: all this host offers) or baseline (common x86-64 features, so "
         "snapshots move between hosts of one CPU vendor)"},
        {"snapshot", "on_ready", "path",
         "boot, write a snapshot into this directory once init signals it is ready, and exit (a template)"},
        {"snapshot", "restore", "path",
         "restore this snapshot directory (vmstate + memory) instead of booting; boot.* is then not needed"},
        {"console", "output", "string",
         "where the serial console goes: stdout (default), stderr, none, unix:SOCKET, or a file path"},
        {"console", "input", "string", "serial console input: none (default) or stdin"},
        {"drive", "path", "path", "[[drive]] a raw disk image for virtio-blk (/dev/vda, /dev/vdb, ... in order)"},
        {"drive", "read_only", "boolean", "[[drive]] refuse guest writes (default false)"},
        {"drive", "direct", "boolean", "[[drive]] O_DIRECT: bypass the host page cache (default false)"},
        {"drive", "id", "string", "[[drive]] serial returned to the guest (at most 20 bytes)"},
        {"devices", "rng", "boolean", "virtio-rng entropy device from getrandom (default true)"},
        {"fs", "enabled", "boolean",
         "virtio-fs device, tag \"husk\": its root lists the [[share]]s by name (default: on when a share is given)"},
        {"share", "name", "string", "[[share]] the share's directory name in the virtio-fs root (one path component)"},
        {"share", "path", "path", "[[share]] the host directory shared with the guest through virtio-fs"},
        {"share", "read_only", "boolean", "[[share]] refuse guest writes (default false)"},
        {"balloon", "enabled", "boolean",
         "virtio-balloon: the host can take guest memory back at run time (default true)"},
        {"balloon", "target_mib", "integer",
         "MiB the guest should give back from boot on (default 0); changed at run time over the API socket"},
        {"balloon", "deflate_on_oom", "boolean",
         "let the guest take balloon pages back rather than run out of memory (default true)"},
        {"balloon", "free_page_reporting", "boolean",
         "the guest reports free memory, which goes back to the host at once (default true)"},
        {"vsock", "socket", "path",
         "virtio-vsock: the VM's Unix socket (host connects, sends CONNECT <port>); guest connections to port P go to "
         "<socket>_<P>"},
        {"vsock", "cid", "integer", "the guest's vsock CID, at least 3 (default 3)"},
        {"vsock", "dns_forward", "string",
         "A.B.C.D:PORT: guest connections to port 53 go to this TCP address instead of <socket>_53 (a container's "
         "DNS server in husk-vmm's network namespace, such as Docker's 127.0.0.11:53)"},
        {"net", "tap", "string",
         "virtio-net over this TAP interface (the guest's eth0; [[net]] tables, at most 4, are eth0, eth1, ...)"},
        {"net", "mac", "string", "the guest's MAC, aa:bb:cc:dd:ee:ff (default: a random local one)"},
        {"net", "unplugged", "boolean",
         "the NIC is a placeholder the guest does not probe until {\"cmd\":\"plug_net\"} on the API socket (a network "
         "an engine adds after create; default false)"},
        {"container", "wait_for_start", "boolean",
         "set the container up, then wait for {\"cmd\":\"start\"} on the API socket (OCI create/start)"},
        {"api", "socket", "path",
         "the control socket: JSON lines (pause, resume, state, start, kill, resize; see vmm/api/API.md)"},
        {"jail", "enabled", "boolean",
         "run husk-vmm in a jail once the VM is built: new mount, PID, IPC and UTS namespaces, a root holding only "
         "its sockets' directories, no capabilities (needs root; default false)"},
        {"jail", "user", "string", "UID[:GID] husk-vmm becomes in the jail (default: root without capabilities)"},
        {"jail", "cgroup", "string", "cgroup v2 path (under /sys/fs/cgroup) husk-vmm joins, an OCI linux.cgroupsPath"},
        {"container", "specs", "path",
         "run the container this specs file describes (`husk create` writes it from the OCI config; husk-vmm "
         "parses no OCI config itself) through husk-agent: rootfs is the first drive, husk-vmm's stdio is the "
         "process's, its exit status is husk-vmm's"},
    };
    return keys;
}

// The NIC a [net] table and --net describe: the first, made when there is none.
static NicConfig& first_nic(VmConfig& c) {
    if (c.nics.empty()) c.nics.emplace_back();
    return c.nics.front();
}

// A key's value in an array of tables: its keys are strings or booleans.
using TableValue = std::variant<std::string, bool>;

// The [[NAME]] array of tables `node`, one T per table: each key must be one
// of NAME's (vm_config_keys) and of its type; `set` stores it, and a table
// that `complete` refuses is the error `incomplete`.
template <typename T, typename Set, typename Complete>
Result<std::vector<T>> parse_tables(std::string_view name, const toml::node& node, std::string_view source, Set set,
                                    Complete complete, std::string_view incomplete) {
    auto* tables = node.as_array();
    if (!tables || !tables->is_array_of_tables())
        return Error::from_string(where(source, node.source()) + ": `" + std::string(name) +
                                  "` must be an array of tables ([[" + std::string(name) + "]])");
    std::vector<T> out;
    for (auto&& t : *tables) {
        T item;
        for (auto&& [key, value] : *t.as_table()) {
            std::string full = std::string(name) + "." + std::string(key.str());
            const ConfigKey* k = find_key(name, key.str());
            if (!k)
                return Error::from_string(where(source, value.source()) + ": unknown key `" + full +
                                          "` (see husk-vmm --help)");
            if (std::string_view(k->type) == "boolean") {
                if (!value.is_boolean())
                    return Error::from_string(where(source, value.source()) + ": `" + full + "` must be a boolean");
                set(item, key.str(), TableValue(*value.template value<bool>()));
                continue;
            }
            auto v = value.template value<std::string>();
            if (!v) return Error::from_string(where(source, value.source()) + ": `" + full + "` must be a string");
            set(item, key.str(), TableValue(*v));
        }
        if (!complete(item)) return Error::from_string(where(source, t.source()) + ": " + std::string(incomplete));
        out.push_back(std::move(item));
    }
    return out;
}

Result<VmConfig> parse_vm_toml(std::string_view text, std::string_view source, VmConfig c) {
    if (auto bad = check_ascii(text)) return Error::from_string(std::string(source) + ":" + *bad);
    toml::table root;
    try {
        root = toml::parse(text, source);
    } catch (const toml::parse_error& e) {
        return Error::from_string(where(source, e.source()) + ": " + std::string(e.description()));
    }
    for (auto&& [table_name, node] : root) {
        if (table_name.str() == "share") {
            auto parsed = parse_tables<ShareConfig>(
                "share", node, source,
                [&](ShareConfig& share, std::string_view key, const TableValue& value) {
                    if (key == "read_only")
                        share.read_only = std::get<bool>(value);
                    else
                        (key == "name" ? share.name : share.path) = std::get<std::string>(value);
                },
                [&](const ShareConfig& share) { return !share.name.empty() && !share.path.empty(); },
                "[[share]] needs a name and a path");
            if (!parsed) return parsed.error();
            for (auto& share : parsed.value()) c.shares.push_back(std::move(share));
            c.fs = true;
            continue;
        }
        if (table_name.str() == "net" && node.is_array()) {
            auto parsed = parse_tables<NicConfig>(
                "net", node, source,
                [&](NicConfig& nic, std::string_view key, const TableValue& value) {
                    if (key == "unplugged")
                        nic.unplugged = std::get<bool>(value);
                    else
                        (key == "tap" ? nic.tap : nic.mac) = std::get<std::string>(value);
                },
                [&](const NicConfig& nic) { return !nic.tap.empty(); }, "[[net]] needs a tap");
            if (!parsed) return parsed.error();
            for (auto& nic : parsed.value()) c.nics.push_back(std::move(nic));
            continue;
        }
        if (table_name.str() == "drive") {
            auto parsed = parse_tables<DriveConfig>(
                "drive", node, source,
                [&](DriveConfig& drive, std::string_view key, const TableValue& value) {
                    if (key == "path" || key == "id")
                        (key == "path" ? drive.path : drive.id) = std::get<std::string>(value);
                    else
                        (key == "read_only" ? drive.read_only : drive.direct) = std::get<bool>(value);
                },
                [&](const DriveConfig& drive) { return !drive.path.empty(); }, "[[drive]] needs a path");
            if (!parsed) return parsed.error();
            for (auto& drive : parsed.value()) c.drives.push_back(std::move(drive));
            continue;
        }
        auto* table = node.as_table();
        if (!table)
            return Error::from_string(where(source, node.source()) + ": `" + std::string(table_name.str()) +
                                      "` must be a table ([boot], [machine], [console], [devices]) or [[drive]]");
        for (auto&& [key, value] : *table) {
            std::string full = std::string(table_name.str()) + "." + std::string(key.str());
            const ConfigKey* k = find_key(table_name.str(), key.str());
            if (!k)
                return Error::from_string(where(source, value.source()) + ": unknown key `" + full +
                                          "` (see husk-vmm --help)");
            auto bad_type = [&, &v = value] {
                std::string_view t = k->type;
                const char* article = std::string_view("aeiou").find(t.front()) != std::string_view::npos ? "an" : "a";
                return Error::from_string(where(source, v.source()) + ": `" + full + "` must be " + article + " " +
                                          std::string(t));
            };
            std::string_view type = k->type;
            if (type == "path" || type == "string") {
                auto s = value.value<std::string>();
                if (!s) return bad_type();
                if (full == "boot.kernel")
                    c.kernel = *s;
                else if (full == "boot.initramfs")
                    c.initramfs = *s;
                else if (full == "boot.cmdline")
                    c.cmdline = *s;
                else if (full == "boot.entry")
                    c.entry = TRY(parse_boot_entry(*s).context(where(source, value.source())));
                else if (full == "console.output")
                    c.console_output = TRY(parse_console_output(*s).context(where(source, value.source())));
                else if (full == "console.input")
                    c.console_input = TRY(parse_console_input(*s).context(where(source, value.source())));
                else if (full == "vsock.socket")
                    c.vsock_socket = *s;
                else if (full == "vsock.dns_forward")
                    c.vsock_dns_forward = *s;
                else if (full == "net.tap")
                    first_nic(c).tap = *s;
                else if (full == "net.mac")
                    first_nic(c).mac = *s;
                else if (full == "container.specs")
                    c.container_specs = *s;
                else if (full == "api.socket")
                    c.api_socket = *s;
                else if (full == "machine.cpu_template")
                    c.cpu_template = TRY(parse_cpu_template(*s).context(where(source, value.source())));
                else if (full == "snapshot.restore")
                    c.restore = *s;
                else if (full == "snapshot.on_ready")
                    c.snapshot_on_ready = *s;
                else if (full == "jail.user")
                    c.jail_user = *s;
                else if (full == "jail.cgroup")
                    c.jail_cgroup = *s;
            } else if (type == "integer") {
                // value_exact: only an integer node answers. value<int64_t>()
                // would convert a float such as -2e60, which is undefined
                // behaviour outside int64's range (found by the vm_toml fuzz target).
                auto v = value.value_exact<int64_t>();
                if (!v) return bad_type();
                if (*v < 0 || *v > UINT32_MAX)
                    return Error::from_string(where(source, value.source()) + ": `" + full + "` is out of range");
                if (full == "vsock.cid")
                    c.vsock_cid = uint64_t(*v);
                else if (full == "machine.vcpus")
                    c.vcpus = uint32_t(*v);
                else if (full == "machine.memory_mib")
                    c.memory_mib = uint32_t(*v);
                else if (full == "balloon.target_mib")
                    c.balloon_target_mib = uint32_t(*v);
            } else if (type == "boolean") {
                if (!value.is_boolean()) return bad_type();
                if (full == "machine.hugepages")
                    c.hugepages = *value.value<bool>();
                else if (full == "devices.rng")
                    c.rng = *value.value<bool>();
                else if (full == "fs.enabled")
                    c.fs = *value.value<bool>();
                else if (full == "container.wait_for_start")
                    c.container_wait_for_start = *value.value<bool>();
                else if (full == "balloon.enabled")
                    c.balloon = *value.value<bool>();
                else if (full == "balloon.deflate_on_oom")
                    c.balloon_deflate_on_oom = *value.value<bool>();
                else if (full == "balloon.free_page_reporting")
                    c.balloon_free_page_reporting = *value.value<bool>();
                else if (full == "jail.enabled")
                    c.jail = *value.value<bool>();
                else if (full == "net.unplugged")
                    first_nic(c).unplugged = *value.value<bool>();
            }
        }
    }
    return c;
}

nlohmann::json machine_to_json(const VmConfig& c) {
    nlohmann::json nics = nlohmann::json::array();
    for (const auto& n : c.nics) nics.push_back({{"tap", n.tap}, {"mac", n.mac}, {"unplugged", n.unplugged}});
    nlohmann::json drives = nlohmann::json::array();
    for (const auto& d : c.drives)
        drives.push_back({{"path", d.path}, {"read_only", d.read_only}, {"direct", d.direct}, {"id", d.id}});
    return {{"vcpus", c.vcpus},
            {"memory_mib", c.memory_mib},
            {"cpu_template", to_string(c.cpu_template)},
            {"drives", drives},
            {"rng", c.rng},
            {"fs", c.fs},
            {"vsock_socket", c.vsock_socket},
            {"vsock_cid", c.vsock_cid},
            {"nics", nics},
            {"cmdline", c.cmdline},
            {"agent", c.agent},
            {"balloon",
             {{"enabled", c.balloon},
              {"deflate_on_oom", c.balloon_deflate_on_oom},
              {"free_page_reporting", c.balloon_free_page_reporting}}}};
}

Result<void> machine_from_json(const nlohmann::json& j, VmConfig& c) {
    try {
        c.vcpus = j.at("vcpus").get<uint32_t>();
        c.memory_mib = j.at("memory_mib").get<uint32_t>();
        c.cpu_template = TRY(parse_cpu_template(j.at("cpu_template").get<std::string>()));
        c.hugepages = false;
        // Host resources are named by the restore, not the snapshot file: its
        // disks (same count and order; ro/direct as given) and its TAP.
        std::vector<DriveConfig> drives;
        for (const auto& d : j.at("drives"))
            drives.push_back({d.at("path").get<std::string>(), d.at("read_only").get<bool>(),
                              d.at("direct").get<bool>(), d.at("id").get<std::string>()});
        if (c.drives.size() != drives.size())
            return Error::from_string("the snapshot's VM has " + std::to_string(drives.size()) +
                                      " drive(s); give each with --drive, in order (" +
                                      std::to_string(c.drives.size()) + " given)");
        for (size_t i = 0; i < drives.size(); ++i)
            if (c.drives[i].id.empty()) c.drives[i].id = drives[i].id;
        c.rng = j.at("rng").get<bool>();
        // The device is the snapshot's; the shares are the restore's own.
        bool has_fs = j.value("fs", false);
        if (!has_fs && !c.shares.empty())
            return Error::from_string("the snapshot's VM has no virtio-fs device: it cannot be given shares");
        c.fs = has_fs;
        std::string vsock = j.at("vsock_socket").get<std::string>();
        if (vsock.empty() && !c.vsock_socket.empty())
            return Error::from_string("the snapshot's VM has no vsock device");
        if (c.vsock_socket.empty()) c.vsock_socket = vsock;
        c.vsock_cid = j.at("vsock_cid").get<uint64_t>();
        // The NICs are the snapshot's, their MACs too; their TAPs are the restore's own.
        std::vector<NicConfig> nics;
        if (j.contains("nics")) {
            for (const auto& n : j.at("nics"))
                nics.push_back({{}, n.at("mac").get<std::string>(), n.value("unplugged", false)});
        } else if (!j.value("net_tap", "").empty()) {  // a snapshot from before [[net]]
            nics.push_back({{}, j.value("net_mac", ""), false});
        }
        if (nics.size() != c.nics.size())
            return Error::from_string(
                nics.empty() ? std::string("the snapshot's VM has no network device")
                             : "the snapshot's VM has " + std::to_string(nics.size()) +
                                   " network device(s): give each its TAP (--net, [net] or [[net]]), in order (" +
                                   std::to_string(c.nics.size()) + " given)");
        // Whether the guest has probed a NIC is the snapshot's (a NIC it set up is plugged, MmioTransport).
        for (size_t i = 0; i < nics.size(); ++i) {
            c.nics[i].mac = nics[i].mac;
            c.nics[i].unplugged = nics[i].unplugged;
        }
        c.cmdline = j.at("cmdline").get<std::string>();
        c.agent = j.value("agent", false);
        // The device set is the snapshot's; the target stays the restore's own.
        const auto balloon = j.value("balloon", nlohmann::json::object());
        c.balloon = balloon.value("enabled", false);
        c.balloon_deflate_on_oom = balloon.value("deflate_on_oom", true);
        c.balloon_free_page_reporting = balloon.value("free_page_reporting", true);
    } catch (const nlohmann::json::exception& e) {
        return Error::from_string(std::string("the snapshot's machine description is invalid: ") + e.what(), EINVAL);
    }
    return {};
}

Result<void> validate(const VmConfig& c) {
    if (!c.jail_user.empty()) TRY(jail::parse_user(c.jail_user).context("jail.user"));
    if ((!c.jail_user.empty() || !c.jail_cgroup.empty()) && !c.jail)
        return Error::from_string("jail.user and jail.cgroup need jail.enabled (--jail)");
    if (!c.restore.empty() && !c.snapshot_on_ready.empty())
        return Error::from_string("snapshot.on_ready and snapshot.restore exclude each other");
    if (c.kernel.empty() && c.restore.empty())
        return Error::from_string("no kernel given: set boot.kernel in vm.toml or pass --kernel");
    if (c.vcpus < 1 || c.vcpus > 254)
        return Error::from_string("machine.vcpus must be between 1 and 254, not " + std::to_string(c.vcpus));
    if (c.memory_mib < 16)
        return Error::from_string("machine.memory_mib must be at least 16, not " + std::to_string(c.memory_mib));
    if (c.memory_mib > (1u << 20)) return Error::from_string("machine.memory_mib must be at most 1048576 (1 TiB)");
    if (c.hugepages && c.memory_mib % 2)
        return Error::from_string("machine.memory_mib must be even with hugepages (2 MiB pages)");
    if (c.vsock_cid < 3)
        return Error::from_string("vsock.cid must be at least 3 (0-2 are reserved), not " +
                                  std::to_string(c.vsock_cid));
    if (!c.vsock_dns_forward.empty()) {
        if (c.vsock_socket.empty())
            return Error::from_string("vsock.dns_forward needs the vsock device (vsock.socket)");
        TRY(parse_ipv4_endpoint(c.vsock_dns_forward).context("vsock.dns_forward"));
    }
    if (c.nics.size() > kMaxNics) return Error::from_string("too many NICs (at most " + std::to_string(kMaxNics) + ")");
    for (const auto& n : c.nics) {
        if (n.tap.empty()) return Error::from_string("a NIC needs its TAP (net.tap)");
        for (const auto& other : c.nics)
            if (&other != &n && other.tap == n.tap) return Error::from_string("two NICs have the TAP `" + n.tap + "`");
    }
    if (c.balloon_target_mib >= c.memory_mib)
        return Error::from_string("balloon.target_mib (" + std::to_string(c.balloon_target_mib) +
                                  ") must be less than machine.memory_mib (" + std::to_string(c.memory_mib) + ")");
    if (!c.shares.empty() && !c.fs) return Error::from_string("[[share]] needs the virtio-fs device (fs.enabled)");
    if (c.shares.size() > kMaxShares)
        return Error::from_string("too many shares (at most " + std::to_string(kMaxShares) + ")");
    for (size_t i = 0; i < c.shares.size(); ++i) {
        const auto& s = c.shares[i];
        if (s.name == "." || s.name == ".." || s.name.find('/') != std::string::npos || s.name.size() > 255)
            return Error::from_string("share.name `" + s.name + "` must be one path component");
        for (size_t j = 0; j < i; ++j)
            if (s.name == c.shares[j].name) return Error::from_string("two shares have the name `" + s.name + "`");
    }
    if (c.drives.size() + (c.rng ? 1 : 0) + (c.vsock_socket.empty() ? 0 : 1) + c.nics.size() + (c.balloon ? 1 : 0) +
            (c.fs ? 1 : 0) >
        kMaxVirtioDevices)
        return Error::from_string("too many virtio devices (at most " + std::to_string(kMaxVirtioDevices) + ")");
    for (size_t i = 0; i < c.drives.size(); ++i) {
        const auto& d = c.drives[i];
        if (d.id.size() > 20) return Error::from_string("drive.id `" + d.id + "` is longer than 20 bytes");
        // Ids name the devices' states in a snapshot: two drives cannot share one.
        for (size_t j = 0; j < i; ++j)
            if (!d.id.empty() && d.id == c.drives[j].id)
                return Error::from_string("two drives have the id `" + d.id + "`");
        // A drive without an id is `drive<N>` (N its position); another drive cannot take that name.
        for (size_t j = 0; j < c.drives.size(); ++j)
            if (j != i && c.drives[j].id.empty() && d.id == "drive" + std::to_string(j))
                return Error::from_string("drive.id `" + d.id + "` is the name of drive " + std::to_string(j) +
                                          ", which has no id of its own");
        for (const char* reserved : {"rng", "vsock", "balloon", "fs"})
            if (d.id == reserved) return Error::from_string("drive.id `" + d.id + "` is the name of another device");
        for (size_t n = 0; n < kMaxNics; ++n)
            if (d.id == NicConfig::device_id(n))
                return Error::from_string("drive.id `" + d.id + "` is the name of another device");
    }
    return {};
}

Result<sockaddr_in> parse_ipv4_endpoint(std::string_view text) {
    auto bad = [&] { return Error::from_string("`" + std::string(text) + "` is not A.B.C.D:PORT", EINVAL); };
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad();
    sockaddr_in a{};
    a.sin_family = AF_INET;
    std::string host(text.substr(0, colon)), port(text.substr(colon + 1));
    if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) return bad();
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return bad();
    unsigned long p = std::stoul(port);
    if (p < 1 || p > 65535) return bad();
    a.sin_port = htons(uint16_t(p));
    return a;
}

Result<void> parse_vsock_flag(std::string_view text, VmConfig& c) {
    size_t comma = text.find(',');
    c.vsock_socket = text.substr(0, comma);
    if (c.vsock_socket.empty()) return Error::from_string("--vsock needs a socket path (PATH[,cid=N])");
    if (comma == std::string_view::npos) return {};
    std::string_view opt = text.substr(comma + 1);
    if (opt.rfind("cid=", 0) != 0)
        return Error::from_string("--vsock " + std::string(text) + ": expected PATH[,cid=N]");
    try {
        size_t used = 0;
        c.vsock_cid = std::stoull(std::string(opt.substr(4)), &used);
        if (used != opt.size() - 4) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
        return Error::from_string("--vsock " + std::string(text) + ": cid must be a number");
    }
    return {};
}

Result<void> parse_net_flag(std::string_view text, VmConfig& c) {
    size_t comma = text.find(',');
    NicConfig& nic = first_nic(c);
    nic.tap = text.substr(0, comma);
    if (nic.tap.empty()) return Error::from_string("--net needs a TAP name (TAP[,mac=aa:bb:cc:dd:ee:ff])");
    if (comma == std::string_view::npos) return {};
    std::string_view opt = text.substr(comma + 1);
    if (opt.rfind("mac=", 0) != 0) return Error::from_string("--net " + std::string(text) + ": expected TAP[,mac=MAC]");
    nic.mac = opt.substr(4);
    return {};
}

Result<ShareConfig> parse_share_flag(std::string_view text) {
    ShareConfig s;
    size_t eq = text.find('='), comma = text.find(',', eq == std::string_view::npos ? 0 : eq);
    if (eq == std::string_view::npos || eq == 0)
        return Error::from_string("--share " + std::string(text) + ": expected NAME=PATH[,ro]");
    s.name = text.substr(0, eq);
    s.path = text.substr(eq + 1, comma == std::string_view::npos ? std::string_view::npos : comma - eq - 1);
    if (comma != std::string_view::npos) {
        if (text.substr(comma + 1) != "ro")
            return Error::from_string("--share " + std::string(text) + ": the only option is `ro`");
        s.read_only = true;
    }
    if (s.path.empty()) return Error::from_string("--share " + std::string(text) + ": expected NAME=PATH[,ro]");
    return s;
}

Result<DriveConfig> parse_drive_flag(std::string_view text) {
    DriveConfig d;
    size_t start = 0;
    bool first = true;
    while (start <= text.size()) {
        size_t comma = text.find(',', start);
        std::string_view part =
            text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
        if (first) {
            d.path = part;
            first = false;
        } else if (part == "ro") {
            d.read_only = true;
        } else if (part == "direct") {
            d.direct = true;
        } else if (part.rfind("id=", 0) == 0) {
            d.id = part.substr(3);
        } else {
            return Error::from_string("--drive " + std::string(text) + ": unknown option `" + std::string(part) +
                                      "` (PATH[,ro][,direct][,id=NAME])");
        }
        if (comma == std::string_view::npos) break;
        start = comma + 1;
    }
    if (d.path.empty()) return Error::from_string("--drive needs a path (PATH[,ro][,direct][,id=NAME])");
    return d;
}

}  // namespace husk
