#include "runtime/netns.h"

#include <arpa/inet.h>
#include <linux/if_arp.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/tc_act/tc_mirred.h>
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

#include "vmm/base/netlink.h"
#include "vmm/base/unique_fd.h"

namespace husk::runtime::net {
namespace {

using netlink::attributes_after;
using netlink::for_each_attribute;

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

Result<Network> read_network() {
    netlink::Socket socket = TRY(netlink::Socket::open());
    Network network;

    ifinfomsg links{};
    links.ifi_family = AF_UNSPEC;
    TRY(socket.dump(RTM_GETLINK, &links, sizeof links, "links", [&](std::span<const uint8_t> p) -> Result<void> {
        if (p.size() < sizeof(ifinfomsg)) return Error::from_string("netlink: a short link message");
        ifinfomsg info;
        std::memcpy(&info, p.data(), sizeof info);
        Link link;
        link.index = uint32_t(info.ifi_index);
        link.up = info.ifi_flags & IFF_UP;
        link.loopback = info.ifi_type == ARPHRD_LOOPBACK;
        for_each_attribute(attributes_after(p, sizeof info), [&](uint16_t type, std::span<const uint8_t> v) {
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
    TRY(socket.dump(
        RTM_GETADDR, &addresses, sizeof addresses, "addresses", [&](std::span<const uint8_t> p) -> Result<void> {
            if (p.size() < sizeof(ifaddrmsg)) return Error::from_string("netlink: a short address message");
            ifaddrmsg info;
            std::memcpy(&info, p.data(), sizeof info);
            Address address{info.ifa_family, {}, info.ifa_prefixlen};
            std::string local, peer;
            for_each_attribute(attributes_after(p, sizeof info), [&](uint16_t type, std::span<const uint8_t> v) {
                if (type == IFA_LOCAL) local = address_text(info.ifa_family, v);
                if (type == IFA_ADDRESS) peer = address_text(info.ifa_family, v);
            });
            // IFA_LOCAL is the interface's own address where it differs (point-to-point links).
            address.address = local.empty() ? peer : local;
            auto link = std::find_if(network.links.begin(), network.links.end(),
                                     [&](const Link& l) { return l.index == info.ifa_index; });
            if (link != network.links.end() && !address.address.empty()) link->addresses.push_back(std::move(address));
            return {};
        }));

    rtmsg routes{};
    routes.rtm_family = AF_UNSPEC;
    TRY(socket.dump(RTM_GETROUTE, &routes, sizeof routes, "routes", [&](std::span<const uint8_t> p) -> Result<void> {
        if (p.size() < sizeof(rtmsg)) return Error::from_string("netlink: a short route message");
        rtmsg info;
        std::memcpy(&info, p.data(), sizeof info);
        if (info.rtm_type != RTN_UNICAST) return {};
        Route route;
        route.family = info.rtm_family;
        route.prefix = info.rtm_dst_len;
        route.kernel = info.rtm_protocol == RTPROT_KERNEL;
        uint32_t table = info.rtm_table;
        for_each_attribute(attributes_after(p, sizeof info), [&](uint16_t type, std::span<const uint8_t> v) {
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

Result<void> redirect_ingress(uint32_t from, uint32_t to) {
    netlink::Socket socket = TRY(netlink::Socket::open());
    tcmsg qdisc{};
    qdisc.tcm_family = AF_UNSPEC;
    qdisc.tcm_ifindex = int(from);
    qdisc.tcm_handle = TC_H_MAKE(TC_H_INGRESS, 0);
    qdisc.tcm_parent = TC_H_INGRESS;
    // A fresh qdisc each time, so a second call leaves one filter, not two.
    netlink::Message remove(RTM_DELQDISC, 0);
    remove.header(qdisc);
    if (auto r = socket.request(remove, "remove link " + std::to_string(from) + "'s ingress qdisc");
        !r && r.error().code() != EINVAL && r.error().code() != ENOENT)
        return r;
    netlink::Message add_qdisc(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL);
    add_qdisc.header(qdisc).string(TCA_KIND, "ingress");
    TRY(socket.request(add_qdisc, "add an ingress qdisc to link " + std::to_string(from)));

    // u32 matching every frame (one key, mask 0): the classifier every kernel with tc has.
    tcmsg filter{};
    filter.tcm_family = AF_UNSPEC;
    filter.tcm_ifindex = int(from);
    filter.tcm_parent = TC_H_MAKE(TC_H_INGRESS, 0);
    constexpr uint32_t kPriority = 1;
    filter.tcm_info = TC_H_MAKE(kPriority << 16, htons(ETH_P_ALL));
    // tc_u32_sel ends in its keys: the selector's bytes, then the one key's (all zero).
    tc_u32_sel selector{};
    selector.flags = TC_U32_TERMINAL;
    selector.nkeys = 1;
    uint8_t match[sizeof(tc_u32_sel) + sizeof(tc_u32_key)] = {};
    std::memcpy(match, &selector, sizeof selector);
    tc_mirred mirred{};
    mirred.action = TC_ACT_STOLEN;
    mirred.eaction = TCA_EGRESS_REDIR;
    mirred.ifindex = to;
    netlink::Message add_filter(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL);
    add_filter.header(filter).string(TCA_KIND, "u32");
    size_t options = add_filter.begin(TCA_OPTIONS);
    add_filter.attribute(TCA_U32_SEL, match, sizeof match);
    size_t actions = add_filter.begin(TCA_U32_ACT);
    size_t first = add_filter.begin(1);  // actions are numbered from 1, in order
    add_filter.string(TCA_ACT_KIND, "mirred");
    size_t action_options = add_filter.begin(TCA_ACT_OPTIONS);
    add_filter.attribute(TCA_MIRRED_PARMS, &mirred, sizeof mirred);
    add_filter.end(action_options);
    add_filter.end(first);
    add_filter.end(actions);
    add_filter.end(options);
    TRY(socket.request(add_filter,
                       "redirect link " + std::to_string(from) + "'s traffic to link " + std::to_string(to)));
    return {};
}

Result<void> set_link_up(uint32_t index, std::optional<uint32_t> mtu) {
    netlink::Socket socket = TRY(netlink::Socket::open());
    ifinfomsg info{};
    info.ifi_family = AF_UNSPEC;
    info.ifi_index = int(index);
    info.ifi_flags = IFF_UP;
    info.ifi_change = IFF_UP;
    netlink::Message m(RTM_NEWLINK, 0);
    m.header(info);
    if (mtu) m.u32(IFLA_MTU, *mtu);
    TRY(socket.request(m, "set link " + std::to_string(index) + " up"));
    return {};
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
