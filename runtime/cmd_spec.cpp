// husk spec [--bundle DIR]: writes a starting config.json, as `runc spec` does.
#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "runtime/args.h"
#include "runtime/runtime.h"
#include "vmm/base/json_text.h"
#include "vmm/base/system.h"

namespace husk::runtime {

Result<int> cmd_spec(const GlobalOptions&, const Args& args) {
    ArgParser p("spec");
    p.value("bundle", "b").ignored_flag("rootless");
    TRY(p.parse(args));
    std::string path = p.get("bundle", ".") + "/config.json";
    if (::access(path.c_str(), F_OK) == 0) return Error::from_string(path + " exists; remove it first", EEXIST);
    using J = nlohmann::json;
    J spec = {
        {"ociVersion", "1.1.0"},
        {"process",
         {{"terminal", true},
          {"user", {{"uid", 0}, {"gid", 0}}},
          {"args", {"sh"}},
          {"env", {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"}},
          {"cwd", "/"},
          {"rlimits", {{{"type", "RLIMIT_NOFILE"}, {"hard", 1024}, {"soft", 1024}}}},
          {"noNewPrivileges", true}}},
        {"root", {{"path", "rootfs"}, {"readonly", true}}},
        {"hostname", "husk"},
        {"mounts",
         {{{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
          {{"destination", "/dev"},
           {"type", "tmpfs"},
           {"source", "tmpfs"},
           {"options", {"nosuid", "strictatime", "mode=755", "size=65536k"}}},
          {{"destination", "/dev/pts"},
           {"type", "devpts"},
           {"source", "devpts"},
           {"options", {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}}},
          {{"destination", "/dev/shm"},
           {"type", "tmpfs"},
           {"source", "shm"},
           {"options", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}},
          {{"destination", "/dev/mqueue"},
           {"type", "mqueue"},
           {"source", "mqueue"},
           {"options", {"nosuid", "noexec", "nodev"}}},
          {{"destination", "/sys"},
           {"type", "sysfs"},
           {"source", "sysfs"},
           {"options", {"nosuid", "noexec", "nodev", "ro"}}}}},
        {"linux",
         {{"namespaces",
           {{{"type", "pid"}}, {{"type", "network"}}, {{"type", "ipc"}}, {{"type", "uts"}}, {{"type", "mount"}}}},
          {"maskedPaths", {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"}},
          {"readonlyPaths", {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}}}},
    };
    auto fd = TRY(sys::open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    TRY(sys::write_all(fd.get(), json_text(spec, 2) + "\n"));
    return 0;
}

}  // namespace husk::runtime
