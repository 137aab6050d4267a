// HostProbe: what this host's virtualization can do for husk ("husk doctor").
#pragma once

#include <string>
#include <vector>

namespace husk {

enum class CheckStatus { Pass, Fail, Warn, Info };

struct Check {
    std::string name;
    CheckStatus status;
    std::string detail;  // what was found
    std::string advice;  // what to do about a Fail/Warn
};

enum class KvmBackend { None, Intel, Amd, Pvm, Unknown };

struct HostReport {
    KvmBackend backend = KvmBackend::None;
    std::vector<Check> checks;
    // A stock Linux guest boots natively (hardware KVM with its capabilities).
    bool can_boot_linux = false;
    // Tiny guests run (any working /dev/kvm with the capabilities).
    bool can_run_vms = false;
};

// `sysfs_root` and `cpuinfo_path` exist so tests can point at a fake tree.
HostReport probe_host(const std::string& sysfs_root = "/sys", const std::string& cpuinfo_path = "/proc/cpuinfo",
                      const std::string& kvm_path = "/dev/kvm");
// "PASS  name: detail" lines, each with its advice under it; then the verdict.
std::string format_report(const HostReport& report);
std::string format_checks(const std::vector<Check>& checks);
// "pass", "fail", "warn", "info".
const char* check_status_name(CheckStatus status);
const char* backend_name(KvmBackend backend);
// The backend's kernel module ("kvm_intel", "kvm_amd", "kvm_pvm"), "none" or "unknown": for machine records.
const char* backend_module(KvmBackend backend);

}  // namespace husk
