// The network a container's namespace holds, read with rtnetlink: its
// interfaces (name, MAC, MTU, state, addresses) and its main table's routes.
// This is what the guest's NIC is to take over from an engine's veth: its
// MAC and MTU, its addresses and the routes through it.
//
// What a namespace holds is the engine's, not ours to trust blindly: a dump
// of more than netlink::kMaxDumpEntries links, addresses or routes is refused
// rather than read without end.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vmm/base/netlink.h"
#include "vmm/base/result.h"

namespace husk::runtime::net {

using netlink::Address;
using netlink::Link;
using netlink::Network;
using netlink::Route;
using netlink::format_mac;
using netlink::read_network;

// Another namespace (an fd of /proc/PID/ns/net), read from a thread that joins it.
Result<Network> read_network_of(int netns_fd);

// Every frame that arrives at link `from` leaves through link `to`, untouched:
// an ingress qdisc on `from` and a u32 filter matching every frame whose
// action is a mirred egress redirect (the tc-filter model: a veth and the
// VM's TAP, each way). Idempotent: the qdisc is made afresh.
Result<void> redirect_ingress(uint32_t from, uint32_t to);

// The link's MTU (when given) and its state up.
Result<void> set_link_up(uint32_t index, std::optional<uint32_t> mtu);

}  // namespace husk::runtime::net
