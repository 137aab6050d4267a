// The exec proxy: the host process that stands for a process exec'd into a
// container (DESIGN.md "Process model"). It asks the guest's agent to run the
// process, relays its own stdio to it, forwards the signals it gets, and exits
// with the process's status. `husk exec --detach` leaves one behind, whose pid
// goes to --pid-file.
#pragma once

#include "agent/protocol.h"
#include "runtime/state.h"
#include "vmm/base/result.h"

namespace husk::runtime {

// Runs the process to its end; returns its status. `ready_fd` (if >= 0) hears
// "ok\n" once it started, or "error: ...\n".
Result<int> run_exec_proxy(const ContainerState& state, agent::ProcessSpec spec, int ready_fd);

}  // namespace husk::runtime
