// husk features: what this runtime implements (runtime-spec features.md).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "runtime/runtime.h"
#include "vmm/base/json_text.h"
#include "vmm/client/agent_specs.h"

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
         {{"namespaces", {"mount", "uts", "ipc", "pid", "cgroup", "network"}},
          {"capabilities", capability_names()},
          // Applied inside the guest by the agent, with libseccomp.
          {"seccomp",
           {{"enabled", true},
            {"actions", seccomp_action_names()},
            {"operators", std::vector<std::string>(std::begin(oci::kSeccompOpNames), std::end(oci::kSeccompOpNames))},
            {"archs", {"SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"}},
            {"knownFlags", {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"}},
            {"supportedFlags",
             {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"}}}},
          {"apparmor", {{"enabled", false}}},
          {"selinux", {{"enabled", false}}},
          {"mountExtensions", {{"idmap", {{"enabled", false}}}}}}},
        {"annotations",
         {{"io.husk.isolation", "microvm"},
          {"io.husk.kernel", "guest kernel path (overrides vm.kernel in /etc/husk/config.toml)"},
          {"io.husk.memory_mib", "guest RAM in MiB"},
          {"io.husk.vcpus", "vCPUs"},
          {"io.husk.rootfs", "share (virtio-fs, the default) or image (an ext4 copy)"}}},
    };
    std::printf("%s\n", json_text(f, 2).c_str());
    return 0;
}

}  // namespace husk::runtime
