// The exec proxy: the host process that stands for a process exec'd into a
// container (DESIGN.md "Process model"). It asks the guest's agent to run the
// process, relays its own stdio to it, forwards the signals it gets, and exits
// with the process's status. `husk exec --detach` leaves one behind, whose pid
// goes to --pid-file.
#pragma once

#include <chrono>
#include <memory>
#include <optional>

#include "agent/client.h"
#include "agent/protocol.h"
#include "runtime/state.h"
#include "vmm/base/result.h"

namespace husk::runtime {

// A connection to the container's agent, through husk-vmm's vsock socket,
// tried for `connect_for` while the guest may still be starting. With
// `replies_within`, requests that get no reply by then fail (a short exchange
// with a guest that may never answer: a paused VM); without, they wait.
Result<std::unique_ptr<agent::AgentClient>> connect_agent(const ContainerState& state, std::chrono::seconds connect_for,
                                                          std::optional<std::chrono::seconds> replies_within = {});

// Runs the process to its end; returns its status. `ready_fd` (if >= 0) hears
// "ok\n" once it started, or "error: ...\n".
Result<int> run_exec_proxy(const ContainerState& state, agent::ProcessSpec spec, int ready_fd);

}  // namespace husk::runtime
