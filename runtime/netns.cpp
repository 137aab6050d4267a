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

#include "vmm/base/log.h"
#include "vmm/base/netlink.h"
#include "vmm/base/unique_fd.h"

namespace husk::runtime::net {
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
    return netlink::change_link(index, {.mac = {}, .mtu = mtu, .name = {}, .up = true, .netns_fd = {}});
}

namespace {

// A network namespace is per thread: a thread of our own joins it and runs `body` there.
template <class T>
Result<T> in_namespace(int netns_fd, const std::function<Result<T>()>& body) {
    Result<T> out = Error::from_string("unset");
    std::thread worker([&] {
        if (::setns(netns_fd, CLONE_NEWNET) < 0)
            out = Error::from_errno(errno, "join the container's network namespace");
        else
            out = body();
    });
    worker.join();
    return out;
}

bool ipv6_link_local(const Address& a) {
    return a.family == AF_INET6 && a.address.rfind("fe80:", 0) == 0;
}

}  // namespace

Result<Network> read_network_of(int netns_fd) {
    return in_namespace<Network>(netns_fd, [] { return read_network(); });
}

std::string tap_name(size_t index) {
    return "husk" + std::to_string(index);
}

std::vector<const Link*> engine_interfaces(const Network& network) {
    auto is_tap = [](const std::string& name) {
        for (size_t i = 0; i < kMaxTaps; ++i)
            if (name == tap_name(i)) return true;
        return false;
    };
    std::vector<const Link*> out;
    for (const auto& link : network.links)
        if (link.ethernet && !is_tap(link.name)) out.push_back(&link);
    std::sort(out.begin(), out.end(), [](const Link* a, const Link* b) { return a->index < b->index; });
    return out;
}

Result<agent::NetworkSpec> wire_to_tap(int netns_fd) {
    return in_namespace<agent::NetworkSpec>(netns_fd, []() -> Result<agent::NetworkSpec> {
        Network network = TRY(read_network());
        if (!network.find(kTapName))
            return Error::from_string(std::string("the VM's TAP `") + kTapName + "` is not in the namespace");
        agent::NetworkSpec spec;
        const auto veths = engine_interfaces(network);
        for (size_t i = 0; i < veths.size(); ++i) {
            const Link* veth = veths[i];
            const Link* tap = network.find(tap_name(i));
            if (!tap) {
                log::warn("network interface `{}` is not wired to the VM: the VM has {} NIC(s)", veth->name, i);
                continue;
            }
            const std::string what = "wire `" + veth->name + "` to the VM";
            TRY(set_link_up(tap->index, veth->mtu).context(what));
            TRY(redirect_ingress(veth->index, tap->index).context(what));
            TRY(redirect_ingress(tap->index, veth->index).context(what));
            agent::InterfaceSpec nic;
            nic.name = veth->name;
            nic.mac = veth->mac;
            nic.mtu = veth->mtu;
            for (const auto& a : veth->addresses)
                if (!ipv6_link_local(a)) nic.addresses.push_back({uint8_t(a.family), a.address, a.prefix});
            spec.interfaces.push_back(std::move(nic));
            // The kernel's own routes (one per address) come back with the addresses in the guest.
            for (const auto& r : network.routes)
                if (r.link == veth->index && !r.kernel)
                    spec.routes.push_back(
                        {uint8_t(r.family), r.destination, r.prefix, r.gateway, uint32_t(spec.interfaces.size() - 1)});
        }
        return spec;
    });
}

bool names_nameserver(std::string_view text, std::string_view address) {
    auto blank = [](char c) { return c == ' ' || c == '\t'; };
    while (!text.empty()) {
        size_t end = text.find('\n');
        std::string_view line = text.substr(0, end);
        text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
        while (!line.empty() && blank(line.front())) line.remove_prefix(1);
        if (!line.starts_with("nameserver") || line.size() == 10 || !blank(line[10])) continue;
        line.remove_prefix(10);
        while (!line.empty() && blank(line.front())) line.remove_prefix(1);
        if (line.substr(0, line.find_first_of(" \t\r#;")) == address) return true;
    }
    return false;
}

}  // namespace husk::runtime::net
