#include "vmm/client/agent_specs.h"

namespace husk {

namespace {

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
    for (const auto& m : spec.mounts) {
        // Binds name host paths; the runtime copies such files into the rootfs
        // image and rewrites the source to their path there (agent/PROTOCOL.md).
        if (oci::is_bind(m)) {
            if (m.source.rfind("/.husk/", 0) == 0)
                c.mounts.push_back({m.destination, "bind", m.source, m.options});
            else
                out.skipped_mounts.push_back(m.destination + " (bind of a host path)");
            continue;
        }
        if (!guest_can_mount(m)) {
            out.skipped_mounts.push_back(m.destination + " (" + m.type + ")");
            continue;
        }
        c.mounts.push_back({m.destination, m.type, m.source, m.options});
    }
    out.process = process_spec_for(*spec.process, std::string(agent::kInitId));
    return out;
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
    s.terminal = p.terminal;
    s.rows = p.console_height;
    s.cols = p.console_width;
    s.attach = p.terminal ? (agent::kAttachStdin | agent::kAttachStdout)
                          : (agent::kAttachStdin | agent::kAttachStdout | agent::kAttachStderr);
    return s;
}

}  // namespace husk
