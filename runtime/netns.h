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
#include <string_view>
#include <vector>

#include "agent/protocol.h"
#include "vmm/base/netlink.h"
#include "vmm/base/result.h"

namespace husk::runtime::net {

using netlink::Address;
using netlink::format_mac;
using netlink::Link;
using netlink::Network;
using netlink::read_network;
using netlink::Route;

// Another namespace (an fd of /proc/PID/ns/net), read from a thread that joins it.
Result<Network> read_network_of(int netns_fd);

// Every frame that arrives at link `from` leaves through link `to`, untouched:
// an ingress qdisc on `from` and a u32 filter matching every frame whose
// action is a mirred egress redirect (the tc-filter model: a veth and the
// VM's TAP, each way). Idempotent: the qdisc is made afresh.
Result<void> redirect_ingress(uint32_t from, uint32_t to);

// The link's MTU (when given) and its state up.
Result<void> set_link_up(uint32_t index, std::optional<uint32_t> mtu);

// The VM's TAPs in the container's namespace: husk0 for its first NIC, husk1, ...
inline constexpr const char* kTapName = "husk0";
inline constexpr size_t kMaxTaps = 4;  // a VM's NICs at most (husk-vmm's kMaxNics)
std::string tap_name(size_t index);

// Docker's embedded DNS server on a user-defined network, as a container's
// resolv.conf names it (reached through a DNAT rule in the container's namespace).
inline constexpr const char* kEmbeddedDns = "127.0.0.11";

// True when a resolv.conf text has a `nameserver ADDRESS` line.
bool names_nameserver(std::string_view resolv_conf, std::string_view address);

// The interfaces the engine gave the container (Docker's eth0, and eth1, ...
// for each further network): its Ethernet links, by index, that are not the
// VM's TAPs (the loopback and the tunnels a host's modules put in every
// namespace are not). None: the container has no network but its loopback
// (`--network none`).
std::vector<const Link*> engine_interfaces(const Network& network);

// Wires the VM's TAPs to the engine's interfaces, in the namespace
// `netns_fd`, the i-th interface to husk<i>: frames cross both ways by
// redirect (the engine's veth keeps its addresses on the host side, unused
// there), the TAP up with the interface's MTU. What the guest's NICs must
// then take over — each interface's name, MAC, MTU, addresses (not IPv6
// link-local ones, which the guest makes itself) and the routes through it —
// is returned for the agent. An interface with no TAP (the VM has fewer
// NICs) is logged and left alone.
Result<agent::NetworkSpec> wire_to_tap(int netns_fd);

}  // namespace husk::runtime::net
