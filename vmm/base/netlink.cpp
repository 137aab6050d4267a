#include "vmm/base/netlink.h"

#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_arp.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <vector>

namespace husk::netlink {

Message::Message(uint16_t type, uint16_t flags) {
    nlmsghdr header{};
    header.nlmsg_type = type;
    header.nlmsg_flags = uint16_t(flags | NLM_F_REQUEST);
    append(&header, sizeof header);
}

void Message::append(const void* data, size_t size) {
    m_bytes.append(static_cast<const char*>(data), size);
    m_bytes.resize(NLMSG_ALIGN(m_bytes.size()), '\0');
}

Message& Message::attribute(uint16_t type, const void* data, size_t size) {
    rtattr a{};
    a.rta_type = type;
    a.rta_len = uint16_t(RTA_LENGTH(size));
    m_bytes.append(reinterpret_cast<const char*>(&a), sizeof a);
    append(data, size);
    return *this;
}

Message& Message::string(uint16_t type, std::string_view value) {
    std::string text(value);
    return attribute(type, text.c_str(), text.size() + 1);
}

size_t Message::begin(uint16_t type) {
    size_t at = m_bytes.size();
    rtattr a{};
    a.rta_type = uint16_t(type | NLA_F_NESTED);
    m_bytes.append(reinterpret_cast<const char*>(&a), sizeof a);
    return at;
}

void Message::end(size_t at) {
    auto length = uint16_t(m_bytes.size() - at);
    std::memcpy(m_bytes.data() + at + offsetof(rtattr, rta_len), &length, sizeof length);
}

uint16_t Message::type() const {
    nlmsghdr header;
    std::memcpy(&header, m_bytes.data(), sizeof header);
    return header.nlmsg_type;
}

std::span<uint8_t> Message::finish() {
    auto length = uint32_t(m_bytes.size());
    std::memcpy(m_bytes.data() + offsetof(nlmsghdr, nlmsg_len), &length, sizeof length);
    return {reinterpret_cast<uint8_t*>(m_bytes.data()), m_bytes.size()};
}

Result<Socket> Socket::open() {
    UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd) return Error::from_errno(errno, "netlink socket");
    return Socket(std::move(fd));
}

namespace {

// Reads replies up to the acknowledgement, NLMSG_DONE, or `each` saying it has seen the last.
Result<void> read_replies(int fd, std::string_view what,
                          const std::function<Result<bool>(const nlmsghdr&, std::span<const uint8_t>)>& each) {
    std::vector<uint8_t> buffer(64 * 1024);
    for (;;) {
        ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error::from_errno(errno, "netlink: " + std::string(what));
        if (n == 0) return Error::from_string("netlink: " + std::string(what) + ": the reply ended early");
        size_t left = size_t(n);
        const uint8_t* at = buffer.data();
        while (left >= sizeof(nlmsghdr)) {
            nlmsghdr header;
            std::memcpy(&header, at, sizeof header);
            if (header.nlmsg_len < sizeof(nlmsghdr) || header.nlmsg_len > left)
                return Error::from_string("netlink: " + std::string(what) + ": a malformed reply");
            if (header.nlmsg_type == NLMSG_ERROR) {
                nlmsgerr error{};
                if (header.nlmsg_len >= NLMSG_LENGTH(sizeof error))
                    std::memcpy(&error, at + NLMSG_HDRLEN, sizeof error);
                if (error.error != 0) return Error::from_errno(-error.error, "netlink: " + std::string(what));
                return {};  // the acknowledgement
            }
            if (header.nlmsg_type == NLMSG_DONE) return {};
            if (TRY(each(header, std::span<const uint8_t>(at + NLMSG_HDRLEN, header.nlmsg_len - NLMSG_HDRLEN))))
                return {};
            size_t step = NLMSG_ALIGN(header.nlmsg_len);
            if (step >= left) break;
            at += step;
            left -= step;
        }
    }
}

}  // namespace

Result<void> Socket::send(Message& m, uint16_t flags, std::string_view what) {
    std::span<uint8_t> bytes = m.finish();
    nlmsghdr header;
    std::memcpy(&header, bytes.data(), sizeof header);
    header.nlmsg_flags |= flags;
    header.nlmsg_seq = m_sequence++;
    std::memcpy(bytes.data(), &header, sizeof header);
    if (::send(m_fd.get(), bytes.data(), bytes.size(), 0) < 0)
        return Error::from_errno(errno, "netlink: " + std::string(what));
    return {};
}

Result<void> Socket::request(Message& m, std::string_view what) {
    TRY(send(m, NLM_F_ACK, what));
    return read_replies(m_fd.get(), what, [](const nlmsghdr&, std::span<const uint8_t>) -> Result<bool> {
        return false;  // anything before the acknowledgement is not ours to read
    });
}

Result<void> Socket::dump(Message& m, std::string_view what,
                          const std::function<Result<void>(std::span<const uint8_t>)>& each) {
    const std::string doing = "dump the " + std::string(what);
    TRY(send(m, 0, doing));
    size_t entries = 0;
    return read_replies(m_fd.get(), doing, [&](const nlmsghdr&, std::span<const uint8_t> payload) -> Result<bool> {
        if (++entries > kMaxDumpEntries)
            return Error::from_string(
                "netlink: more than " + std::to_string(kMaxDumpEntries) + " " + std::string(what) + " in the namespace",
                E2BIG);
        TRY(each(payload));
        return false;
    });
}

void for_each_attribute(std::span<const uint8_t> bytes,
                        const std::function<void(uint16_t, std::span<const uint8_t>)>& visit) {
    while (bytes.size() >= sizeof(rtattr)) {
        rtattr a;
        std::memcpy(&a, bytes.data(), sizeof a);
        if (a.rta_len < sizeof(rtattr) || a.rta_len > bytes.size()) return;
        visit(uint16_t(a.rta_type & NLA_TYPE_MASK), bytes.subspan(RTA_LENGTH(0), a.rta_len - RTA_LENGTH(0)));
        size_t step = RTA_ALIGN(a.rta_len);
        if (step >= bytes.size()) return;
        bytes = bytes.subspan(step);
    }
}

namespace {

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

namespace {

Link link_of(const ifinfomsg& info, std::span<const uint8_t> attributes) {
    Link link;
    link.index = uint32_t(info.ifi_index);
    link.up = info.ifi_flags & IFF_UP;
    link.loopback = info.ifi_type == ARPHRD_LOOPBACK;
    link.ethernet = info.ifi_type == ARPHRD_ETHER;
    for_each_attribute(attributes, [&](uint16_t type, std::span<const uint8_t> v) {
        if (type == IFLA_IFNAME)
            link.name.assign(reinterpret_cast<const char*>(v.data()),
                             ::strnlen(reinterpret_cast<const char*>(v.data()), v.size()));
        else if (type == IFLA_ADDRESS && v.size() == 6)
            std::copy(v.begin(), v.end(), link.mac.begin());
        else if (type == IFLA_MTU)
            link.mtu = u32_of(v);
    });
    return link;
}

}  // namespace

Result<UniqueFd> open_link_events() {
    int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) return Error::from_errno(errno, "netlink socket");
    UniqueFd owned(fd);
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    local.nl_groups = RTMGRP_LINK;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) < 0)
        return Error::from_errno(errno, "netlink: subscribe to link events");
    return owned;
}

std::vector<Link> new_links_in(std::span<const uint8_t> bytes) {
    std::vector<Link> out;
    while (bytes.size() >= sizeof(nlmsghdr)) {
        nlmsghdr h;
        std::memcpy(&h, bytes.data(), sizeof h);
        if (h.nlmsg_len < sizeof h || h.nlmsg_len > bytes.size()) break;
        auto payload = bytes.subspan(sizeof h, h.nlmsg_len - sizeof h);
        if (h.nlmsg_type == RTM_NEWLINK && payload.size() >= sizeof(ifinfomsg)) {
            ifinfomsg info;
            std::memcpy(&info, payload.data(), sizeof info);
            out.push_back(link_of(info, attributes_after(payload, sizeof info)));
        }
        size_t next = (size_t(h.nlmsg_len) + 3) & ~size_t(3);
        if (next >= bytes.size()) break;
        bytes = bytes.subspan(next);
    }
    return out;
}

Result<Network> read_network() {
    Socket socket = TRY(Socket::open());
    Network network;

    ifinfomsg links{};
    links.ifi_family = AF_UNSPEC;
    TRY(socket.dump(RTM_GETLINK, links, "links", [&](const ifinfomsg& info, std::span<const uint8_t> attributes) {
        network.links.push_back(link_of(info, attributes));
    }));

    ifaddrmsg addresses{};
    addresses.ifa_family = AF_UNSPEC;
    TRY(socket.dump(RTM_GETADDR, addresses, "addresses",
                    [&](const ifaddrmsg& info, std::span<const uint8_t> attributes) {
                        Address address{info.ifa_family, {}, info.ifa_prefixlen};
                        std::string local, peer;
                        for_each_attribute(attributes, [&](uint16_t type, std::span<const uint8_t> v) {
                            if (type == IFA_LOCAL) local = address_text(info.ifa_family, v);
                            if (type == IFA_ADDRESS) peer = address_text(info.ifa_family, v);
                        });
                        // IFA_LOCAL is the interface's own address where it differs (point-to-point links).
                        address.address = local.empty() ? peer : local;
                        auto link = std::find_if(network.links.begin(), network.links.end(),
                                                 [&](const Link& l) { return l.index == info.ifa_index; });
                        if (link != network.links.end() && !address.address.empty())
                            link->addresses.push_back(std::move(address));
                    }));

    rtmsg routes{};
    routes.rtm_family = AF_UNSPEC;
    TRY(socket.dump(RTM_GETROUTE, routes, "routes", [&](const rtmsg& info, std::span<const uint8_t> attributes) {
        if (info.rtm_type != RTN_UNICAST) return;
        Route route;
        route.family = info.rtm_family;
        route.prefix = info.rtm_dst_len;
        route.kernel = info.rtm_protocol == RTPROT_KERNEL;
        uint32_t table = info.rtm_table;
        for_each_attribute(attributes, [&](uint16_t type, std::span<const uint8_t> v) {
            if (type == RTA_DST) route.destination = address_text(info.rtm_family, v);
            if (type == RTA_GATEWAY) route.gateway = address_text(info.rtm_family, v);
            if (type == RTA_OIF) route.link = u32_of(v);
            if (type == RTA_TABLE) table = u32_of(v);
        });
        if (table == RT_TABLE_MAIN) network.routes.push_back(std::move(route));
    }));
    return network;
}

Result<void> change_link(uint32_t index, const LinkChange& change) {
    Socket socket = TRY(Socket::open());
    ifinfomsg info{};
    info.ifi_family = AF_UNSPEC;
    info.ifi_index = int(index);
    if (change.up) {
        info.ifi_flags = *change.up ? IFF_UP : 0;
        info.ifi_change = IFF_UP;
    }
    Message m(RTM_NEWLINK, 0);
    m.header(info);
    if (change.mac) m.attribute(IFLA_ADDRESS, change.mac->data(), change.mac->size());
    if (change.mtu) m.u32(IFLA_MTU, *change.mtu);
    if (change.name) m.string(IFLA_IFNAME, *change.name);
    if (change.netns_fd) m.u32(IFLA_NET_NS_FD, uint32_t(*change.netns_fd));
    return socket.request(m, "change link " + std::to_string(index));
}

Result<void> add_address(uint32_t index, const Address& address) {
    uint8_t bytes[16];
    if (::inet_pton(address.family, address.address.c_str(), bytes) != 1)
        return Error::from_string("`" + address.address + "` is not an IP address", EINVAL);
    size_t size = address.family == AF_INET ? 4 : 16;
    if (address.prefix > size * 8)
        return Error::from_string("prefix /" + std::to_string(address.prefix) + " of `" + address.address + "`",
                                  EINVAL);
    Socket socket = TRY(Socket::open());
    ifaddrmsg info{};
    info.ifa_family = uint8_t(address.family);
    info.ifa_prefixlen = address.prefix;
    info.ifa_index = index;
    info.ifa_flags = address.family == AF_INET6 ? IFA_F_NODAD : 0;
    Message m(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
    m.header(info).attribute(IFA_LOCAL, bytes, size).attribute(IFA_ADDRESS, bytes, size);
    return socket.request(m, "add address " + address.address + "/" + std::to_string(address.prefix));
}

Result<void> add_route(const Route& route) {
    size_t size = route.family == AF_INET ? 4 : 16;
    uint8_t destination[16] = {}, gateway[16] = {};
    if (!route.destination.empty() && ::inet_pton(route.family, route.destination.c_str(), destination) != 1)
        return Error::from_string("route destination `" + route.destination + "` is not an IP address", EINVAL);
    if (!route.gateway.empty() && ::inet_pton(route.family, route.gateway.c_str(), gateway) != 1)
        return Error::from_string("route gateway `" + route.gateway + "` is not an IP address", EINVAL);
    if (route.prefix > size * 8) return Error::from_string("route prefix /" + std::to_string(route.prefix), EINVAL);
    Socket socket = TRY(Socket::open());
    rtmsg info{};
    info.rtm_family = uint8_t(route.family);
    info.rtm_dst_len = route.prefix;
    info.rtm_table = RT_TABLE_MAIN;
    info.rtm_protocol = RTPROT_BOOT;
    info.rtm_scope = route.gateway.empty() ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
    info.rtm_type = RTN_UNICAST;
    Message m(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
    m.header(info);
    if (!route.destination.empty()) m.attribute(RTA_DST, destination, size);
    if (!route.gateway.empty()) m.attribute(RTA_GATEWAY, gateway, size);
    m.u32(RTA_OIF, route.link);
    std::string what =
        "add route " +
        (route.destination.empty() ? std::string("default") : route.destination + "/" + std::to_string(route.prefix));
    if (!route.gateway.empty()) what += " via " + route.gateway;
    return socket.request(m, what);
}

}  // namespace husk::netlink
