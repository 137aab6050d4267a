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

#include "vmm/base/result.h"

namespace husk::runtime::net {

struct Address {
    int family = 0;       // AF_INET or AF_INET6
    std::string address;  // "172.17.0.2", "fd00::2"
    uint8_t prefix = 0;
    bool operator==(const Address&) const = default;
};

struct Link {
    uint32_t index = 0;
    std::string name;
    std::array<uint8_t, 6> mac{};
    uint32_t mtu = 0;
    bool up = false;
    bool loopback = false;
    std::vector<Address> addresses;
};

struct Route {
    int family = 0;
    std::string destination;  // empty: the default route
    uint8_t prefix = 0;
    std::string gateway;  // empty: on the link
    uint32_t link = 0;    // the outgoing interface's index
    bool kernel = false;  // made by the kernel for an address (RTPROT_KERNEL)
};

struct Network {
    std::vector<Link> links;
    std::vector<Route> routes;  // unicast routes of the main table
    const Link* find(const std::string& name) const;
};

// The calling thread's network namespace.
Result<Network> read_network();
// Another namespace (an fd of /proc/PID/ns/net), read from a thread that joins it.
Result<Network> read_network_of(int netns_fd);

std::string format_mac(const std::array<uint8_t, 6>& mac);

// Every frame that arrives at link `from` leaves through link `to`, untouched:
// an ingress qdisc on `from` and a u32 filter matching every frame whose
// action is a mirred egress redirect (the tc-filter model: a veth and the
// VM's TAP, each way). Idempotent: the qdisc is made afresh.
Result<void> redirect_ingress(uint32_t from, uint32_t to);

// The link's MTU (when given) and its state up.
Result<void> set_link_up(uint32_t index, std::optional<uint32_t> mtu);

}  // namespace husk::runtime::net
