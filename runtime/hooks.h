// OCI hooks (runtime-spec config.md "POSIX-platform Hooks"): each gets the
// container's state on stdin; a failing hook fails the operation, except
// poststart and poststop, whose failures are warnings.
//
// All of them run on the host. createContainer and startContainer are meant
// for the container's namespaces, which are inside the VM, where host binaries
// do not exist; husk runs them in the runtime's namespace, like createRuntime.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "oci/spec.h"
#include "vmm/base/result.h"

namespace husk::runtime {

Result<void> run_hooks(const std::vector<oci::Hook>& hooks, const nlohmann::json& state, const std::string& phase);

}  // namespace husk::runtime
