#include "agent/protocol.h"

#include <sys/wait.h>

#include <cstring>

namespace husk::agent {

std::string_view to_string(MessageType type) {
    switch (type) {
        case MessageType::Hello:
            return "Hello";
        case MessageType::SetupContainer:
            return "SetupContainer";
        case MessageType::CreateProcess:
            return "CreateProcess";
        case MessageType::Start:
            return "Start";
        case MessageType::Signal:
            return "Signal";
        case MessageType::Resize:
            return "Resize";
        case MessageType::CloseStdin:
            return "CloseStdin";
        case MessageType::Wait:
            return "Wait";
        case MessageType::AttachStdio:
            return "AttachStdio";
        case MessageType::Shutdown:
            return "Shutdown";
        case MessageType::Reseed:
            return "Reseed";
        case MessageType::SetPidsLimit:
            return "SetPidsLimit";
        case MessageType::ConfigureNetwork:
            return "ConfigureNetwork";
        case MessageType::SetMemoryLimit:
            return "SetMemoryLimit";
        case MessageType::MemoryEvents:
            return "MemoryEvents";
        case MessageType::Ok:
            return "Ok";
        case MessageType::Error:
            return "Error";
        case MessageType::Exit:
            return "Exit";
    }
    return "unknown";
}

std::string encode_frame(MessageType type, uint32_t id, std::string_view payload) {
    std::string out =
        Writer().u32(kMagic).u16(kVersion).u16(uint16_t(type)).u32(id).u32(uint32_t(payload.size())).take();
    out.append(payload);
    return out;
}

Result<FrameHeader> decode_header(std::span<const uint8_t> bytes) {
    if (bytes.size() < kHeaderSize) return Error::from_string("agent protocol: short frame header");
    Reader r(std::string_view(reinterpret_cast<const char*>(bytes.data()), kHeaderSize));
    FrameHeader h;
    h.magic = r.u32();
    h.version = r.u16();
    h.type = r.u16();
    h.id = r.u32();
    h.length = r.u32();
    if (h.magic != kMagic) return Error::from_string("agent protocol: bad frame magic");
    if (h.version != kVersion)
        return Error::from_string("agent protocol: version " + std::to_string(h.version) + " is not supported (want " +
                                  std::to_string(kVersion) + ")");
    if (h.length > kMaxPayload)
        return Error::from_string("agent protocol: frame of " + std::to_string(h.length) + " bytes is over the limit");
    return h;
}

namespace {
constexpr uint8_t kHasUmask = 1 << 0;
constexpr uint8_t kHasOomScoreAdj = 1 << 1;
constexpr uint8_t kNoNewPrivileges = 1 << 2;
constexpr uint8_t kTerminal = 1 << 3;
constexpr uint8_t kHasCapabilities = 1 << 4;
constexpr uint8_t kKnownFlags = 0x1f;
constexpr uint8_t kHasSeccomp = 1 << 0;
constexpr uint8_t kHasPidsLimit = 1 << 1;
constexpr uint8_t kServerless = 1 << 2;
}  // namespace

std::string encode(const ProcessSpec& s) {
    Writer w;
    w.str(s.exec_id).strings(s.args).strings(s.env).str(s.cwd).u32(s.uid).u32(s.gid);
    w.u32(uint32_t(s.additional_gids.size()));
    for (uint32_t g : s.additional_gids) w.u32(g);
    uint8_t flags = (s.umask ? kHasUmask : 0) | (s.oom_score_adj ? kHasOomScoreAdj : 0) |
                    (s.no_new_privileges ? kNoNewPrivileges : 0) | (s.terminal ? kTerminal : 0) |
                    (s.capabilities ? kHasCapabilities : 0);
    w.u8(flags).u32(s.umask.value_or(0)).i32(s.oom_score_adj.value_or(0));
    w.u32(uint32_t(s.rlimits.size()));
    for (const auto& r : s.rlimits) w.str(r.type).u64(r.soft).u64(r.hard);
    w.u16(s.rows).u16(s.cols).u8(s.attach);
    Capabilities caps = s.capabilities.value_or(Capabilities{});
    w.u64(caps.bounding).u64(caps.effective).u64(caps.inheritable).u64(caps.permitted).u64(caps.ambient);
    return w.take();
}

Result<ProcessSpec> decode_process_spec(std::string_view payload) {
    Reader r(payload);
    ProcessSpec s;
    s.exec_id = r.str();
    s.args = r.strings();
    s.env = r.strings();
    s.cwd = r.str();
    s.uid = r.u32();
    s.gid = r.u32();
    uint32_t groups = r.u32();
    if (groups > payload.size() / 4)
        return Error::from_string("agent protocol: malformed process spec: too many groups");
    for (uint32_t i = 0; i < groups; ++i) s.additional_gids.push_back(r.u32());
    uint8_t flags = r.u8();
    uint32_t umask = r.u32();
    int32_t oom = r.i32();
    if (flags & ~kKnownFlags) return Error::from_string("agent protocol: malformed process spec: unknown flags");
    if (flags & kHasUmask) s.umask = umask;
    if (flags & kHasOomScoreAdj) s.oom_score_adj = oom;
    s.no_new_privileges = flags & kNoNewPrivileges;
    s.terminal = flags & kTerminal;
    uint32_t limits = r.u32();
    if (limits > payload.size() / 20)
        return Error::from_string("agent protocol: malformed process spec: too many rlimits");
    for (uint32_t i = 0; i < limits; ++i) {
        Rlimit l;
        l.type = r.str();
        l.soft = r.u64();
        l.hard = r.u64();
        s.rlimits.push_back(std::move(l));
    }
    s.rows = r.u16();
    s.cols = r.u16();
    s.attach = r.u8();
    Capabilities caps;
    caps.bounding = r.u64();
    caps.effective = r.u64();
    caps.inheritable = r.u64();
    caps.permitted = r.u64();
    caps.ambient = r.u64();
    if (flags & kHasCapabilities) s.capabilities = caps;
    TRY(r.finish("process spec"));
    if (s.exec_id.empty()) return Error::from_string("agent protocol: process spec without an exec id");
    if (s.args.empty()) return Error::from_string("agent protocol: process spec without args");
    if (s.umask && *s.umask > 0777) return Error::from_string("agent protocol: umask out of range");
    if (s.attach & ~7) return Error::from_string("agent protocol: unknown stdio channels");
    return s;
}

std::string encode(const ContainerSpec& s) {
    Writer w;
    w.str(s.rootfs_device).str(s.rootfs_type).boolean(s.readonly).str(s.hostname);
    w.u32(uint32_t(s.mounts.size()));
    for (const auto& m : s.mounts) w.str(m.destination).str(m.type).str(m.source).strings(m.options);
    w.strings(s.masked_paths).strings(s.readonly_paths);
    w.u32(s.namespaces).u32(uint32_t(s.sysctls.size()));
    for (const auto& sysctl : s.sysctls) w.str(sysctl.name).str(sysctl.value);
    w.u8(
        uint8_t((s.seccomp ? kHasSeccomp : 0) | (s.pids_limit ? kHasPidsLimit : 0) | (s.serverless ? kServerless : 0)));
    if (s.seccomp) {
        const Seccomp& f = *s.seccomp;
        w.u8(uint8_t(f.default_action)).u32(f.default_errno).strings(f.architectures).u32(f.flags);
        w.u32(uint32_t(f.rules.size()));
        for (const auto& rule : f.rules) {
            w.strings(rule.names).u8(uint8_t(rule.action)).u32(rule.errno_ret).u32(uint32_t(rule.args.size()));
            for (const auto& a : rule.args) w.u32(a.index).u64(a.value).u64(a.value_two).u8(uint8_t(a.op));
        }
    }
    if (s.pids_limit) w.u64(*s.pids_limit);
    return w.take();
}

std::string encode(const NetworkSpec& s) {
    Writer w;
    w.u32(uint32_t(s.interfaces.size()));
    for (const auto& i : s.interfaces) {
        w.str(i.name).str(std::string_view(reinterpret_cast<const char*>(i.mac.data()), i.mac.size())).u32(i.mtu);
        w.u32(uint32_t(i.addresses.size()));
        for (const auto& a : i.addresses) w.u8(a.family).str(a.address).u8(a.prefix);
    }
    w.u32(uint32_t(s.routes.size()));
    for (const auto& r : s.routes) w.u8(r.family).str(r.destination).u8(r.prefix).str(r.gateway).u32(r.interface);
    w.boolean(s.dns_relay);
    return w.take();
}

Result<NetworkSpec> decode_network_spec(std::string_view payload) {
    Reader r(payload);
    NetworkSpec s;
    auto bad = [](const std::string& why) {
        return Error::from_string("agent protocol: malformed network spec: " + why, EINVAL);
    };
    auto family_ok = [](uint8_t f) { return f == 2 /* AF_INET */ || f == 10 /* AF_INET6 */; };
    uint32_t interfaces = r.u32();
    if (interfaces > kMaxInterfaces) return bad("more than " + std::to_string(kMaxInterfaces) + " interfaces");
    for (uint32_t i = 0; i < interfaces && !r.failed(); ++i) {
        InterfaceSpec nic;
        nic.name = r.str();
        std::string mac = r.str();
        nic.mtu = r.u32();
        if (r.failed()) break;
        if (mac.size() != 6) return bad("a MAC of " + std::to_string(mac.size()) + " bytes");
        std::memcpy(nic.mac.data(), mac.data(), 6);
        if (nic.name.empty() || nic.name.size() >= 16 || nic.name.find('/') != std::string::npos)
            return bad("interface name `" + nic.name + "`");
        uint32_t addresses = r.u32();
        if (addresses > kMaxAddresses) return bad("more than " + std::to_string(kMaxAddresses) + " addresses");
        for (uint32_t j = 0; j < addresses && !r.failed(); ++j) {
            IpAddress a;
            a.family = r.u8();
            a.address = r.str();
            a.prefix = r.u8();
            if (!r.failed() && !family_ok(a.family)) return bad("address family " + std::to_string(a.family));
            nic.addresses.push_back(std::move(a));
        }
        s.interfaces.push_back(std::move(nic));
    }
    uint32_t routes = r.u32();
    if (!r.failed() && routes > kMaxRoutes) return bad("more than " + std::to_string(kMaxRoutes) + " routes");
    for (uint32_t i = 0; i < routes && !r.failed(); ++i) {
        RouteSpec route;
        route.family = r.u8();
        route.destination = r.str();
        route.prefix = r.u8();
        route.gateway = r.str();
        route.interface = r.u32();
        if (r.failed()) break;
        if (!family_ok(route.family)) return bad("route family " + std::to_string(route.family));
        if (route.interface >= s.interfaces.size()) return bad("a route through an interface that is not there");
        s.routes.push_back(std::move(route));
    }
    s.dns_relay = r.boolean();
    TRY(r.finish("network spec"));
    return s;
}

Result<ContainerSpec> decode_container_spec(std::string_view payload) {
    Reader r(payload);
    ContainerSpec s;
    s.rootfs_device = r.str();
    s.rootfs_type = r.str();
    s.readonly = r.boolean();
    s.hostname = r.str();
    uint32_t mounts = r.u32();
    if (mounts > payload.size() / 16)
        return Error::from_string("agent protocol: malformed container spec: too many mounts");
    for (uint32_t i = 0; i < mounts; ++i) {
        Mount m;
        m.destination = r.str();
        m.type = r.str();
        m.source = r.str();
        m.options = r.strings();
        s.mounts.push_back(std::move(m));
    }
    s.masked_paths = r.strings();
    s.readonly_paths = r.strings();
    s.namespaces = r.u32();
    uint32_t sysctls = r.u32();
    if (sysctls > payload.size() / 8)
        return Error::from_string("agent protocol: malformed container spec: too many sysctls");
    for (uint32_t i = 0; i < sysctls; ++i) {
        Sysctl sysctl;
        sysctl.name = r.str();
        sysctl.value = r.str();
        s.sysctls.push_back(std::move(sysctl));
    }
    uint8_t extras = r.u8();
    if (extras & ~(kHasSeccomp | kHasPidsLimit | kServerless))
        return Error::from_string("agent protocol: malformed container spec: unknown flags");
    if (extras & kHasSeccomp) {
        Seccomp f;
        f.default_action = SeccompAction(r.u8());
        f.default_errno = r.u32();
        f.architectures = r.strings();
        f.flags = r.u32();
        uint32_t rules = r.u32();
        if (rules > payload.size() / 13)
            return Error::from_string("agent protocol: malformed container spec: too many seccomp rules");
        for (uint32_t i = 0; i < rules && !r.failed(); ++i) {
            SeccompRule rule;
            rule.names = r.strings();
            rule.action = SeccompAction(r.u8());
            rule.errno_ret = r.u32();
            uint32_t args = r.u32();
            if (args > 6)
                return Error::from_string(
                    "agent protocol: malformed container spec: a seccomp rule has more than 6 arguments");
            for (uint32_t j = 0; j < args; ++j) {
                SeccompArg a;
                a.index = r.u32();
                a.value = r.u64();
                a.value_two = r.u64();
                a.op = SeccompOp(r.u8());
                if (a.index > 5 || a.op < SeccompOp::NotEqual || a.op > SeccompOp::MaskedEqual)
                    return Error::from_string(
                        "agent protocol: malformed container spec: a seccomp argument out of range");
                rule.args.push_back(a);
            }
            if (rule.action > SeccompAction::Log)
                return Error::from_string("agent protocol: malformed container spec: unknown seccomp action");
            f.rules.push_back(std::move(rule));
        }
        if (f.default_action > SeccompAction::Log)
            return Error::from_string("agent protocol: malformed container spec: unknown seccomp action");
        s.seccomp = std::move(f);
    }
    if (extras & kHasPidsLimit) s.pids_limit = r.u64();
    s.serverless = extras & kServerless;
    TRY(r.finish("container spec"));
    if (s.namespaces & ~kKnownNamespaces)
        return Error::from_string("agent protocol: malformed container spec: unknown namespaces");
    for (const auto& sysctl : s.sysctls)
        if (sysctl.name.empty() || sysctl.name.find("..") != std::string::npos || sysctl.name[0] == '/' ||
            sysctl.name[0] == '.')
            return Error::from_string("agent protocol: sysctl `" + sysctl.name + "` is not a sysctl name");
    for (const auto& m : s.mounts)
        if (m.destination.empty() || m.destination[0] != '/')
            return Error::from_string("agent protocol: mount destination `" + m.destination + "` is not absolute");
    return s;
}

std::string encode_specs_file(const Specs& specs) {
    Writer w;
    w.u32(kSpecsFileVersion).str(encode(specs.container)).str(encode(specs.process)).strings(specs.ignored);
    return std::string(kSpecsFileMagic) + w.take();
}

Result<Specs> decode_specs_file(std::string_view bytes) {
    if (!bytes.starts_with(kSpecsFileMagic))
        return Error::from_string(
            "not a container specs file (`husk create` writes one from the OCI config; run an "
            "OCI bundle with `husk run`)",
            EINVAL);
    bytes.remove_prefix(kSpecsFileMagic.size());
    Reader r(bytes);
    uint32_t version = r.u32();
    std::string container = r.str(), process = r.str();
    Specs s;
    s.ignored = r.strings();
    TRY(r.finish("container specs file"));
    if (version != kSpecsFileVersion)
        return Error::from_string("container specs file of format " + std::to_string(version) +
                                      "; this husk-vmm reads " + std::to_string(kSpecsFileVersion),
                                  EINVAL);
    s.container = TRY(decode_container_spec(container));
    s.process = TRY(decode_process_spec(process));
    return s;
}

void FrameBuffer::append(std::span<const uint8_t> bytes) {
    m_bytes.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

Result<std::optional<FrameBuffer::Frame>> FrameBuffer::next() {
    if (m_bytes.size() < kHeaderSize) return std::optional<Frame>();
    FrameHeader h = TRY(decode_header(std::span(reinterpret_cast<const uint8_t*>(m_bytes.data()), kHeaderSize)));
    if (m_bytes.size() - kHeaderSize < h.length) return std::optional<Frame>();
    Frame f{MessageType(h.type), h.id, m_bytes.substr(kHeaderSize, h.length)};
    m_bytes.erase(0, kHeaderSize + h.length);
    return std::optional<Frame>(std::move(f));
}

int shell_status(int wait_status) {
    if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
    if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
    return 255;
}

}  // namespace husk::agent
