// The OCI runtime-spec config.json (config.md, config-linux.md): the subset
// husk honours, parsed and validated. Every error names the file and the
// JSON path of the offending field: "config.json: process.args: must not be empty".
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/result.h"

namespace husk::oci {

struct User {
    uint32_t uid = 0;
    uint32_t gid = 0;
    std::optional<uint32_t> umask;
    std::vector<uint32_t> additional_gids;
};

struct Rlimit {
    std::string type;
    uint64_t hard = 0;
    uint64_t soft = 0;
};

// process.capabilities: capability names ("CAP_CHOWN") per set.
struct Capabilities {
    std::vector<std::string> bounding, effective, inheritable, permitted, ambient;
};

struct Process {
    bool terminal = false;
    uint16_t console_height = 0;
    uint16_t console_width = 0;
    User user;
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::string cwd = "/";
    std::vector<Rlimit> rlimits;
    bool no_new_privileges = false;
    std::optional<int32_t> oom_score_adj;
    std::optional<Capabilities> capabilities;
    std::string apparmor_profile;
    std::string selinux_label;
};

struct Root {
    std::string path;
    bool readonly = false;
};

struct Mount {
    std::string destination;
    std::string type;
    std::string source;
    std::vector<std::string> options;
};

struct Hook {
    std::string path;
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::optional<int> timeout;
};

struct Hooks {
    std::vector<Hook> prestart, create_runtime, create_container, start_container, poststart, poststop;
};

struct Resources {
    std::optional<int64_t> memory_limit;  // bytes
    std::optional<int64_t> cpu_quota;     // µs per period
    std::optional<uint64_t> cpu_period;   // µs
    std::string cpuset_cpus;              // "0-3,6"
    std::optional<int64_t> pids_limit;    // negative: no limit
};

struct Namespace {
    std::string type;  // pid, network, mount, ipc, uts, user, cgroup
    std::string path;  // join this one instead of creating one
};

// The seccomp actions and comparison operators the runtime-spec names, in one
// place; the operators in libseccomp's scmp_compare order (SCMP_CMP_NE is 1).
inline constexpr std::string_view kSeccompActionNames[] = {
    "SCMP_ACT_KILL",  "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",  "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",        "SCMP_ACT_LOG",         "SCMP_ACT_NOTIFY"};
inline constexpr std::string_view kSeccompOpNames[] = {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",       "SCMP_CMP_EQ",
                                                       "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"};

// linux.seccomp, as written (config-linux.md "Seccomp"); names are checked
// against the spec's lists, syscall names are left to the guest's kernel.
struct SeccompArg {
    uint32_t index = 0;
    uint64_t value = 0;
    uint64_t value_two = 0;
    std::string op;  // "SCMP_CMP_EQ"
};
struct SeccompSyscall {
    std::vector<std::string> names;
    std::string action;  // "SCMP_ACT_ALLOW"
    std::optional<uint32_t> errno_ret;
    std::vector<SeccompArg> args;
};
struct Seccomp {
    std::string default_action;
    std::optional<uint32_t> default_errno_ret;
    std::vector<std::string> architectures;  // "SCMP_ARCH_X86_64"
    std::vector<std::string> flags;          // "SECCOMP_FILTER_FLAG_LOG"
    std::string listener_path;
    std::vector<SeccompSyscall> syscalls;
};

struct Linux {
    Resources resources;
    std::vector<Namespace> namespaces;
    std::string cgroups_path;
    std::vector<std::string> masked_paths;
    std::vector<std::string> readonly_paths;
    std::map<std::string, std::string> sysctl;
    std::optional<Seccomp> seccomp;
};

struct Spec {
    std::string oci_version;
    std::optional<Process> process;
    Root root;
    std::string hostname;
    std::vector<Mount> mounts;
    Hooks hooks;
    std::map<std::string, std::string> annotations;
    Linux linux_;
};

// A bind mount: type "bind", or the "bind"/"rbind" option (how runc's configs spell it).
bool is_bind(const Mount& mount);

// `name` prefixes every error ("config.json").
Result<Spec> parse_spec(std::string_view json, std::string_view name = "config.json");
// A process.json as given to `exec --process`.
Result<Process> parse_process(std::string_view json, std::string_view name = "process.json");
// Reads and parses BUNDLE/config.json.
Result<Spec> load_spec(const std::string& bundle);

// vCPUs for the resources: quota/period rounded up, else the cpuset's size, else nothing.
std::optional<uint32_t> vcpus_for(const Resources& resources);
// Number of CPUs in a cpuset list ("0-3,6" → 5); an error for malformed lists.
Result<uint32_t> cpuset_size(std::string_view cpus);

}  // namespace husk::oci
