// Container state: <root>/<id>/state.json, written by create and read by every
// other subcommand. The OCI state (runtime-spec runtime.md) plus what husk
// needs to reach the VM. The status is derived: a dead husk-vmm is "stopped";
// a live one is asked over its API socket.
#pragma once

#include <sys/types.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vmm/base/result.h"

namespace husk::runtime {

struct ContainerState {
    std::string id;
    std::string bundle;
    std::string rootfs;   // the bundle's root.path, absolute
    std::string created;  // RFC 3339
    std::map<std::string, std::string> annotations;
    std::string oci_version;
    pid_t pid = 0;                     // husk-vmm
    unsigned long long pid_start = 0;  // its start time (/proc/PID/stat field 22): a reused pid is not ours
    std::string dir;                   // the state directory
    std::string api_socket;
    std::string vsock_socket;
    std::string image;   // the rootfs image
    std::string cgroup;  // husk-vmm's cgroup (runtime/cgroup.h), or empty
    std::string status;  // as last recorded: created, running, paused
    std::vector<pid_t> exec_pids;
    // The VM has an unplugged NIC: the engine may put its interface into the
    // namespace before start (`ctr run --cni`), which then plugs and wires it.
    bool network_pending = false;

    // The OCI state document (`husk state`).
    nlohmann::json oci_json(const std::string& live_status) const;
};

// Checks an id the way runc does: non-empty, [A-Za-z0-9_.-], at most 1024 bytes.
Result<void> validate_id(const std::string& id);
std::string state_dir(const std::string& root, const std::string& id);
Result<ContainerState> load_state(const std::string& root, const std::string& id);
Result<void> save_state(const ContainerState& state);
std::vector<std::string> list_ids(const std::string& root);

// The live status: "stopped" when husk-vmm is gone, else what it says (created, running, paused).
std::string live_status(const ContainerState& state);
bool vmm_alive(const ContainerState& state);
unsigned long long process_start_time(pid_t pid);

}  // namespace husk::runtime
