// create: shared by `husk create` and `husk run`.
#pragma once

#include <string>

#include "runtime/runtime.h"
#include "runtime/state.h"

namespace husk::runtime {

struct CreateOptions {
    std::string id;
    std::string bundle;
    std::string pid_file;
    std::string console_socket;
    bool foreground = false;  // `run` without --detach: a terminal may be our own stdio
};

Result<CreateOptions> parse_create_options(const Args& args, const std::string& command);
Result<ContainerState> create_container(const GlobalOptions& g, const CreateOptions& options);
// Where container `id`'s husk-vmm logs: --log, else DIR/<id>.log under --vmm-log-dir or HUSK_VMM_LOG_DIR (kept
// after the container), else vmm.log in its state directory `state_dir`.
std::string vmm_log_path(const GlobalOptions& g, const std::string& state_dir, const std::string& id);
// The engine's interface in the namespace `netns_fd` wired to the VM's TAP,
// and the guest told to take it over (runtime/netns.h), relaying DNS at
// 127.0.0.11 when the engine's resolv.conf names it.
Result<void> connect_network(const ContainerState& state, int netns_fd);
// The OCI start: an interface the engine put into the namespace since create
// is plugged into the guest and wired; husk-vmm lets the process exec;
// poststart hooks follow.
Result<void> start_container(ContainerState& state);
// Stops husk-vmm (SIGKILL) if it lives, waits until it is gone, runs poststop, removes the state.
Result<void> destroy_container(ContainerState& state);

}  // namespace husk::runtime
