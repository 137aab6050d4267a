// husk-vmm: one microVM per process, configured by vm.toml and/or flags.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/config/vm_config.h"
#include "vmm/probe/host_probe.h"
#include "vmm/seccomp/seccomp.h"
#include "vmm/vmm.h"

namespace po = boost::program_options;

namespace {

// The agent's initramfs shipped with husk-vmm: beside it in a build tree
// (build/vmm/husk-vmm → build/agent/husk-agent.cpio) or under share/husk when installed.
std::string default_agent_initramfs() {
    std::string dir = husk::sys::executable_dir();
    for (const char* rel : {"/../agent/husk-agent.cpio", "/../share/husk/husk-agent.cpio"}) {
        std::string path = dir + rel;
        if (::access(path.c_str(), R_OK) == 0) return path;
    }
    return {};
}

// A container needs the agent as init and a vsock to reach it; both have defaults.
husk::Result<void> container_defaults(husk::VmConfig& config) {
    // A container, or the template containers restore from, runs husk-agent.
    if (config.container_specs.empty() && config.snapshot_on_ready.empty()) return {};
    if (config.restore.empty()) config.agent = true;
    if (config.initramfs.empty() && config.restore.empty()) {
        config.initramfs = default_agent_initramfs();
        if (config.initramfs.empty())
            return husk::Error::from_string("container: husk-agent.cpio not found beside husk-vmm; give --initramfs");
    }
    if (config.vsock_socket.empty()) {
        const char* dir = std::getenv("XDG_RUNTIME_DIR");
        config.vsock_socket =
            std::string(dir && *dir ? dir : "/tmp") + "/husk-vmm-" + std::to_string(::getpid()) + ".vsock";
    }
    return {};
}

std::string keys_help() {
    std::ostringstream out;
    out << "vm.toml keys (flags override them):\n";
    std::string table;
    for (const auto& k : husk::vm_config_keys()) {
        if (table != k.table) {
            table = k.table;
            out << "  [" << table << "]\n";
        }
        out << "    " << k.key << " (" << k.type << "): " << k.help << "\n";
    }
    return out.str();
}

int run(int argc, char** argv) {
    po::options_description opts("Options");
    opts.add_options()("help,h", "show this help")("version", "print the version")("config,c", po::value<std::string>(),
                                                                                   "vm.toml to read")(
        "kernel", po::value<std::string>(), "boot.kernel: vmlinux or bzImage")("initramfs", po::value<std::string>(),
                                                                               "boot.initramfs")(
        "cmdline", po::value<std::string>(), "boot.cmdline: kernel command line")("entry", po::value<std::string>(),
                                                                                  "boot.entry: auto | pvh | linux64")(
        "vcpus", po::value<uint32_t>(), "machine.vcpus")("memory", po::value<uint32_t>(),
                                                         "machine.memory_mib: guest RAM in MiB")(
        "hugepages", "machine.hugepages = true")("cpu-template", po::value<std::string>(),
                                                 "machine.cpu_template: host | baseline (portable snapshots)")(
        "snapshot-on-ready", po::value<std::string>(),
        "snapshot.on_ready: boot, snapshot into this directory once init is ready, exit (makes templates)")(
        "restore", po::value<std::string>(),
        "snapshot.restore: restore this snapshot directory instead of booting (the machine comes from the snapshot; "
        "--api, --console, --vsock and --drive paths may be given anew)")(
        "console", po::value<std::string>(), "console.output: stdout | stderr | none | FILE")(
        "console-input", po::value<std::string>(), "console.input: none | stdin")(
        "drive", po::value<std::vector<std::string>>(),
        "[[drive]] PATH[,ro][,direct][,id=NAME]; repeat for more disks")("no-rng", "devices.rng = false")(
        "share", po::value<std::vector<std::string>>(),
        "[[share]] NAME=PATH[,ro]: a host directory through virtio-fs (tag husk, under NAME); repeat for more")(
        "balloon", po::value<uint32_t>(), "balloon.target_mib: MiB the guest gives back from boot on")(
        "no-balloon", "balloon.enabled = false: no virtio-balloon device")(
        "vsock", po::value<std::string>(), "[vsock] SOCKET[,cid=N]: virtio-vsock over a Unix socket")(
        "net", po::value<std::string>(), "[net] TAP[,mac=MAC]: virtio-net over a TAP interface")(
        "container", po::value<std::string>(),
        "container.specs: run the container this specs file describes (`husk create` writes it from the OCI "
        "config) through husk-agent (rootfs: the first --drive)")(
        "wait-for-start", "container.wait_for_start = true: set the container up, then wait for `start` on --api")(
        "api", po::value<std::string>(), "api.socket: the control socket (JSON lines)")(
        "jail",
        "jail.enabled = true (also HUSK_JAIL=1): once the VM is built, namespaces, a root of its own and no "
        "capabilities")("jail-user", po::value<std::string>(), "jail.user: UID[:GID] to run as in the jail")(
        "jail-cgroup", po::value<std::string>(), "jail.cgroup: cgroup v2 path to join")(
        "ready-fd", po::value<int>(),
        "write \"ok\" to this inherited fd once the container is created (or \"error: ...\")")(
        "log", po::value<std::string>(), "write log lines to this file instead of stderr")(
        "probe", "report this host's virtualization support and exit (0 if microVMs can run)")(
        "seccomp", po::value<std::string>()->default_value("enforce"),
        "system-call filters per thread: enforce (a forbidden call kills husk-vmm and the log names it) | log "
        "(allowed, logged by the kernel's audit) | off")("no-seccomp", "--seccomp off: for debugging only")(
        "seccomp-selftest", po::value<std::string>(),
        "vcpu | loop | control: that thread makes a forbidden call (an AF_INET socket) once its filter is in, "
        "which must kill husk-vmm with SIGSYS and name the call")(
        "log-format", po::value<std::string>()->default_value("text"), "text | json")("debug", "log debug messages");

    po::variables_map vm;
    try {
        po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "husk-vmm: " << e.what() << " (see husk-vmm --help)\n";
        return husk::kExitVmmError;
    }
    if (vm.count("help")) {
        std::cout << "Usage: husk-vmm [--config vm.toml] [--kernel FILE] [options]\n"
                     "       husk-vmm --restore SNAPSHOT_DIR [--api SOCKET] [options]\n\n"
                     "Starts one microVM (booted, or restored from a snapshot) and runs it until the guest powers "
                     "off.\n\n"
                  << opts << "\n"
                  << keys_help()
                  << "\nExit status: the guest's (0 on reboot/poweroff, or the byte written to debug port 0x441),\n"
                     "1 on a configuration or host error, 2 when the guest crashes (triple fault, kernel panic),\n"
                     "128+N when stopped by signal N. The guest writing port 0x440 logs the boot time.\n";
        return 0;
    }
    if (vm.count("version")) {
        std::cout << "husk-vmm version " << HUSK_VERSION
                  << (husk::seccomp::kSanitizerBuild ? " (built with sanitizers)" : "") << "\n";
        return 0;
    }
    auto format = vm["log-format"].as<std::string>();
    if (format != "text" && format != "json") {
        std::cerr << "husk-vmm: --log-format must be text or json\n";
        return husk::kExitVmmError;
    }
    husk::log::configure("husk-vmm", vm.count("debug") ? husk::log::Level::Debug : husk::log::Level::Info,
                         format == "json" ? husk::log::Format::Json : husk::log::Format::Text);
    husk::UniqueFd log_file;
    if (vm.count("log")) {
        auto fd = husk::sys::open(vm["log"].as<std::string>(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (fd.is_error()) {
            std::cerr << "husk-vmm: --log: " << fd.error().message() << "\n";
            return husk::kExitVmmError;
        }
        log_file = fd.release_value();
        husk::log::set_output(log_file.get());
    }
    if (vm.count("probe")) {
        auto report = husk::probe_host();
        std::cout << husk::format_report(report);
        return report.can_run_vms ? 0 : 1;
    }

    auto seccomp_mode = husk::seccomp::parse_mode(vm["seccomp"].as<std::string>());
    if (seccomp_mode.is_error()) {
        husk::log::error("--seccomp: {}", seccomp_mode.error().message());
        return husk::kExitVmmError;
    }
    if (vm.count("no-seccomp")) seccomp_mode = husk::seccomp::Mode::Off;
    if (seccomp_mode.value() != husk::seccomp::Mode::Enforce)
        husk::log::warn("seccomp is {}: the guest's VMM is not confined by system-call filters (for debugging only)",
                        husk::seccomp::mode_name(seccomp_mode.value()));
    if (vm.count("seccomp-selftest")) {
        auto kind = husk::seccomp::parse_thread(vm["seccomp-selftest"].as<std::string>());
        if (kind.is_error()) {
            husk::log::error("--seccomp-selftest: {}", kind.error().message());
            return husk::kExitVmmError;
        }
        husk::seccomp::set_selftest(kind.value());
    }
    // glibc loads the time zone on the first gmtime_r (a JSON log line's time),
    // opening /etc/localtime: done here, before any thread is filtered. A vCPU
    // thread whose log line was the process's first was killed for it.
    ::tzset();
    if (auto r = husk::seccomp::configure(seccomp_mode.value()); r.is_error()) {
        husk::log::error("seccomp: {}", r.error().message());
        return husk::kExitVmmError;
    }

    husk::VmConfig config;
    if (vm.count("config")) {
        auto path = vm["config"].as<std::string>();
        auto text = husk::sys::read_file(path, 1 << 20);
        if (text.is_error()) {
            husk::log::error("read config: {}", text.error().message());
            return husk::kExitVmmError;
        }
        auto parsed = husk::parse_vm_toml(text.value(), path);
        if (parsed.is_error()) {
            husk::log::error("{}", parsed.error().message());
            return husk::kExitVmmError;
        }
        config = parsed.release_value();
    }
    if (vm.count("kernel")) config.kernel = vm["kernel"].as<std::string>();
    if (vm.count("initramfs")) config.initramfs = vm["initramfs"].as<std::string>();
    if (vm.count("cmdline")) config.cmdline = vm["cmdline"].as<std::string>();
    // A word a parser turns into a type; an unknown one ends husk-vmm with the flag named.
    auto typed_flag = [&](const char* flag, auto parse, auto& field) {
        if (!vm.count(flag)) return true;
        auto v = parse(vm[flag].as<std::string>());
        if (v.is_error())
            husk::log::error("--{}: {}", flag, v.error().message());
        else
            field = v.value();
        return !v.is_error();
    };
    if (!typed_flag("entry", husk::parse_boot_entry, config.entry)) return husk::kExitVmmError;
    if (vm.count("vcpus")) config.vcpus = vm["vcpus"].as<uint32_t>();
    if (vm.count("memory")) config.memory_mib = vm["memory"].as<uint32_t>();
    if (vm.count("hugepages")) config.hugepages = true;
    if (!typed_flag("cpu-template", husk::parse_cpu_template, config.cpu_template)) return husk::kExitVmmError;
    if (vm.count("restore")) config.restore = vm["restore"].as<std::string>();
    if (vm.count("snapshot-on-ready")) config.snapshot_on_ready = vm["snapshot-on-ready"].as<std::string>();
    if (!typed_flag("console", husk::parse_console_output, config.console_output)) return husk::kExitVmmError;
    if (!typed_flag("console-input", husk::parse_console_input, config.console_input)) return husk::kExitVmmError;
    if (vm.count("no-rng")) config.rng = false;
    if (vm.count("balloon")) config.balloon_target_mib = vm["balloon"].as<uint32_t>();
    if (vm.count("no-balloon")) config.balloon = false;
    if (vm.count("net")) {
        if (auto r = husk::parse_net_flag(vm["net"].as<std::string>(), config); r.is_error()) {
            husk::log::error("{}", r.error().message());
            return husk::kExitVmmError;
        }
    }
    if (vm.count("vsock")) {
        if (auto r = husk::parse_vsock_flag(vm["vsock"].as<std::string>(), config); r.is_error()) {
            husk::log::error("{}", r.error().message());
            return husk::kExitVmmError;
        }
    }
    if (vm.count("drive")) {
        for (const auto& text : vm["drive"].as<std::vector<std::string>>()) {
            auto drive = husk::parse_drive_flag(text);
            if (drive.is_error()) {
                husk::log::error("{}", drive.error().message());
                return husk::kExitVmmError;
            }
            config.drives.push_back(drive.release_value());
        }
    }

    if (vm.count("share")) {
        for (const auto& text : vm["share"].as<std::vector<std::string>>()) {
            auto share = husk::parse_share_flag(text);
            if (share.is_error()) {
                husk::log::error("{}", share.error().message());
                return husk::kExitVmmError;
            }
            config.shares.push_back(share.release_value());
            config.fs = true;
        }
    }

    if (vm.count("container")) config.container_specs = vm["container"].as<std::string>();
    if (vm.count("wait-for-start")) config.container_wait_for_start = true;
    if (vm.count("api")) config.api_socket = vm["api"].as<std::string>();
    // HUSK_JAIL=1 jails every husk-vmm started with this environment (a whole
    // test suite, or the VMs an engine starts through the runtime).
    if (const char* j = std::getenv("HUSK_JAIL"); j && std::string_view(j) == "1") config.jail = true;
    if (vm.count("jail")) config.jail = true;
    if (vm.count("jail-user")) config.jail_user = vm["jail-user"].as<std::string>();
    if (vm.count("jail-cgroup")) config.jail_cgroup = vm["jail-cgroup"].as<std::string>();
    if (vm.count("ready-fd")) {
        config.ready_fd = vm["ready-fd"].as<int>();
        ::fcntl(config.ready_fd, F_SETFD, FD_CLOEXEC);
    }
    // In the jail the working directory is its root: paths it keeps are absolute.
    if (config.jail) {
        for (std::string* path : {&config.api_socket, &config.vsock_socket, &config.snapshot_on_ready})
            if (!path->empty()) *path = std::filesystem::absolute(*path).lexically_normal().string();
    }
    if (auto r = container_defaults(config); r.is_error()) {
        husk::log::error("{}", r.error().message());
        return husk::kExitVmmError;
    }
    // The container's stderr is ours: say only what matters there unless asked to say more.
    if (!config.container_specs.empty() && !vm.count("debug") && !vm.count("log"))
        husk::log::configure("husk-vmm", husk::log::Level::Warn,
                             format == "json" ? husk::log::Format::Json : husk::log::Format::Text);

    auto vmm = husk::Vmm::create(config);
    if (vmm.is_error()) {
        husk::log::error("{}", vmm.error().message());
        if (config.ready_fd >= 0) (void)husk::sys::write_all(config.ready_fd, "error: " + vmm.error().message() + "\n");
        return husk::kExitVmmError;
    }
    auto status = vmm.value()->run();
    if (status.is_error()) {
        husk::log::error("{}", status.error().message());
        return husk::kExitVmmError;
    }
    return status.value();
}

}  // namespace

int main(int argc, char** argv) {
    // A reader that went away (the container's stdout, the runtime's ready
    // pipe, an API client) is an EPIPE for the writer to handle, never a
    // signal that kills the VM. husk-vmm executes nothing, so nothing inherits this.
    ::signal(SIGPIPE, SIG_IGN);
    return run(argc, argv);
}
