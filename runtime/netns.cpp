#include "runtime/netns.h"

#include <arpa/inet.h>
#include <linux/if_arp.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <span>
#include <thread>

#include "vmm/base/unique_fd.h"

namespace husk::runtime::net {
namespace {

// Every attribute of a message after its fixed header, as (type, bytes).
void for_each_attribute(const uint8_t* data, size_t length,
                        const std::function<void(uint16_t, std::span<const uint8_t>)>& visit) {
    while (length >= sizeof(rtattr)) {
        rtattr attribute;
        std::memcpy(&attribute, data, sizeof attribute);
        if (attribute.rta_len < sizeof(rtattr) || attribute.rta_len > length) return;
        visit(attribute.rta_type & NLA_TYPE_MASK,
              std::span<const uint8_t>(data + RTA_LENGTH(0), attribute.rta_len - RTA_LENGTH(0)));
        size_t step = RTA_ALIGN(attribute.rta_len);
        if (step >= length) return;
        data += step;
        length -= step;
    }
}

std::string address_text(int family, std::span<const uint8_t> bytes) {
    char text[INET6_ADDRSTRLEN] = {};
    if ((family == AF_INET && bytes.size() == 4) || (family == AF_INET6 && bytes.size() == 16))
        ::inet_ntop(family, bytes.data(), text, sizeof text);
    return text;
}

uint32_t u32_of(std::span<const uint8_t> bytes) {
    uint32_t v = 0;
    if (bytes.size() >= sizeof v) std::memcpy(&v, bytes.data(), sizeof v);
    return v;
}

// One dump request: each message of the reply, with its payload after the nlmsghdr.
Result<void> dump(int fd, uint16_t type, const void* request, size_t request_size, const char* what,
                  const std::function<Result<void>(std::span<const uint8_t>)>& each) {
    struct {
        nlmsghdr header;
        uint8_t body[64];
    } message{};
    message.header.nlmsg_len = uint32_t(NLMSG_LENGTH(request_size));
    message.header.nlmsg_type = type;
    message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.header.nlmsg_seq = type;
    std::memcpy(message.body, request, request_size);
    if (::send(fd, &message, message.header.nlmsg_len, 0) < 0)
        return Error::from_errno(errno, std::string("netlink: ask for the ") + what);
    std::vector<uint8_t> buffer(64 * 1024);
    size_t entries = 0;
    for (;;) {
        ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error::from_errno(errno, std::string("netlink: read the ") + what);
        if (n == 0) return Error::from_string(std::string("netlink: the dump of the ") + what + " ended early");
        size_t left = size_t(n);
        const uint8_t* at = buffer.data();
        while (left >= sizeof(nlmsghdr)) {
            nlmsghdr header;
            std::memcpy(&header, at, sizeof header);
            if (header.nlmsg_len < sizeof(nlmsghdr) || header.nlmsg_len > left)
                return Error::from_string(std::string("netlink: a malformed message in the ") + what);
            if (header.nlmsg_type == NLMSG_DONE) return {};
            if (header.nlmsg_type == NLMSG_ERROR) {
                nlmsgerr error{};
                if (header.nlmsg_len >= NLMSG_LENGTH(sizeof error))
                    std::memcpy(&error, at + NLMSG_HDRLEN, sizeof error);
                return Error::from_errno(-error.error, std::string("netlink: dump the ") + what);
            }
            if (++entries > kMaxEntries)
                return Error::from_string(
                    std::string("netlink: more than ") + std::to_string(kMaxEntries) + " " + what + " in the namespace",
                    E2BIG);
            TRY(each(std::span<const uint8_t>(at + NLMSG_HDRLEN, header.nlmsg_len - NLMSG_HDRLEN)));
            size_t step = NLMSG_ALIGN(header.nlmsg_len);
            if (step >= left) break;
            at += step;
            left -= step;
        }
    }
}

}  // namespace

const Link* Network::find(const std::string& name) const {
    auto it = std::find_if(links.begin(), links.end(), [&](const Link& l) { return l.name == name; });
    return it == links.end() ? nullptr : &*it;
}

std::string format_mac(const std::array<uint8_t, 6>& mac) {
    char text[18];
    std::snprintf(text, sizeof text, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    return text;
}

Result<Network> read_network() {
    UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd) return Error::from_errno(errno, "netlink socket");
    Network network;

    ifinfomsg links{};
    links.ifi_family = AF_UNSPEC;
    TRY(dump(fd.get(), RTM_GETLINK, &links, sizeof links, "links", [&](std::span<const uint8_t> p) -> Result<void> {
        if (p.size() < sizeof(ifinfomsg)) return Error::from_string("netlink: a short link message");
        ifinfomsg info;
        std::memcpy(&info, p.data(), sizeof info);
        Link link;
        link.index = uint32_t(info.ifi_index);
        link.up = info.ifi_flags & IFF_UP;
        link.loopback = info.ifi_type == ARPHRD_LOOPBACK;
        for_each_attribute(p.data() + NLMSG_ALIGN(sizeof info), p.size() - std::min(p.size(), NLMSG_ALIGN(sizeof info)),
                           [&](uint16_t type, std::span<const uint8_t> v) {
                               if (type == IFLA_IFNAME)
                                   link.name.assign(reinterpret_cast<const char*>(v.data()),
                                                    ::strnlen(reinterpret_cast<const char*>(v.data()), v.size()));
                               else if (type == IFLA_ADDRESS && v.size() == 6)
                                   std::copy(v.begin(), v.end(), link.mac.begin());
                               else if (type == IFLA_MTU)
                                   link.mtu = u32_of(v);
                           });
        network.links.push_back(std::move(link));
        return {};
    }));

    ifaddrmsg addresses{};
    addresses.ifa_family = AF_UNSPEC;
    TRY(dump(fd.get(), RTM_GETADDR, &addresses, sizeof addresses, "addresses",
             [&](std::span<const uint8_t> p) -> Result<void> {
                 if (p.size() < sizeof(ifaddrmsg)) return Error::from_string("netlink: a short address message");
                 ifaddrmsg info;
                 std::memcpy(&info, p.data(), sizeof info);
                 Address address{info.ifa_family, {}, info.ifa_prefixlen};
                 std::string local, peer;
                 for_each_attribute(p.data() + NLMSG_ALIGN(sizeof info),
                                    p.size() - std::min(p.size(), NLMSG_ALIGN(sizeof info)),
                                    [&](uint16_t type, std::span<const uint8_t> v) {
                                        if (type == IFA_LOCAL) local = address_text(info.ifa_family, v);
                                        if (type == IFA_ADDRESS) peer = address_text(info.ifa_family, v);
                                    });
                 // IFA_LOCAL is the interface's own address where it differs (point-to-point links).
                 address.address = local.empty() ? peer : local;
                 auto link = std::find_if(network.links.begin(), network.links.end(),
                                          [&](const Link& l) { return l.index == info.ifa_index; });
                 if (link != network.links.end() && !address.address.empty())
                     link->addresses.push_back(std::move(address));
                 return {};
             }));

    rtmsg routes{};
    routes.rtm_family = AF_UNSPEC;
    TRY(dump(fd.get(), RTM_GETROUTE, &routes, sizeof routes, "routes", [&](std::span<const uint8_t> p) -> Result<void> {
        if (p.size() < sizeof(rtmsg)) return Error::from_string("netlink: a short route message");
        rtmsg info;
        std::memcpy(&info, p.data(), sizeof info);
        if (info.rtm_type != RTN_UNICAST) return {};
        Route route;
        route.family = info.rtm_family;
        route.prefix = info.rtm_dst_len;
        route.kernel = info.rtm_protocol == RTPROT_KERNEL;
        uint32_t table = info.rtm_table;
        for_each_attribute(p.data() + NLMSG_ALIGN(sizeof info), p.size() - std::min(p.size(), NLMSG_ALIGN(sizeof info)),
                           [&](uint16_t type, std::span<const uint8_t> v) {
                               if (type == RTA_DST) route.destination = address_text(info.rtm_family, v);
                               if (type == RTA_GATEWAY) route.gateway = address_text(info.rtm_family, v);
                               if (type == RTA_OIF) route.link = u32_of(v);
                               if (type == RTA_TABLE) table = u32_of(v);
                           });
        if (table == RT_TABLE_MAIN) network.routes.push_back(std::move(route));
        return {};
    }));
    return network;
}

Result<Network> read_network_of(int netns_fd) {
    // A network namespace is per thread: a thread of our own joins it and reads.
    Result<Network> out = Error::from_string("unset");
    std::thread reader([&] {
        if (::setns(netns_fd, CLONE_NEWNET) < 0)
            out = Error::from_errno(errno, "join the container's network namespace");
        else
            out = read_network();
    });
    reader.join();
    return out;
}

}  // namespace husk::runtime::net
