// read_network against namespaces the test makes: a thread unshares a network
// namespace and `ip` (iproute2) fills it. Skipped where this host allows neither.
#include "runtime/netns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
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

TEST(NetworkNamespace, ANamespaceThatCannotBeJoinedIsAClearError) {
    UniqueFd not_a_namespace(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    auto r = read_network_of(not_a_namespace.get());
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("join the container's network namespace"), std::string::npos)
        << r.error().message();
}

}  // namespace
}  // namespace husk::runtime::net
