// read_network against namespaces the test makes: a thread unshares a network
// namespace and `ip` (iproute2) fills it. Skipped where this host allows neither.
#include "runtime/netns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <string>
#include <thread>

#include "vmm/base/unique_fd.h"

namespace husk::runtime::net {
namespace {

bool have_ip() {
    return ::access("/usr/sbin/ip", X_OK) == 0 || ::access("/sbin/ip", X_OK) == 0;
}

// Runs `body` in a thread of its own network namespace; the thread's ns fd is
// kept open for the caller. False (with the reason) when this host allows none.
std::string in_new_namespace(const std::function<void()>& body, UniqueFd* keep = nullptr) {
    std::string skipped;
    std::thread t([&] {
        if (::unshare(CLONE_NEWNET) < 0) {
            skipped = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
            return;
        }
        if (keep) *keep = UniqueFd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
        body();
    });
    t.join();
    return skipped;
}

// `ip` commands run in the calling thread's namespace (a child forked from it inherits it).
bool ip(const std::string& args) {
    return std::system(("ip " + args + " >/dev/null 2>&1").c_str()) == 0;
}

TEST(NetworkNamespace, AResolvConfNamesANameserverOnlyOnANameserverLine) {
    EXPECT_TRUE(names_nameserver("nameserver 127.0.0.11\noptions ndots:0\n", kEmbeddedDns));
    EXPECT_TRUE(names_nameserver("search x\n  nameserver\t127.0.0.11 # Docker\n", kEmbeddedDns));
    EXPECT_TRUE(names_nameserver("nameserver 1.1.1.1\nnameserver 127.0.0.11", kEmbeddedDns));
    EXPECT_FALSE(names_nameserver("nameserver 127.0.0.111\n", kEmbeddedDns));
    EXPECT_FALSE(names_nameserver("# nameserver 127.0.0.11\n", kEmbeddedDns));
    EXPECT_FALSE(names_nameserver("nameservers 127.0.0.11\n", kEmbeddedDns));
    EXPECT_FALSE(names_nameserver("search 127.0.0.11\nnameserver 8.8.8.8\n", kEmbeddedDns));
    EXPECT_FALSE(names_nameserver("", kEmbeddedDns));
}

TEST(NetworkNamespace, LinksAddressesAndRoutesAreReadAsIpShowsThem) {
    if (!have_ip()) GTEST_SKIP() << "no ip(8)";
    Result<Network> read = Error::from_string("not read");
    bool made = false;
    UniqueFd ns;
    std::string skipped = in_new_namespace(
        [&] {
            made = ip("link add v0 type veth peer name v1") && ip("link set v0 address 02:42:ac:11:00:02 mtu 1400") &&
                   ip("addr add 172.17.0.2/16 dev v0") && ip("-6 addr add fd00::2/64 dev v0 nodad") &&
                   ip("link set v0 up") && ip("link set v1 up") && ip("link set lo up") &&
                   ip("route add default via 172.17.0.1 dev v0") && ip("route add 10.9.0.0/24 via 172.17.0.9");
            if (made) read = read_network();
        },
        &ns);
    if (!skipped.empty()) GTEST_SKIP() << skipped;
    if (!made) GTEST_SKIP() << "this host cannot make a veth pair";
    ASSERT_TRUE(read) << read.error().message();
    const Network& n = read.value();
    const Link* lo = n.find("lo");
    ASSERT_NE(lo, nullptr);
    EXPECT_TRUE(lo->loopback);
    const Link* v0 = n.find("v0");
    ASSERT_NE(v0, nullptr);
    EXPECT_FALSE(v0->loopback);
    EXPECT_EQ(format_mac(v0->mac), "02:42:ac:11:00:02");
    EXPECT_EQ(v0->mtu, 1400u);
    EXPECT_TRUE(v0->up);
    EXPECT_NE(std::find(v0->addresses.begin(), v0->addresses.end(), Address{AF_INET, "172.17.0.2", 16}),
              v0->addresses.end());
    EXPECT_NE(std::find(v0->addresses.begin(), v0->addresses.end(), Address{AF_INET6, "fd00::2", 64}),
              v0->addresses.end());
    bool default_route = false, via = false, kernel_route = false;
    for (const auto& r : n.routes) {
        if (r.family != AF_INET) continue;
        EXPECT_EQ(r.link, v0->index) << r.destination;
        if (r.destination.empty() && r.gateway == "172.17.0.1") default_route = true;
        if (r.destination == "10.9.0.0" && r.prefix == 24 && r.gateway == "172.17.0.9") via = true;
        if (r.destination == "172.17.0.0" && r.prefix == 16 && r.kernel) kernel_route = true;
    }
    EXPECT_TRUE(default_route);
    EXPECT_TRUE(via);
    EXPECT_TRUE(kernel_route);
    // The same namespace, read from another thread that joins it.
    ASSERT_TRUE(ns);
    auto again = read_network_of(ns.get());
    ASSERT_TRUE(again) << again.error().message();
    ASSERT_NE(again.value().find("v0"), nullptr);
    EXPECT_EQ(again.value().find("v0")->addresses.size(), v0->addresses.size());
}

// Docker's --network none: only a loopback, down, and no routes.
TEST(NetworkNamespace, AnEmptyNamespaceHasOnlyItsLoopback) {
    Result<Network> read = Error::from_string("not read");
    std::string skipped = in_new_namespace([&] { read = read_network(); });
    if (!skipped.empty()) GTEST_SKIP() << skipped;
    ASSERT_TRUE(read) << read.error().message();
    ASSERT_EQ(read.value().links.size(), 1u);
    EXPECT_TRUE(read.value().links[0].loopback);
    EXPECT_FALSE(read.value().links[0].up);
    EXPECT_TRUE(read.value().routes.empty());
}

// A frame of an ethertype of its own (IEEE local experimental) carrying `payload`.
std::string test_frame(const std::array<uint8_t, 6>& to, const std::string& payload) {
    std::string frame(reinterpret_cast<const char*>(to.data()), 6);
    frame += std::string("\x02\x00\x00\x00\x00\x01", 6);
    frame += std::string("\x88\xb5", 2);
    return frame + payload;
}

// Reads frames from `fd` for up to 2 s until one carries `payload`.
bool receives(int fd, const std::string& payload) {
    char buffer[2048];
    for (int i = 0; i < 200; ++i) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 10) <= 0) continue;
        ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n > 14 && std::string(buffer, size_t(n)).find(payload) != std::string::npos) return true;
    }
    return false;
}

// The tc-filter model, frames and all: a veth pair (v0, the engine's side
// beyond; v1, the container's) and a TAP; v1's ingress leaves through the
// TAP and the TAP's through v1.
TEST(NetworkNamespace, RedirectedFramesCrossBetweenAVethAndATapBothWays) {
    if (!have_ip()) GTEST_SKIP() << "no ip(8)";
    std::string why_not, failure;
    std::string skipped = in_new_namespace([&] {
        if (!ip("link add v0 type veth peer name v1")) {
            why_not = "this host cannot make a veth pair";
            return;
        }
        if (std::system("tc qdisc add dev v0 ingress >/dev/null 2>&1 && tc qdisc del dev v0 ingress") != 0) {
            why_not = "this host has no tc ingress qdisc";
            return;
        }
        UniqueFd tap(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
        ifreq ifr{};
        std::strcpy(ifr.ifr_name, "t0");
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
        if (!tap || ::ioctl(tap.get(), TUNSETIFF, &ifr) < 0) {
            why_not = std::string("no TAP: ") + std::strerror(errno);
            return;
        }
        auto network = read_network();
        if (!network) return void(failure = network.error().message());
        const Link *v0 = network.value().find("v0"), *v1 = network.value().find("v1"), *t0 = network.value().find("t0");
        if (!v0 || !v1 || !t0) return void(failure = "the links are not all there");
        for (const Link* l : {v0, v1, t0})
            if (auto r = set_link_up(l->index, 1400); !r) return void(failure = r.error().message());
        for (auto [from, to] : {std::pair{v1, t0}, std::pair{t0, v1}})
            if (auto r = redirect_ingress(from->index, to->index); !r) return void(failure = r.error().message());
        // Again: the redirect is made afresh, not doubled.
        if (auto r = redirect_ingress(v1->index, t0->index); !r) return void(failure = r.error().message());
        UniqueFd packet(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(0x88b5)));
        sockaddr_ll at{};
        at.sll_family = AF_PACKET;
        at.sll_protocol = htons(0x88b5);
        at.sll_ifindex = int(v0->index);
        if (!packet || ::bind(packet.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) < 0)
            return void(failure = std::string("packet socket: ") + std::strerror(errno));
        std::string out = test_frame(v1->mac, "to-the-guest");
        if (::send(packet.get(), out.data(), out.size(), 0) < 0)
            return void(failure = std::string("send on v0: ") + std::strerror(errno));
        if (!receives(tap.get(), "to-the-guest")) return void(failure = "v1's frame did not leave through the TAP");
        std::string in = test_frame(v0->mac, "from-the-guest");
        if (::write(tap.get(), in.data(), in.size()) < 0)
            return void(failure = std::string("write to the TAP: ") + std::strerror(errno));
        if (!receives(packet.get(), "from-the-guest")) failure = "the TAP's frame did not leave through v1";
        auto mtu = read_network();
        if (mtu && mtu.value().find("t0")->mtu != 1400) failure = "the TAP's MTU is not 1400";
    });
    if (!skipped.empty()) GTEST_SKIP() << skipped;
    if (!why_not.empty()) GTEST_SKIP() << why_not;
    EXPECT_EQ(failure, "");
}

// Docker's bridge as the namespace holds it once its setkey hook ran: eth0 (a
// veth) with its address and default route; the VM's TAP beside it.
TEST(NetworkNamespace, TheEnginesInterfaceIsWiredToTheTapAndHandedToTheGuest) {
    if (!have_ip()) GTEST_SKIP() << "no ip(8)";
    std::string why_not;
    UniqueFd ns, tap;
    std::array<uint8_t, 6> eth0_mac{};
    std::string skipped = in_new_namespace(
        [&] {
            if (!ip("link add v0 type veth peer name eth0") || !ip("link set eth0 address 02:42:ac:11:00:02") ||
                !ip("addr add 172.17.0.2/16 dev eth0") || !ip("link set eth0 up") || !ip("link set v0 up") ||
                !ip("route add default via 172.17.0.1"))
                return void(why_not = "this host cannot make Docker's bridge interface");
            if (std::system("tc qdisc add dev v0 ingress >/dev/null 2>&1 && tc qdisc del dev v0 ingress") != 0)
                return void(why_not = "this host has no tc ingress qdisc");
            tap = UniqueFd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
            ifreq ifr{};
            std::strcpy(ifr.ifr_name, kTapName);
            ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
            if (!tap || ::ioctl(tap.get(), TUNSETIFF, &ifr) < 0) return void(why_not = "no TAP");
            auto n = read_network();
            if (n && n.value().find("eth0")) eth0_mac = n.value().find("eth0")->mac;
        },
        &ns);
    if (!skipped.empty()) GTEST_SKIP() << skipped;
    if (!why_not.empty()) GTEST_SKIP() << why_not;
    ASSERT_TRUE(ns);
    // The peer, eth0, is made first and has the lower index: it is the one taken (v0 is logged, left alone).
    auto spec = wire_to_tap(ns.get());
    ASSERT_TRUE(spec) << spec.error().message();
    ASSERT_EQ(spec.value().interfaces.size(), 1u);
    const agent::InterfaceSpec& nic = spec.value().interfaces[0];
    EXPECT_EQ(nic.name, "eth0");
    EXPECT_EQ(nic.mac, eth0_mac);
    EXPECT_EQ(nic.mtu, 1500u);
    ASSERT_EQ(nic.addresses.size(), 1u) << "link-local IPv6 addresses stay behind";
    EXPECT_EQ(nic.addresses[0], (agent::IpAddress{AF_INET, "172.17.0.2", 16}));
    ASSERT_EQ(spec.value().routes.size(), 1u);
    EXPECT_EQ(spec.value().routes[0], (agent::RouteSpec{AF_INET, "", 0, "172.17.0.1", 0}));
}

// A container on two networks (docker network connect before start): eth0
// and eth1, each wired to a TAP of its own (husk0, husk1), each with its
// routes; a third interface, with no TAP, is left alone.
TEST(NetworkNamespace, EachOfTheEnginesInterfacesIsWiredToATapOfItsOwn) {
    if (!have_ip()) GTEST_SKIP() << "no ip(8)";
    std::string why_not;
    UniqueFd ns;
    std::vector<UniqueFd> taps;
    // The veths' host ends go to a namespace of their own (the engine's side), held by a thread until the end.
    std::promise<pid_t> host_side;
    std::promise<void> done;
    std::thread host([&] {
        if (::unshare(CLONE_NEWNET) < 0) return host_side.set_value(-1);
        host_side.set_value(pid_t(::syscall(SYS_gettid)));
        done.get_future().wait();
    });
    pid_t host_tid = host_side.get_future().get();
    std::string skipped = in_new_namespace(
        [&] {
            const std::string there = " netns " + std::to_string(host_tid);
            if (host_tid < 0 || !ip("link add eth0 type veth peer name v0" + there) ||
                !ip("link add eth1 type veth peer name v1" + there) ||
                !ip("link add eth2 type veth peer name v2" + there) || !ip("addr add 172.17.0.2/16 dev eth0") ||
                !ip("addr add 10.1.0.5/24 dev eth1") || !ip("link set eth0 up") || !ip("link set eth1 up") ||
                !ip("route add default via 172.17.0.1") || !ip("route add 10.2.0.0/16 via 10.1.0.1"))
                return void(why_not = "this host cannot make veth pairs across namespaces");
            if (std::system("tc qdisc add dev eth2 ingress >/dev/null 2>&1 && tc qdisc del dev eth2 ingress") != 0)
                return void(why_not = "this host has no tc ingress qdisc");
            for (size_t i = 0; i < 2; ++i) {
                UniqueFd tap(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
                ifreq ifr{};
                std::strcpy(ifr.ifr_name, tap_name(i).c_str());
                ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
                if (!tap || ::ioctl(tap.get(), TUNSETIFF, &ifr) < 0) return void(why_not = "no TAP");
                taps.push_back(std::move(tap));
            }
        },
        &ns);
    auto spec = skipped.empty() && why_not.empty() ? wire_to_tap(ns.get()) : Error::from_string("not made");
    done.set_value();  // the host ends go, and their veths with them
    host.join();
    if (!skipped.empty()) GTEST_SKIP() << skipped;
    if (!why_not.empty()) GTEST_SKIP() << why_not;
    ASSERT_TRUE(spec) << spec.error().message();
    ASSERT_EQ(spec.value().interfaces.size(), 2u);
    EXPECT_EQ(spec.value().interfaces[0].name, "eth0");
    EXPECT_EQ(spec.value().interfaces[1].name, "eth1");
    ASSERT_EQ(spec.value().interfaces[1].addresses.size(), 1u);
    EXPECT_EQ(spec.value().interfaces[1].addresses[0], (agent::IpAddress{AF_INET, "10.1.0.5", 24}));
    ASSERT_EQ(spec.value().routes.size(), 2u);
    EXPECT_EQ(spec.value().routes[0], (agent::RouteSpec{AF_INET, "", 0, "172.17.0.1", 0}));
    EXPECT_EQ(spec.value().routes[1], (agent::RouteSpec{AF_INET, "10.2.0.0", 16, "10.1.0.1", 1}));
}

TEST(NetworkNamespace, ANamespaceThatCannotBeJoinedIsAClearError) {
    UniqueFd not_a_namespace(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    auto r = read_network_of(not_a_namespace.get());
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("join the container's network namespace"), std::string::npos)
        << r.error().message();
}

TEST(NetworkNamespace, TheEngineInterfaceIsTheFirstEthernetLinkButTheTap) {
    Network network;
    auto link = [](uint32_t index, std::string name, bool loopback, bool ethernet) {
        Link l;
        l.index = index;
        l.name = std::move(name);
        l.loopback = loopback;
        l.ethernet = ethernet;
        return l;
    };
    // A host with the ipip and sit modules loaded puts tunl0 and sit0 in every namespace.
    network.links = {link(1, "lo", true, false),       link(2, "tunl0", false, false), link(3, "sit0", false, false),
                     link(4, kTapName, false, true),   link(7, "eth1", false, true),   link(5, "eth0", false, true),
                     link(6, tap_name(1), false, true)};
    auto chosen = engine_interfaces(network);
    ASSERT_EQ(chosen.size(), 2u);
    EXPECT_EQ(chosen[0]->name, "eth0");  // by index
    EXPECT_EQ(chosen[1]->name, "eth1");
    network.links.erase(network.links.begin() + 4, network.links.begin() + 6);
    EXPECT_TRUE(engine_interfaces(network).empty());
}

}  // namespace
}  // namespace husk::runtime::net
