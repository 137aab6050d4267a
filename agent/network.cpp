#include "agent/network.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <thread>
#include <vector>

#include "vmm/base/log.h"
#include "vmm/base/netlink.h"
#include "vmm/base/system.h"
#include "vmm/base/unique_fd.h"

namespace husk::agent {

namespace {

// The guest's NICs (its Ethernet links: not the tunnels such as sit0 the
// kernel adds), by index, after the loopback is brought up.
Result<std::vector<netlink::Link>> nics_with_loopback_up() {
    netlink::Network guest = TRY(netlink::read_network());
    std::vector<netlink::Link> nics;
    for (const auto& link : guest.links) {
        if (link.loopback)
            TRY(netlink::change_link(link.index, {.mac = {}, .mtu = {}, .name = {}, .up = true, .netns_fd = {}})
                    .context("bring the loopback up"));
        else if (link.ethernet)
            nics.push_back(link);
    }
    std::sort(nics.begin(), nics.end(), [](const auto& a, const auto& b) { return a.index < b.index; });
    return nics;
}

// A network namespace of the agent's own, made by a thread that leaves the
// agent's as it is; the fd keeps it alive (and the NICs in it with it).
Result<int> aside_namespace() {
    static UniqueFd aside;
    if (aside) return aside.get();
    int error = 0;
    std::thread([&] {
        if (::unshare(CLONE_NEWNET) < 0) {
            error = errno;
            return;
        }
        int fd = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (fd < 0) error = errno;
        aside = UniqueFd(fd);
    }).join();
    if (error) return Error::from_errno(error, "make a network namespace for the unused NICs");
    return aside.get();
}

// The virtio-mmio devices the guest's driver left unbound, probed again: a
// placeholder at boot (device ID 0) that the host has plugged since (husk-vmm's
// plug_net) is bound now, and a NIC's interface appears as the bind returns.
// One still a placeholder stays unbound (the bind fails with ENODEV).
void probe_unbound_virtio_devices() {
    constexpr const char* kDevices = "/sys/bus/platform/devices";
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(kDevices, ec)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind("virtio-mmio.", 0) != 0) continue;
        if (::access((entry.path() / "driver").c_str(), F_OK) == 0) continue;
        if (auto r = sys::write_text("/sys/bus/platform/drivers/virtio-mmio/bind", name); !r)
            log::debug("probe {}: {}", name, r.error().message());
    }
}

}  // namespace

Result<void> set_aside_unused_nics() {
    auto nics = TRY(nics_with_loopback_up());
    if (nics.empty()) return {};
    int aside = TRY(aside_namespace());
    for (const auto& nic : nics)
        TRY(netlink::change_link(nic.index, {.mac = {}, .mtu = {}, .name = {}, .up = {}, .netns_fd = aside})
                .context("set the unused NIC " + nic.name + " aside"));
    return {};
}

Result<void> configure_network(const NetworkSpec& spec) {
    auto nics = TRY(nics_with_loopback_up());
    if (spec.interfaces.size() > nics.size()) {
        probe_unbound_virtio_devices();
        nics = TRY(nics_with_loopback_up());
    }
    if (spec.interfaces.size() > nics.size())
        return Error::from_string("the container has " + std::to_string(spec.interfaces.size()) +
                                      " network interfaces and the VM " + std::to_string(nics.size()) + " NICs",
                                  ENODEV);
    for (size_t i = 0; i < spec.interfaces.size(); ++i) {
        const InterfaceSpec& want = spec.interfaces[i];
        const netlink::Link& nic = nics[i];
        const std::string what = "configure " + want.name;
        // Name and MAC change while the link is down.
        TRY(netlink::change_link(nic.index, {.mac = {}, .mtu = {}, .name = {}, .up = false, .netns_fd = {}})
                .context(what));
        netlink::LinkChange change{.mac = want.mac, .mtu = want.mtu, .name = {}, .up = {}, .netns_fd = {}};
        if (want.name != nic.name) change.name = want.name;
        TRY(netlink::change_link(nic.index, change).context(what));
        TRY(netlink::change_link(nic.index, {.mac = {}, .mtu = {}, .name = {}, .up = true, .netns_fd = {}})
                .context(what));
        for (const auto& a : want.addresses)
            TRY(netlink::add_address(nic.index, {a.family, a.address, a.prefix}).context(what));
    }
    for (const auto& r : spec.routes) {
        netlink::Route route{r.family, r.destination, r.prefix, r.gateway, nics[r.interface].index, false};
        TRY(netlink::add_route(route).context("configure " + spec.interfaces[r.interface].name));
    }
    return {};
}

}  // namespace husk::agent
