// What `husk create` does for husk-vmm, for tests and benchmarks that run
// husk-vmm directly: an OCI config translated into the container's specs file
// (`husk-vmm --container FILE`).
#pragma once

#include <fmt/format.h>

#include <fstream>
#include <stdexcept>
#include <string>

#include "agent/protocol.h"
#include "oci/spec.h"
#include "vmm/client/agent_specs.h"

namespace husk::test {

// Writes `path`; throws on a config the runtime would refuse (a test's own mistake).
inline void write_container_specs(const std::string& config_json, const std::string& path) {
    auto spec = oci::parse_spec(config_json);
    if (spec.is_error()) throw std::runtime_error(spec.error().message());
    auto specs = agent_specs_for(spec.value());
    if (specs.is_error()) throw std::runtime_error(specs.error().message());
    std::ofstream(path, std::ios::binary | std::ios::trunc) << agent::encode_specs_file(specs.value());
}

}  // namespace husk::test
