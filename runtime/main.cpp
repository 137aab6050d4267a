// husk: the OCI runtime. runc's command line, so Docker and containerd's runc
// shim use it in runc's place; every container is a microVM (husk-vmm).
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/runtime.h"
#include "runtime/state.h"
#include "vmm/base/clock.h"
#include "vmm/base/json_text.h"
#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/base/unique_fd.h"

using namespace husk;
using namespace husk::runtime;

namespace {

constexpr const char* kUsage =
    "Usage: husk [global options] COMMAND [options] ID\n"
    "\n"
    "An OCI runtime that runs each container in its own microVM (husk-vmm + husk-agent),\n"
    "with runc's command line: use it as Docker's or containerd's runtime.\n"
    "\n"
    "Commands:\n"
    "  create    create a container: restore (or boot) its VM, share its rootfs, set its process up\n"
    "            --bundle DIR  --pid-file FILE  --console-socket SOCKET\n"
    "  start     run the created container's process\n"
    "  run       create + start; waits and deletes unless --detach\n"
    "  state     the OCI state JSON\n"
    "  kill      [--all] ID [SIGNAL]  (number or name; default TERM)\n"
    "  delete    [--force] ID\n"
    "  exec      [--process FILE | ID CMD...] [--tty] [--detach] [--pid-file F] [--console-socket S]\n"
    "            [--cwd DIR] [--env K=V]... [--user UID[:GID]]\n"
    "  ps        [--format table|json] ID: husk-vmm and exec proxies (the host's view)\n"
    "  list      [--format table|json] [--quiet]\n"
    "  pause     stop the VM's vCPUs;  resume  let them go\n"
    "  update    [--resources FILE|-] ID: refuses changes a fixed-size VM cannot make\n"
    "  features  what this runtime implements (JSON)\n"
    "  spec      write a starting config.json\n"
    "  doctor    [--json]: can this host run husk's containers, and what to fix (exit 0 when it can)\n"
    "  install   [--docker] [--containerd] [--podman] [--dry-run] [--path HUSK]: register husk as the\n"
    "            `husk` runtime with each engine found here, or those named; --dry-run shows the new files\n"
    "  uninstall [--docker] [--containerd] [--podman] [--dry-run]: remove what install added\n"
    "  serve     [--socket PATH] [--state DIR]: warm pools of VMs behind an HTTP API, reset after every\n"
    "            invocation (husk serve --help)\n"
    "\n"
    "Global options:\n"
    "  --root DIR          state directories (default /run/husk)\n"
    "  --log FILE          also write errors (and husk-vmm's log) here\n"
    "  --log-format FMT    text or json\n"
    "  --systemd-cgroup    accepted; husk places no cgroups yet\n"
    "  --debug             verbose husk-vmm logs\n"
    "  --vmm-log-dir DIR   each container VM's log in DIR/<id>.log, kept after the container\n"
    "                      (debugging; also HUSK_VMM_LOG_DIR)\n"
    "  --version, --help\n"
    "\n"
    "Configuration: /etc/husk/config.toml ([vm] kernel, vmm, initramfs, memory_mib, vcpus, rootfs);\n"
    "annotations io.husk.kernel, io.husk.memory_mib, io.husk.vcpus, io.husk.rootfs; linux.resources.memory.limit\n"
    "sizes the guest's RAM and the CPU quota or cpuset its vCPUs. rootfs: share (default: the bundle's\n"
    "root shared through virtio-fs, writes land in it) or image (an ext4 copy on virtio-blk).\n";

void report(const GlobalOptions& g, const std::string& message) {
    std::fprintf(stderr, "husk: %s\n", message.c_str());
    if (g.log.empty()) return;
    int fd = ::open(g.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) return;
    std::string line =
        g.log_json
            ? json_text(nlohmann::json{{"level", "error"}, {"msg", message}, {"time", clock::rfc3339_now()}}) + "\n"
            : clock::rfc3339_now() + " error: " + message + "\n";
    (void)sys::write_all(fd, line);
    ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
    GlobalOptions g;
    std::vector<std::string> args(argv + 1, argv + argc);
    size_t i = 0;
    auto value = [&](const std::string& flag, std::string& out) -> bool {
        if (args[i].size() > flag.size() && args[i].compare(0, flag.size() + 1, flag + "=") == 0) {
            out = args[i].substr(flag.size() + 1);
            return true;
        }
        if (args[i] != flag) return false;
        if (i + 1 >= args.size()) {
            std::fprintf(stderr, "husk: %s needs a value\n", flag.c_str());
            std::exit(1);
        }
        out = args[++i];
        return true;
    };
    for (; i < args.size() && args[i].size() > 1 && args[i][0] == '-'; ++i) {
        std::string a = args[i].rfind("--", 0) == 0 ? args[i] : "-" + args[i];  // -root is --root to runc
        args[i] = a;
        std::string format, ignored;
        if (value("--root", g.root) || value("--log", g.log) || value("--vmm-log-dir", g.vmm_log_dir)) continue;
        if (value("--log-format", format)) {
            if (format != "text" && format != "json") {
                std::fprintf(stderr, "husk: --log-format is text or json\n");
                return 1;
            }
            g.log_json = format == "json";
            continue;
        }
        if (value("--criu", ignored) || value("--rootless", ignored)) continue;
        if (a == "--systemd-cgroup")
            g.systemd_cgroup = true;
        else if (a == "--debug")
            g.debug = true;
        else if (a == "--help" || a == "--h") {
            std::printf("%s", kUsage);
            return 0;
        } else if (a == "--version" || a == "--v") {
            std::printf("husk version %s\nspec: 1.1.0\n", HUSK_VERSION);
            return 0;
        } else {
            std::fprintf(stderr, "husk: unknown global option %s (see husk --help)\n", a.c_str());
            return 1;
        }
    }
    if (i >= args.size()) {
        std::fprintf(stderr, "%s", kUsage);
        return 1;
    }
    // Log lines (warnings, --debug detail) go to --log only: the runtime's
    // stderr is the container's, which engines pass through to the user.
    UniqueFd log_fd;
    if (!g.log.empty()) log_fd = UniqueFd(::open(g.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
    log::configure("husk",
                   !log_fd   ? log::Level::Error
                   : g.debug ? log::Level::Debug
                             : log::Level::Info,
                   g.log_json ? log::Format::Json : log::Format::Text);
    if (log_fd) log::set_output(log_fd.get());
    std::string command = args[i];
    Args rest(args.begin() + long(i) + 1, args.end());
    static const std::map<std::string, std::function<Result<int>(const GlobalOptions&, const Args&)>> kCommands = {
        {"create", cmd_create},       {"start", cmd_start},   {"run", cmd_run},       {"state", cmd_state},
        {"kill", cmd_kill},           {"delete", cmd_delete}, {"exec", cmd_exec},     {"ps", cmd_ps},
        {"list", cmd_list},           {"pause", cmd_pause},   {"resume", cmd_resume}, {"update", cmd_update},
        {"features", cmd_features},   {"spec", cmd_spec},     {"doctor", cmd_doctor}, {"install", cmd_install},
        {"uninstall", cmd_uninstall}, {"serve", cmd_serve},
    };
    if (command == "help") {
        std::printf("%s", kUsage);
        return 0;
    }
    auto it = kCommands.find(command);
    if (it == kCommands.end()) {
        report(g, "unknown command `" + command + "` (see husk --help)");
        return 1;
    }
    for (const auto& a : rest)
        if ((a == "--help" || a == "-h") && command != "serve") {
            std::printf("%s", kUsage);
            return 0;
        }
    auto r = it->second(g, rest);
    if (!r) {
        report(g, r.error().message());
        return 1;
    }
    return r.value();
}
