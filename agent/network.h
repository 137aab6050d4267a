// The guest's network, as the host read it from the container's namespace
// (agent/PROTOCOL.md, ConfigureNetwork): the loopback up, and the i-th NIC
// of the guest (by index, the loopback aside) given interface i's name,
// MAC, MTU and addresses, then the routes. Short of NICs, the guest first
// probes its unbound virtio-mmio devices again (a NIC husk-vmm has plugged
// since boot, vm.toml net.unplugged).
#pragma once

#include "agent/protocol.h"
#include "vmm/base/result.h"

namespace husk::agent {

Result<void> configure_network(const NetworkSpec& spec);

// What the container sees when the host gave its NICs no interface (the
// container's namespace held none at start: `--network none`): the loopback
// up and no other link, as under runc. The unused NICs go to a network
// namespace of the agent's own, out of the container's sight.
Result<void> set_aside_unused_nics();

}  // namespace husk::agent
