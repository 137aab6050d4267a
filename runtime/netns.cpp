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
    return netlink::change_link(index, {.mac = {}, .mtu = mtu, .name = {}, .up = true});
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
