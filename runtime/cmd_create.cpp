// husk create [--bundle DIR] [--pid-file FILE] [--console-socket SOCKET] ID
//
// Shares the rootfs (or, with vm.rootfs = "image", builds its ext4 copy),
// starts husk-vmm (its pid is the container's pid, written to --pid-file
// before we return), and returns once the guest has the container's process
// created and waiting for `husk start`. On any failure nothing is left: no
// husk-vmm, no state directory, no image.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "oci/spec.h"
#include "runtime/args.h"
#include "runtime/cgroup.h"
#include "runtime/console.h"
#include "runtime/create.h"
#include "runtime/exec_proxy.h"
#include "runtime/handoff.h"
#include "runtime/hooks.h"
#include "runtime/husk_config.h"
#include "runtime/netns.h"
#include "runtime/rootfs_image.h"
#include "runtime/runtime.h"
#include "runtime/state.h"
#include "runtime/template.h"
#include "vmm/base/clock.h"
#include "vmm/base/json_text.h"
#include "vmm/base/log.h"
#include "vmm/base/subprocess.h"
#include "vmm/base/system.h"
#include "vmm/base/wire.h"
#include "vmm/client/agent_specs.h"
#include "vmm/client/vmm_command.h"

namespace husk::runtime {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

std::string absolute(const std::string& base, const std::string& path) {
    if (!path.empty() && path[0] == '/') return path;
    return fs::weakly_canonical(fs::path(base) / path).string();
}

// What the guest's mounts need from the host: files copied into the rootfs
// image, or shared with the directories through virtio-fs.
struct GuestBinds {
    std::vector<ImageFile> files;
    std::vector<VmmCommand::Share> shares;
};

// Rewrites the mounts for the guest: bound host directories (volumes) become
// virtio-fs shares, whose source the agent finds at /.husk/fs/<name>
// (agent/PROTOCOL.md); bound host files too when `share_files` (a shared
// rootfs), else they are copied into the image under /.husk/binds; a bound
// /dev/shm becomes the guest's own tmpfs.
GuestBinds rewrite_mounts(Json& config, const oci::Spec& spec, const std::string& bundle, bool share_files) {
    GuestBinds binds;
    if (!config.contains("mounts")) return binds;
    // spec.mounts holds the same entries, in the same order, already validated.
    for (size_t i = 0; i < spec.mounts.size(); ++i) {
        if (!oci::is_bind(spec.mounts[i])) continue;
        Json& m = config["mounts"][i];
        std::string destination = m.value("destination", "");
        std::string source = m.value("source", "");
        struct stat st {};
        if (destination == "/dev/shm") {
            // The engine's tmpfs is sized by --shm-size: the guest's gets that size (64 MiB when unknown).
            struct statvfs fs {};
            std::string size = ::statvfs(source.c_str(), &fs) == 0
                                   ? "size=" + std::to_string(uint64_t(fs.f_blocks) * fs.f_frsize)
                                   : "size=65536k";
            m = {{"destination", "/dev/shm"},
                 {"type", "tmpfs"},
                 {"source", "shm"},
                 {"options", {"nosuid", "noexec", "nodev", "mode=1777", size}}};
            continue;
        }
        if (::stat(source.c_str(), &st) < 0) continue;
        if (S_ISREG(st.st_mode) && !share_files) {
            std::string in_image = "/.husk/binds/" + std::to_string(binds.files.size());
            binds.files.push_back({source, in_image});
            m["source"] = in_image;
        } else if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
            const auto& options = spec.mounts[i].options;
            VmmCommand::Share share{(S_ISDIR(st.st_mode) ? "volume" : "file") + std::to_string(binds.shares.size()),
                                    absolute(bundle, source),
                                    std::find(options.begin(), options.end(), "ro") != options.end()};
            m["source"] = "/.husk/fs/" + share.name;
            binds.shares.push_back(std::move(share));
        }
    }
    return binds;
}

// Cleans up a half-made container unless dismissed.
class Undo {
public:
    explicit Undo(std::string dir) : m_dir(std::move(dir)) {}
    ~Undo() {
        if (!m_armed) return;
        if (m_pid > 0) {
            ::kill(m_pid, SIGKILL);
            ::waitpid(m_pid, nullptr, 0);
        }
        std::error_code ec;
        for (const auto& p : m_paths) fs::remove(p, ec);
        fs::remove_all(m_dir, ec);
    }
    void set_pid(pid_t pid) { m_pid = pid; }
    void also_remove(const std::string& path) { m_paths.push_back(path); }
    void dismiss() { m_armed = false; }

private:
    std::string m_dir;
    std::vector<std::string> m_paths;
    pid_t m_pid = -1;
    bool m_armed = true;
};

// A network namespace made before the VM: a child that unshares one and
// holds it until it is let go (its end of a pipe closes). The engine's hooks
// run in it (Docker's libnetwork-setkey moves the container's veth in from
// its prestart hook), so the VM is built knowing whether it needs a NIC.
class NetnsHolder {
public:
    static Result<NetnsHolder> start() {
        int ready[2], hold[2];
        if (::pipe2(ready, O_CLOEXEC) < 0) return Error::from_errno(errno, "pipe");
        UniqueFd ready_r(ready[0]), ready_w(ready[1]);
        if (::pipe2(hold, O_CLOEXEC) < 0) return Error::from_errno(errno, "pipe");
        UniqueFd hold_r(hold[0]), hold_w(hold[1]);
        pid_t pid = ::fork();
        if (pid < 0) return Error::from_errno(errno, "fork the network namespace's holder");
        if (pid == 0) {
            // Only system calls here: the runtime may have threads. It keeps
            // no fd but its end of the hold pipe (fd 3): not the container's
            // stdio, not husk-vmm's ready pipe.
            char c = ::unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
            [[maybe_unused]] ssize_t w = ::write(ready_w.get(), &c, 1);
            if (::dup2(hold_r.get(), 3) < 0) ::_exit(1);
            ::syscall(SYS_close_range, 4u, ~0u, 0u);
            for (int fd : {0, 1, 2}) ::close(fd);
            while (::read(3, &c, 1) < 0 && errno == EINTR) {
            }
            ::_exit(0);
        }
        NetnsHolder holder(pid, std::move(hold_w));
        ready_w.reset();
        char c = 0;
        while (::read(ready_r.get(), &c, 1) < 0 && errno == EINTR) {
        }
        if (c != 'y') return Error::from_string("make the container's network namespace: unshare failed");
        holder.m_netns = TRY(sys::open("/proc/" + std::to_string(pid) + "/ns/net", O_RDONLY | O_CLOEXEC)
                                 .context("the container's network namespace"));
        return holder;
    }
    NetnsHolder(NetnsHolder&& o) noexcept
        : m_pid(std::exchange(o.m_pid, -1)), m_hold(std::move(o.m_hold)), m_netns(std::move(o.m_netns)) {}
    ~NetnsHolder() {
        m_hold.reset();
        if (m_pid > 0) ::waitpid(m_pid, nullptr, 0);
    }
    pid_t pid() const { return m_pid; }
    // The namespace, open: husk-vmm joins it through this once the holder is gone.
    UniqueFd take_netns() { return std::move(m_netns); }

private:
    NetnsHolder(pid_t pid, UniqueFd hold) : m_pid(pid), m_hold(std::move(hold)) {}
    pid_t m_pid = -1;
    UniqueFd m_hold;
    UniqueFd m_netns;
};

// The resolv.conf the config mounts at /etc/resolv.conf (the engine's)
// names `address` as a nameserver.
bool resolv_conf_names(const oci::Spec& spec, const std::string& bundle, std::string_view address) {
    for (const auto& m : spec.mounts) {
        if (m.destination != "/etc/resolv.conf") continue;
        auto text = sys::read_file(absolute(bundle, m.source), 64 << 10);
        return text && net::names_nameserver(text.value(), address);
    }
    return false;
}

// Unix socket paths are limited to 107 bytes, and engines nest state
// directories deep (dockerd: /run/docker/runtime-husk/moby/<64 hex>/), so the
// sockets live in a short directory, named by a hash of the state directory.
Result<std::string> socket_prefix(const std::string& dir) {
    uint64_t h = wire::fnv1a64(dir);
    char name[32];
    std::snprintf(name, sizeof name, "%016llx", static_cast<unsigned long long>(h));
    std::string base =
        ::geteuid() == 0 ? "/run/husk-sockets" : std::string("/tmp/husk-sockets-") + std::to_string(::geteuid());
    if (::mkdir(base.c_str(), 0700) < 0 && errno != EEXIST) return Error::from_errno(errno, "create " + base);
    return base + "/" + name;
}

}  // namespace

Result<void> connect_network(const ContainerState& state, int netns_fd) {
    agent::NetworkSpec network = TRY(net::wire_to_tap(netns_fd));
    auto spec = oci::load_spec(state.bundle);
    network.dns_relay = spec && resolv_conf_names(spec.value(), state.bundle, net::kEmbeddedDns);
    auto client = TRY(connect_agent(state, std::chrono::seconds(30), std::chrono::seconds(30)));
    TRY(client->configure_network(network).context("configure the guest's network"));
    return {};
}

std::string vmm_log_path(const GlobalOptions& g, const std::string& state_dir, const std::string& id) {
    // --vmm-log-dir or HUSK_VMM_LOG_DIR (a debugging aid): each container VM's log goes to DIR/<id>.log
    // instead, where it outlives the container (an engine removes its bundle, and the log it named there).
    std::string keep = g.vmm_log_dir;
    if (const char* env = std::getenv("HUSK_VMM_LOG_DIR"); keep.empty() && env) keep = env;
    if (!keep.empty()) return keep + "/" + id + ".log";
    return g.log.empty() ? state_dir + "/vmm.log" : g.log;
}

Result<ContainerState> create_container(const GlobalOptions& g, const CreateOptions& o) {
    TRY(validate_id(o.id));
    std::string bundle = absolute(fs::current_path().string(), o.bundle.empty() ? "." : o.bundle);
    // Read once: parsed for its meaning, and kept as JSON to hand husk-vmm with its mounts rewritten.
    std::string config_text = TRY(sys::read_file(bundle + "/config.json", 16 << 20));
    oci::Spec spec = TRY(oci::parse_spec(config_text, bundle + "/config.json"));
    if (!spec.process) return Error::from_string(bundle + "/config.json: process: is required to create a container");
    if (spec.process->terminal && o.console_socket.empty() && !o.foreground)
        return Error::from_string("process.terminal is set: --console-socket is required");
    RuntimeConfig rc = TRY(load_runtime_config());
    TRY(apply_annotations(rc, spec.annotations));
    if (spec.linux_.resources.memory_limit && *spec.linux_.resources.memory_limit > 0)
        rc.memory_mib = uint32_t(std::max<int64_t>(128, (*spec.linux_.resources.memory_limit + (1 << 20) - 1) >> 20));
    if (auto v = oci::vcpus_for(spec.linux_.resources)) rc.vcpus = std::min<uint32_t>(*v, 64);
    if (rc.kernel.empty() || ::access(rc.kernel.c_str(), R_OK) != 0)
        return Error::from_string("no guest kernel" + (rc.kernel.empty() ? std::string() : " at `" + rc.kernel + "`") +
                                      ": set vm.kernel in " + kConfigPath +
                                      " or HUSK_KERNEL (kernel-config/build builds one and prints its path)",
                                  ENOENT);

    std::error_code ec;
    fs::create_directories(g.root, ec);
    if (ec) return Error::from_errno(ec.value(), "create " + g.root);
    std::string dir = state_dir(g.root, o.id);
    if (::mkdir(dir.c_str(), 0700) < 0) {
        if (errno == EEXIST) return Error::from_string("container `" + o.id + "` already exists", EEXIST);
        return Error::from_errno(errno, "create " + dir);
    }
    Undo undo(dir);

    // The bundle's config with mounts rewritten for the guest.
    Json config = Json::parse(config_text);
    const bool shared_root = rc.rootfs == RootfsMode::Share;
    auto binds = rewrite_mounts(config, spec, bundle, shared_root);
    std::string rootfs = absolute(bundle, spec.root.path);
    // The VM's one disk: the rootfs's ext4 copy, or an empty stand-in for the
    // template's disk when the rootfs is shared.
    std::string image = dir + (shared_root ? "/no-disk" : "/rootfs.ext4");
    if (shared_root) {
        struct stat st {};
        if (::stat(rootfs.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
            return Error::from_errno(errno ? errno : ENOTDIR, "the rootfs `" + rootfs + "`");
        TRY(sys::write_file(image, ""));
        // Read-write even for root.readonly: the agent makes the mount points
        // (as runc does in the rootfs), then remounts the container's root read-only.
        binds.shares.push_back({"rootfs", rootfs, false});
    } else {
        TRY(build_rootfs_image(rootfs, image, binds.files).context("build the rootfs image"));
    }
    // What husk-vmm hands the agent: the config, with mounts rewritten for the
    // guest, translated here (husk-vmm parses no OCI config).
    {
        oci::Spec guest_spec = TRY(oci::parse_spec(json_text(config), bundle + "/config.json"));
        auto specs = TRY(agent_specs_for(guest_spec));
        if (shared_root) {
            specs.container.rootfs_device = "rootfs";
            specs.container.rootfs_type = "virtiofs";
        }
        TRY(sys::write_file(dir + "/container.specs", agent::encode_specs_file(specs)));
    }

    ContainerState state;
    state.id = o.id;
    state.bundle = bundle;
    state.rootfs = rootfs;
    state.created = clock::rfc3339_now();
    state.annotations = spec.annotations;
    state.oci_version = spec.oci_version;
    state.dir = dir;
    std::string sockets = TRY(socket_prefix(dir));
    state.api_socket = sockets + ".api";
    state.vsock_socket = sockets + ".vsock";
    undo.also_remove(state.api_socket);
    undo.also_remove(state.vsock_socket);
    state.image = image;
    state.status = "creating";

    std::optional<Pty> pty;
    if (spec.process->terminal && !o.console_socket.empty()) pty = TRY(open_pty());

    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) < 0) return Error::from_errno(errno, "pipe");
    UniqueFd ready_r(ready[0]), ready_w(ready[1]);
    // The container's network namespace: the one the config names (Podman's,
    // made and filled by the engine), or a new one. A new one is made before
    // the VM when the engine has hooks to run (createRuntime and prestart run
    // in it now, and not again below).
    bool new_netns = false;
    UniqueFd netns;
    for (const auto& ns : spec.linux_.namespaces) {
        if (ns.type != "network") continue;
        if (ns.path.empty())
            new_netns = true;
        else
            netns = TRY(sys::open(ns.path, O_RDONLY | O_CLOEXEC).context("the network namespace"));
    }
    // The host's network: namespaces listed without a network one, or one whose
    // path is the host's own (Docker's --network host names its bind of it).
    bool host_network =
        !spec.linux_.namespaces.empty() && std::none_of(spec.linux_.namespaces.begin(), spec.linux_.namespaces.end(),
                                                        [](const oci::Namespace& ns) { return ns.type == "network"; });
    if (netns) {
        struct stat given {
        }, own{};
        host_network = ::fstat(netns.get(), &given) == 0 && ::stat("/proc/self/ns/net", &own) == 0 &&
                       given.st_dev == own.st_dev && given.st_ino == own.st_ino;
    }
    if (host_network)
        return Error::from_string(
            "config.json: linux.namespaces names no network namespace of the container's own: it would share the "
            "host's network (--network host), which a VM, with a kernel of its own, cannot; give it a network of its "
            "own",
            EINVAL);
    const bool early_hooks = new_netns && (!spec.hooks.create_runtime.empty() || !spec.hooks.prestart.empty());
    std::optional<NetnsHolder> holder;
    if (early_hooks) {
        holder.emplace(TRY(NetnsHolder::start()));
        netns = holder->take_netns();
        new_netns = false;
        ContainerState early = state;
        early.pid = holder->pid();
        Json early_state = early.oci_json("creating");
        TRY(run_hooks(spec.hooks.create_runtime, early_state, "createRuntime"));
        TRY(run_hooks(spec.hooks.prestart, early_state, "prestart"));
    }
    // The interfaces the engine put there (veths) are the guest's network: the VM gets a NIC, a TAP beside
    // each (at most net::kMaxTaps; any further one is logged when wired).
    std::vector<net::Link> engine_links;
    if (netns) {
        auto network = TRY(net::read_network_of(netns.get()).context("read the container's network namespace"));
        if (network.find(net::kTapName))
            return Error::from_string(
                "the network namespace is another husk container's (--network container:ID): its network is that "
                "VM's NIC, which a second VM cannot share",
                EBUSY);
        for (const net::Link* link : net::engine_interfaces(network))
            if (engine_links.size() < net::kMaxTaps) engine_links.push_back(*link);
    }
    // A container whose namespace holds the engine's interfaces gets a NIC for each.
    // One in a namespace husk-vmm makes for itself (no hook ran there) may get
    // the interface between create and start (`ctr run --cni`, Docker 26.0.0
    // and 28+): its VM gets an unplugged NIC, a placeholder the guest does
    // not probe, plugged and wired at start if the interface came. (Not a
    // plugged one: VMs with an unused NIC were lost far more often to the
    // test rig's triple faults.)
    const TemplateNics nics = !engine_links.empty() ? TemplateNics{engine_links.size(), false}
                              : new_netns           ? TemplateNics{1, true}
                                                    : TemplateNics{};
    // From a template when there is one (made on first use), else a cold boot.
    std::string from_template;
    if (rc.use_template) {
        auto t = ensure_template(rc, nics);
        if (t)
            from_template = t.value();
        else
            log::warn("booting without a template: {}", t.error().message());
    }
    VmmCommand command;
    command.vmm = rc.vmm;
    if (from_template.empty()) {
        command.kernel = rc.kernel;
        command.initramfs = rc.initramfs;
        command.memory_mib = rc.memory_mib;
        command.vcpus = rc.vcpus;
    } else {
        command.restore = from_template;
    }
    // Writable even for a read-only root: the agent makes the mount points,
    // then remounts the container's root read-only.
    command.drives = {image};
    command.fs = true;
    command.shares = std::move(binds.shares);
    for (size_t i = 0; i < nics.count; ++i) {
        // A restored VM keeps the template's MAC until the agent sets the interface's.
        std::string mac = from_template.empty() && i < engine_links.size() ? net::format_mac(engine_links[i].mac) : "";
        command.nics.push_back({net::tap_name(i), mac, nics.unplugged});
    }
    // The guest's queries to Docker's embedded DNS (agent/dns_relay.h) reach it from husk-vmm, in this namespace.
    if (nics.count) command.vsock_dns_forward = std::string(net::kEmbeddedDns) + ":53";
    command.vsock_socket = state.vsock_socket;
    command.api_socket = state.api_socket;
    command.container_specs = dir + "/container.specs";
    command.ready_fd = 3;
    command.wait_for_start = true;
    command.log = vmm_log_path(g, dir, o.id);
    command.log_format = g.log_json ? VmmCommand::LogFormat::Json : VmmCommand::LogFormat::Text;
    command.debug = g.debug;
    // The VM's description stays in the state directory, where `cat` shows what husk-vmm was told.
    const std::string vm_toml = TRY(command.vm_toml());
    TRY(sys::write_file(dir + "/vm.toml", vm_toml));
    std::vector<std::string> argv = command.argv(dir + "/vm.toml");

    int netns_fd = netns ? netns.get() : -1;
    // husk-vmm joins the container's cgroup before it runs (runtime/cgroup.h):
    // all it does, the VM included, is the container's cost.
    state.cgroup =
        TRY(cgroup_for(spec.linux_.cgroups_path, g.systemd_cgroup).context("config.json: linux.cgroupsPath"));
    const oci::Resources& resources = spec.linux_.resources;
    const bool cpu_limit = resources.cpu_quota && *resources.cpu_quota > 0;
    CgroupPlacement placement = TRY(make_cgroup(state.cgroup, cpu_limit));
    for (auto it = placement.dirs.rbegin(); it != placement.dirs.rend(); ++it) undo.also_remove(*it);
    std::vector<UniqueFd> procs;
    for (const auto& path : placement.procs) procs.push_back(TRY(sys::open(path, O_WRONLY | O_CLOEXEC)));
    std::array<int, 4> procs_fds{-1, -1, -1, -1};
    for (size_t i = 0; i < procs.size() && i < procs_fds.size(); ++i) procs_fds[i] = procs[i].get();
    // husk-vmm: the container's stdio are ours (or the pty's), the ready
    // pipe is its fd 3, and it has its own session (a kill of our process
    // group must not take the container with it).
    sys::SpawnOptions spawn;
    spawn.stdin_fd = STDIN_FILENO;
    spawn.stdout_fd = STDOUT_FILENO;
    spawn.stderr_fd = STDERR_FILENO;
    int slave = pty ? pty->slave.get() : -1, ready_fd = ready_w.get();
    spawn.before_exec = [slave, netns_fd, new_netns, ready_fd, procs_fds] {
        for (int fd : procs_fds)  // "0": the writer, husk-vmm before it starts
            if (fd >= 0 && ::write(fd, "0", 1) < 0) return errno;
        if (slave >= 0)
            become_terminal_owner(slave);
        else
            ::setsid();
        // The container's network namespace is husk-vmm's: a new one, or the one
        // the config names. Engines' network hooks (Docker's setkey) then
        // configure it, not the host's, and a TAP made there is the guest's network.
        if ((netns_fd >= 0 && ::setns(netns_fd, CLONE_NEWNET) < 0) ||
            (netns_fd < 0 && new_netns && ::unshare(CLONE_NEWNET) < 0))
            return errno;
        return ::dup2(ready_fd, 3) < 0 ? errno : 0;
    };
    spawn.before_exec_what = "join the container's cgroup and network namespace";
    pid_t pid = TRY(sys::spawn(argv, spawn).context("start husk-vmm"));
    undo.set_pid(pid);
    ready_w.reset();
    if (pty) {
        pty->slave.reset();
        TRY(send_console(o.console_socket, pty->master.get()));
    }
    procs.clear();
    // The CPU limit throttles the VM's vCPUs as it would the container's processes under runc.
    if (!state.cgroup.empty() && cpu_limit)
        if (auto r = set_cpu_limit(state.cgroup, resources.cpu_quota, resources.cpu_period.value_or(100000)); !r)
            log::warn("the CPU limit is not applied to husk-vmm's cgroup: {}", r.error().message());
    TRY(wait_ready(ready_r.get(), pid, "husk-vmm").context("create `" + o.id + "`"));
    state.pid = pid;
    state.pid_start = process_start_time(pid);
    state.status = "created";
    TRY(save_state(state));
    if (!o.pid_file.empty()) TRY(write_pid_file(o.pid_file, pid));
    Json oci_state = state.oci_json("created");
    if (!early_hooks) {
        TRY(run_hooks(spec.hooks.create_runtime, oci_state, "createRuntime"));
        TRY(run_hooks(spec.hooks.prestart, oci_state, "prestart"));
    }
    // The guest's NIC takes the engine's interface over, before the container's process starts.
    if (!engine_links.empty()) TRY(connect_network(state, netns.get()).context("create `" + o.id + "`"));
    if (nics.unplugged) {
        state.network_pending = true;
        TRY(save_state(state));
    }
    TRY(run_hooks(spec.hooks.create_container, oci_state, "createContainer"));
    undo.dismiss();
    return state;
}

Result<int> cmd_create(const GlobalOptions& g, const Args& args) {
    CreateOptions o = TRY(parse_create_options(args, "create"));
    TRY(create_container(g, o));
    return 0;
}

}  // namespace husk::runtime

namespace husk::runtime {

Result<CreateOptions> parse_create_options(const Args& args, const std::string& command) {
    ArgParser p(command);
    p.value("bundle", "b").value("pid-file").value("console-socket").flag("detach", "d");
    p.ignored_flag("no-pivot").ignored_flag("no-new-keyring").ignored_value("preserve-fds").ignored_flag("keep");
    TRY(p.parse(args));
    CreateOptions o;
    o.id = TRY(p.id());
    o.bundle = p.get("bundle");
    o.pid_file = p.get("pid-file");
    o.console_socket = p.get("console-socket");
    o.foreground = command == "run" && p.get("detach") != "true";
    return o;
}

}  // namespace husk::runtime
