// Cgroup placement: husk-vmm, the whole VM, joins the container's
// linux.cgroupsPath, so the engine's accounting (`docker stats`, the shim's
// OOM events) sees what the VM costs, and a CPU limit throttles its vCPUs.
// cgroup v2 (one hierarchy), or v1's cpu, cpuacct, memory and pids
// hierarchies where v2 is not mounted.
//
// The memory limit is not written: the guest's RAM already is the limit
// (the VM is sized to it), and husk-vmm's few MiB of its own on top would
// turn a full guest into an OOM kill of the whole VM.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "vmm/base/result.h"

namespace husk::runtime {

// The cgroup (a path below the hierarchy's root) for a config's cgroupsPath:
// cgroupfs's "/docker/ID" as it is, a relative one below husk's own cgroup,
// systemd's "SLICE:PREFIX:NAME" as systemd lays it out
// ("system.slice:docker:ID" → "/system.slice/docker-ID.scope";
// "user-1000.slice" nests in "user.slice"). Empty: no placement.
Result<std::string> cgroup_for(const std::string& cgroups_path, bool systemd);

struct CgroupPlacement {
    std::vector<std::string> dirs;   // the directories made and joined, deepest last per hierarchy
    std::vector<std::string> procs;  // cgroup.procs files to write the pid into, one per hierarchy
};

// Makes the cgroup's directories under `root` (/sys/fs/cgroup), enabling on
// v2 the memory controller on the way down (what the engines' stats read),
// and the cpu controller only when `cpu_limit` (cpu.max needs it): in a cpu
// group of its own, all of the VM's threads share one weight, where the
// container's processes under runc would each have had their own.
Result<CgroupPlacement> make_cgroup(const std::string& cgroup, bool cpu_limit = false,
                                    const std::string& root = "/sys/fs/cgroup");

// CPU bandwidth for the cgroup: quota µs per period µs (cpu.max on v2,
// cfs_quota_us and cfs_period_us on v1). No quota: unlimited.
Result<void> set_cpu_limit(const std::string& cgroup, std::optional<int64_t> quota, uint64_t period,
                           const std::string& root = "/sys/fs/cgroup");
// Enables the cpu controller down to the cgroup (v2), for a limit set after create (update --cpus).
void enable_cpu_controller(const std::string& cgroup, const std::string& root = "/sys/fs/cgroup");

// Removes the cgroup's leaf directories (they must be empty); gone already is fine.
void remove_cgroup(const std::string& cgroup, const std::string& root = "/sys/fs/cgroup");
bool cgroup_exists(const std::string& cgroup, const std::string& root = "/sys/fs/cgroup");

}  // namespace husk::runtime
