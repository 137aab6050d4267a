// husk features: what this runtime implements (runtime-spec features.md).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "runtime/runtime.h"
#include "vmm/base/json_text.h"

namespace husk::runtime {

Result<int> cmd_features(const GlobalOptions&, const Args&) {
    nlohmann::json f = {
        {"ociVersionMin", "1.0.0"},
        {"ociVersionMax", "1.1.0"},
        {"hooks", {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}},
        {"mountOptions", {"ro",       "rw",       "nosuid",     "suid",        "nodev",   "dev",        "noexec",
                          "exec",     "sync",     "async",      "dirsync",     "noatime", "atime",      "nodiratime",
                          "diratime", "relatime", "norelatime", "strictatime", "bind",    "rbind",      "private",
                          "rprivate", "shared",   "rshared",    "slave",       "rslave",  "unbindable", "runbindable"}},
        {"linux",
         {{"namespaces", {"mount", "uts", "ipc", "pid", "network"}},
          {"mountExtensions", {{"idmap", {{"enabled", false}}}}}}},
        {"annotations",
         {{"io.husk.isolation", "microvm"},
          {"io.husk.kernel", "guest kernel path (overrides vm.kernel in /etc/husk/config.toml)"},
          {"io.husk.memory_mib", "guest RAM in MiB"},
          {"io.husk.vcpus", "vCPUs"}}},
    };
    std::printf("%s\n", json_text(f, 2).c_str());
    return 0;
}

}  // namespace husk::runtime
