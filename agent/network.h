// The guest's network, as the host read it from the container's namespace
// (agent/PROTOCOL.md, ConfigureNetwork): the loopback up, and the i-th NIC
// of the guest (by index, the loopback aside) given interface i's name,
// MAC, MTU and addresses, then the routes.
#pragma once

#include "agent/protocol.h"
#include "vmm/base/result.h"

namespace husk::agent {

Result<void> configure_network(const NetworkSpec& spec);

}  // namespace husk::agent
