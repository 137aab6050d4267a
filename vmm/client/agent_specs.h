// The OCI-to-agent translation: what the guest's husk-agent is told to set
// up and run for an OCI config (agent/PROTOCOL.md). Shared by husk-vmm (the
// container's first process) and the runtime (`husk exec`).
#pragma once

#include <string>
#include <vector>

#include "agent/protocol.h"
#include "oci/spec.h"
#include "vmm/base/result.h"

namespace husk {

// What the guest is told: the agent's container and process specs from an OCI
// config. husk-vmm takes them as a file (agent::encode_specs_file).
using AgentSpecs = agent::Specs;
Result<AgentSpecs> agent_specs_for(const oci::Spec& spec);
// An OCI process as the agent runs it (every stdio channel attached; a terminal has no stderr).
agent::ProcessSpec process_spec_for(const oci::Process& process, std::string exec_id);

// The capability names the guest kernel knows, in bit order ("CAP_CHOWN" first).
std::vector<std::string> capability_names();
// The seccomp actions the agent applies (every one the runtime-spec names but SCMP_ACT_NOTIFY).
std::vector<std::string> seccomp_action_names();

}  // namespace husk
