#include "vmm/client/agent_specs.h"

#include <linux/seccomp.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace husk {

namespace {

// Capability numbers as in linux/capability.h (CAP_CHOWN is 0).
constexpr const char* kCapabilityNames[] = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};

// A set of names as bits; names this guest kernel does not know go to `unknown`.
uint64_t capability_bits(const std::vector<std::string>& names, std::vector<std::string>* unknown) {
    uint64_t bits = 0;
    for (const auto& name : names) {
        auto it = std::find_if(std::begin(kCapabilityNames), std::end(kCapabilityNames),
                               [&](const char* n) { return name == n; });
        if (it != std::end(kCapabilityNames))
            bits |= uint64_t(1) << (it - std::begin(kCapabilityNames));
        else if (unknown && std::find(unknown->begin(), unknown->end(), name) == unknown->end())
            unknown->push_back(name);
    }
    return bits;
}

agent::Capabilities capabilities_for(const oci::Capabilities& c, std::vector<std::string>* unknown) {
    return {capability_bits(c.bounding, unknown), capability_bits(c.effective, unknown),
            capability_bits(c.inheritable, unknown), capability_bits(c.permitted, unknown),
            capability_bits(c.ambient, unknown)};
}

// Every action of oci::kSeccompActionNames but SCMP_ACT_NOTIFY.
constexpr std::pair<std::string_view, agent::SeccompAction> kSeccompActions[] = {
    {"SCMP_ACT_KILL", agent::SeccompAction::KillThread},
    {"SCMP_ACT_KILL_THREAD", agent::SeccompAction::KillThread},
    {"SCMP_ACT_KILL_PROCESS", agent::SeccompAction::KillProcess},
    {"SCMP_ACT_TRAP", agent::SeccompAction::Trap},
    {"SCMP_ACT_ERRNO", agent::SeccompAction::Errno},
    {"SCMP_ACT_TRACE", agent::SeccompAction::Trace},
    {"SCMP_ACT_ALLOW", agent::SeccompAction::Allow},
    {"SCMP_ACT_LOG", agent::SeccompAction::Log},
};

// Names oci::parse_spec has already checked.
Result<agent::SeccompAction> seccomp_action(const std::string& name) {
    for (const auto& [known, action] : kSeccompActions)
        if (name == known) return action;
    return Error::from_string(
        "config.json: linux.seccomp: " + name +
            " is not supported: the filter runs inside the container's VM, where no seccomp agent of the host can be "
            "told",
        EINVAL);
}

Result<agent::Seccomp> seccomp_for(const oci::Seccomp& s) {
    if (!s.listener_path.empty())
        return Error::from_string(
            "config.json: linux.seccomp.listenerPath: seccomp notifications are not supported: the filter runs "
            "inside the container's VM",
            EINVAL);
    agent::Seccomp out;
    out.default_action = TRY(seccomp_action(s.default_action));
    out.default_errno = s.default_errno_ret.value_or(EPERM);
    for (const auto& arch : s.architectures) {
        std::string name = arch.substr(std::string_view("SCMP_ARCH_").size());
        for (char& ch : name) ch = char(std::tolower(static_cast<unsigned char>(ch)));
        out.architectures.push_back(name);
    }
    for (const auto& flag : s.flags) {
        if (flag == "SECCOMP_FILTER_FLAG_LOG")
            out.flags |= SECCOMP_FILTER_FLAG_LOG;
        else if (flag == "SECCOMP_FILTER_FLAG_SPEC_ALLOW")
            out.flags |= SECCOMP_FILTER_FLAG_SPEC_ALLOW;
        else if (flag != "SECCOMP_FILTER_FLAG_TSYNC")  // every process loads the filter single-threaded
            return Error::from_string("config.json: linux.seccomp.flags: `" + flag + "` is not supported", EINVAL);
    }
    for (const auto& call : s.syscalls) {
        agent::SeccompRule rule;
        rule.names = call.names;
        rule.action = TRY(seccomp_action(call.action));
        rule.errno_ret = call.errno_ret.value_or(EPERM);
        for (const auto& a : call.args) {
            // Checked by oci::parse_spec; agent::SeccompOp numbers them as libseccomp does, from 1.
            auto op = std::find(std::begin(oci::kSeccompOpNames), std::end(oci::kSeccompOpNames), a.op);
            if (op == std::end(oci::kSeccompOpNames))
                return Error::from_string("config.json: linux.seccomp: `" + a.op + "` is not a seccomp comparison",
                                          EINVAL);
            rule.args.push_back(
                {a.index, a.value, a.value_two, agent::SeccompOp(1 + (op - std::begin(oci::kSeccompOpNames)))});
        }
        out.rules.push_back(std::move(rule));
    }
    return out;
}

// A sysctl name the agent may turn into a path under /proc/sys.
bool valid_sysctl_name(const std::string& name) {
    if (name.empty() || name[0] == '.' || name[0] == '/' || name.back() == '/') return false;
    if (name.find("..") != std::string::npos || name.find("//") != std::string::npos) return false;
    return std::all_of(name.begin(), name.end(), [](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) || std::strchr("._-/@:+", ch);
    });
}

// Filesystems the guest kernel has; anything else (overlay from the host, nfs, ...) cannot be honoured.
bool guest_can_mount(const oci::Mount& m) {
    static const char* const kTypes[] = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"};
    for (const char* t : kTypes)
        if (m.type == t) return true;
    return false;
}

}  // namespace

Result<AgentSpecs> agent_specs_for(const oci::Spec& spec) {
    if (!spec.process) return Error::from_string("config.json has no process to run");
    AgentSpecs out;
    agent::ContainerSpec& c = out.container;
    c.readonly = spec.root.readonly;
    c.hostname = spec.hostname;
    c.masked_paths = spec.linux_.masked_paths;
    c.readonly_paths = spec.linux_.readonly_paths;
    for (const auto& ns : spec.linux_.namespaces) {
        static const std::pair<const char*, uint32_t> kInGuest[] = {{"pid", agent::kNamespacePid},
                                                                    {"ipc", agent::kNamespaceIpc},
                                                                    {"uts", agent::kNamespaceUts},
                                                                    {"cgroup", agent::kNamespaceCgroup}};
        if (ns.type == "network") continue;  // the host side of the VM's network (`husk create`)
        if (!ns.path.empty())
            return Error::from_string("config.json: linux.namespaces: the " + ns.type + " namespace at `" + ns.path +
                                          "` cannot be joined: the container runs in its own VM, with its own kernel",
                                      EINVAL);
        auto it = std::find_if(std::begin(kInGuest), std::end(kInGuest),
                               [&](const auto& entry) { return ns.type == entry.first; });
        if (it != std::end(kInGuest))
            c.namespaces |= it->second;
        else if (ns.type != "mount")  // every container has its own mount namespace
            out.ignored.push_back("the " + ns.type + " namespace (the VM is the container's own)");
    }
    for (const auto& [name, value] : spec.linux_.sysctl) {
        if (!valid_sysctl_name(name))
            return Error::from_string("config.json: linux.sysctl: `" + name + "` is not a sysctl name", EINVAL);
        c.sysctls.push_back({name, value});
    }
    if (spec.linux_.seccomp) c.seccomp = TRY(seccomp_for(*spec.linux_.seccomp));
    // As runc reads it: 0 sets nothing, a negative limit is none.
    if (auto limit = spec.linux_.resources.pids_limit; limit && *limit > 0) c.pids_limit = uint64_t(*limit);
    for (const auto& m : spec.mounts) {
        // Binds name host paths; the runtime copies such files into the rootfs
        // image and rewrites the source to their path there (agent/PROTOCOL.md).
        if (oci::is_bind(m)) {
            if (m.source.rfind("/.husk/", 0) == 0) {
                c.mounts.push_back({m.destination, "bind", m.source, m.options});
            } else {
                out.ignored.push_back("mount " + m.destination + " (bind of a host path)");
            }
            continue;
        }
        if (!guest_can_mount(m)) {
            out.ignored.push_back("mount " + m.destination + " (" + m.type + ")");
            continue;
        }
        c.mounts.push_back({m.destination, m.type, m.source, m.options});
    }
    out.process = process_spec_for(*spec.process, std::string(agent::kInitId));
    const oci::Process& p = *spec.process;
    if (p.capabilities) {
        std::vector<std::string> unknown;
        capabilities_for(*p.capabilities, &unknown);
        for (const auto& name : unknown) out.ignored.push_back("capability " + name + " (unknown to the guest kernel)");
    }
    if (!p.apparmor_profile.empty())
        out.ignored.push_back("process.apparmorProfile `" + p.apparmor_profile + "` (the guest has no AppArmor)");
    if (!p.selinux_label.empty())
        out.ignored.push_back("process.selinuxLabel `" + p.selinux_label + "` (the guest has no SELinux)");
    return out;
}

std::vector<std::string> seccomp_action_names() {
    std::vector<std::string> names;
    for (const auto& entry : kSeccompActions) names.emplace_back(entry.first);
    return names;
}

std::vector<std::string> capability_names() {
    return {std::begin(kCapabilityNames), std::end(kCapabilityNames)};
}

agent::ProcessSpec process_spec_for(const oci::Process& p, std::string exec_id) {
    agent::ProcessSpec s;
    s.exec_id = std::move(exec_id);
    s.args = p.args;
    s.env = p.env;
    s.cwd = p.cwd;
    s.uid = p.user.uid;
    s.gid = p.user.gid;
    s.additional_gids = p.user.additional_gids;
    s.umask = p.user.umask;
    for (const auto& r : p.rlimits) s.rlimits.push_back({r.type, r.soft, r.hard});
    s.no_new_privileges = p.no_new_privileges;
    s.oom_score_adj = p.oom_score_adj;
    if (p.capabilities) s.capabilities = capabilities_for(*p.capabilities, nullptr);
    s.terminal = p.terminal;
    s.rows = p.console_height;
    s.cols = p.console_width;
    s.attach = p.terminal ? (agent::kAttachStdin | agent::kAttachStdout)
                          : (agent::kAttachStdin | agent::kAttachStdout | agent::kAttachStderr);
    return s;
}

}  // namespace husk
