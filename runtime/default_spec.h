// The starting OCI config.json husk writes: `husk spec`'s, which `runc spec`
// mirrors (a shell on a terminal, a read-only root at `rootfs`, the usual
// mounts and namespaces).
#pragma once

#include <nlohmann/json.hpp>

namespace husk::runtime {

nlohmann::json default_spec();

}  // namespace husk::runtime
