// Interfaces that appear in the container's network namespace (husk-vmm's)
// once the container runs, such as `docker network connect` adds: the VM's
// NICs are made at create and wired by start, so such an interface is not
// wired, and each is named in a warning instead of passing unseen.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "vmm/base/netlink.h"
#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk {

class EventLoop;

class LinkWatch {
public:
    // Subscribes to the namespace's link events (before the jail and the
    // seccomp filters; the socket is only read on the loop after that). The
    // links there now (the engine's, the VM's TAPs) are known from the start.
    // `running` says whether the container's process has started; `added`
    // hears of each interface added since (on the loop thread).
    static Result<std::unique_ptr<LinkWatch>> open(std::function<bool()> running,
                                                   std::function<void(const std::string&)> added);
    // Reads events on `loop` from now on (plain reads: the loop allows no recv).
    void start(EventLoop& loop);

    // What the events in `bytes` (one read of the socket) are to the watch:
    // the new interfaces to warn about, each once; before the container
    // runs, interfaces are the runtime's to wire and are only noted.
    std::vector<std::string> on_events(std::span<const uint8_t> bytes);

private:
    LinkWatch(UniqueFd fd, std::function<bool()> running, std::function<void(const std::string&)> added)
        : m_fd(std::move(fd)), m_running(std::move(running)), m_added(std::move(added)) {}
    void arm(EventLoop& loop);

    UniqueFd m_fd;
    std::function<bool()> m_running;
    std::function<void(const std::string&)> m_added;
    std::set<uint32_t> m_known;  // interface indexes seen
};

}  // namespace husk
