#include "agent/network.h"

#include <algorithm>
#include <vector>

#include "vmm/base/netlink.h"

namespace husk::agent {

Result<void> configure_network(const NetworkSpec& spec) {
    netlink::Network guest = TRY(netlink::read_network());
    std::vector<const netlink::Link*> nics;
    for (const auto& link : guest.links) {
        if (link.loopback)
            TRY(netlink::change_link(link.index, {.mac = {}, .mtu = {}, .name = {}, .up = true})
                    .context("bring the loopback up"));
        else
            nics.push_back(&link);
    }
    std::sort(nics.begin(), nics.end(), [](const auto* a, const auto* b) { return a->index < b->index; });
    if (spec.interfaces.size() > nics.size())
        return Error::from_string("the container has " + std::to_string(spec.interfaces.size()) +
                                      " network interfaces and the VM " + std::to_string(nics.size()) + " NICs",
                                  ENODEV);
    for (size_t i = 0; i < spec.interfaces.size(); ++i) {
        const InterfaceSpec& want = spec.interfaces[i];
        const netlink::Link& nic = *nics[i];
        const std::string what = "configure " + want.name;
        // Name and MAC change while the link is down.
        TRY(netlink::change_link(nic.index, {.mac = {}, .mtu = {}, .name = {}, .up = false}).context(what));
        netlink::LinkChange change{.mac = want.mac, .mtu = want.mtu, .name = {}, .up = {}};
        if (want.name != nic.name) change.name = want.name;
        TRY(netlink::change_link(nic.index, change).context(what));
        TRY(netlink::change_link(nic.index, {.mac = {}, .mtu = {}, .name = {}, .up = true}).context(what));
        for (const auto& a : want.addresses)
            TRY(netlink::add_address(nic.index, {a.family, a.address, a.prefix}).context(what));
    }
    for (const auto& r : spec.routes) {
        netlink::Route route{r.family, r.destination, r.prefix, r.gateway, nics[r.interface]->index, false};
        TRY(netlink::add_route(route).context("configure " + spec.interfaces[r.interface].name));
    }
    return {};
}

}  // namespace husk::agent
