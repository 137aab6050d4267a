// configure_network against a namespace the test makes: a veth stands in for
// the guest's NIC. Skipped where this host allows no namespace or veth.
#include "agent/network.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>

#include "vmm/base/netlink.h"

namespace husk::agent {
namespace {

NetworkSpec docker_bridge() {
    NetworkSpec s;
    InterfaceSpec eth0;
    eth0.name = "eth0";
    eth0.mac = {0x02, 0x42, 0xac, 0x11, 0x00, 0x02};
    eth0.mtu = 1400;
    eth0.addresses = {{AF_INET, "172.17.0.2", 16}, {AF_INET6, "fd00::2", 64}};
    s.interfaces = {eth0};
    s.routes = {{AF_INET, "", 0, "172.17.0.1", 0}, {AF_INET, "10.9.0.0", 24, "172.17.0.9", 0}};
    s.dns_relay = true;
    return s;
}

// Runs `body` in a thread of a new network namespace holding a veth pair (v0,
// v1) and returns what the namespace then holds; `skipped` says why not when
// this host cannot, `failure` what `body` reported.
netlink::Network with_a_veth_pair(const std::function<std::string()>& body, std::string& skipped,
                                  std::string& failure) {
    netlink::Network after;
    std::thread t([&] {
        if (::unshare(CLONE_NEWNET) < 0) return void(skipped = std::string("unshare: ") + std::strerror(errno));
        if (std::system("ip link add v0 type veth peer name v1 >/dev/null 2>&1") != 0)
            return void(skipped = "this host cannot make a veth pair");
        failure = body();
        if (!failure.empty()) return;
        auto read = netlink::read_network();
        if (!read) return void(failure = read.error().message());
        after = read.value();
    });
    t.join();
    return after;
}

TEST(Network, TheSpecRoundTripsAndNonsenseIsRefused) {
    NetworkSpec s = docker_bridge();
    auto back = decode_network_spec(encode(s));
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back.value(), s);
    std::string full = encode(s);
    for (size_t n = 0; n < full.size(); ++n) EXPECT_FALSE(decode_network_spec(full.substr(0, n))) << n;
    NetworkSpec stray = s;
    stray.routes[0].interface = 1;
    EXPECT_FALSE(decode_network_spec(encode(stray)));
    NetworkSpec odd = s;
    odd.interfaces[0].addresses[0].family = 17;
    EXPECT_FALSE(decode_network_spec(encode(odd)));
    NetworkSpec slash = s;
    slash.interfaces[0].name = "../x";
    EXPECT_FALSE(decode_network_spec(encode(slash)));
}

TEST(Network, TheGuestNicTakesTheInterfaceItsAddressesAndRoutes) {
    std::string skipped, failure;
    netlink::Network after = with_a_veth_pair(
        []() -> std::string {
            if (std::system("ip link set v1 up") != 0) return "v1 up";
            if (auto r = configure_network(docker_bridge()); !r) return r.error().message();
            // Twice: a second configuration replaces, it does not fail.
            if (auto r = configure_network(docker_bridge()); !r) return "again: " + r.error().message();
            return "";
        },
        skipped, failure);
    if (!skipped.empty()) GTEST_SKIP() << skipped;
    ASSERT_EQ(failure, "");
    const netlink::Link* lo = after.find("lo");
    ASSERT_NE(lo, nullptr);
    EXPECT_TRUE(lo->up);
    // The guest's first NIC (v0 here, the lower index) is eth0 now; v1 is the second.
    const netlink::Link* eth0 = after.find("eth0");
    ASSERT_NE(eth0, nullptr);
    EXPECT_EQ(netlink::format_mac(eth0->mac), "02:42:ac:11:00:02");
    EXPECT_EQ(eth0->mtu, 1400u);
    EXPECT_TRUE(eth0->up);
    for (const netlink::Address& a : {netlink::Address{AF_INET, "172.17.0.2", 16}, {AF_INET6, "fd00::2", 64}})
        EXPECT_NE(std::find(eth0->addresses.begin(), eth0->addresses.end(), a), eth0->addresses.end()) << a.address;
    bool default_route = false, via = false;
    for (const auto& r : after.routes) {
        if (r.family == AF_INET && r.destination.empty() && r.gateway == "172.17.0.1" && r.link == eth0->index)
            default_route = true;
        if (r.destination == "10.9.0.0" && r.prefix == 24 && r.gateway == "172.17.0.9") via = true;
    }
    EXPECT_TRUE(default_route);
    EXPECT_TRUE(via);
}

TEST(Network, MoreInterfacesThanNicsIsAClearError) {
    std::string skipped, message;
    std::thread t([&] {
        if (::unshare(CLONE_NEWNET) < 0) return void(skipped = std::string("unshare: ") + std::strerror(errno));
        auto r = configure_network(docker_bridge());
        if (!r) message = r.error().message();
    });
    t.join();
    if (!skipped.empty()) GTEST_SKIP() << skipped;
    EXPECT_NE(message.find("the container has 1 network interfaces and the VM 0 NICs"), std::string::npos) << message;
}

TEST(Network, UnusedNicsAreSetAsideAndTheLoopbackIsUp) {
    std::string skipped, failure;
    netlink::Network after = with_a_veth_pair(
        []() -> std::string {
            if (auto r = set_aside_unused_nics(); !r) return r.error().message();
            // Nothing left to set aside the second time.
            if (auto r = set_aside_unused_nics(); !r) return "again: " + r.error().message();
            return "";
        },
        skipped, failure);
    if (!skipped.empty()) GTEST_SKIP() << skipped;
    ASSERT_EQ(failure, "");
    ASSERT_EQ(after.links.size(), 1u);
    EXPECT_TRUE(after.links[0].loopback);
    EXPECT_TRUE(after.links[0].up);
}

}  // namespace
}  // namespace husk::agent
