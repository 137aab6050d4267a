#include "vmm/container/link_watch.h"

#include <cstring>

#include "vmm/base/log.h"
#include "vmm/io/event_loop.h"

namespace husk {

namespace {

constexpr size_t kBufferSize = 16 << 10;  // a read holds whole messages; a longer burst comes in several

}  // namespace

Result<std::unique_ptr<LinkWatch>> LinkWatch::open(std::function<bool()> running,
                                                   std::function<void(const std::string&)> added) {
    UniqueFd fd = TRY(netlink::open_link_events().context("watch the container's network interfaces"));
    std::unique_ptr<LinkWatch> watch(new LinkWatch(std::move(fd), std::move(running), std::move(added)));
    // What is there now is the runtime's and the VM's own TAPs (made before): noted, never warned about.
    if (auto network = netlink::read_network())
        for (const auto& link : network.value().links) watch->m_known.insert(link.index);
    return watch;
}

std::vector<std::string> LinkWatch::on_events(std::span<const uint8_t> bytes) {
    std::vector<std::string> added;
    const bool running = m_running();
    for (const auto& link : netlink::new_links_in(bytes)) {
        if (!m_known.insert(link.index).second || !running) continue;
        if (link.ethernet) added.push_back(link.name);
    }
    return added;
}

void LinkWatch::start(EventLoop& loop) {
    arm(loop);
}

void LinkWatch::arm(EventLoop& loop) {
    auto buffer = std::make_shared<std::vector<uint8_t>>(kBufferSize);
    int fd = m_fd.get();
    auto r =
        loop.submit([fd, buffer](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, buffer->data(), kBufferSize, 0); },
                    [this, &loop, buffer](int res) {
                        if (res > 0)
                            for (const auto& name : on_events(std::span(buffer->data(), size_t(res)))) m_added(name);
                        // A full socket buffer (ENOBUFS) lost events; the watch goes on. Other errors end it.
                        if (res > 0 || res == -ENOBUFS || res == -EINTR)
                            arm(loop);
                        else
                            log::warn("the watch of the container's network interfaces stopped: {}",
                                      res ? std::strerror(-res) : "end of file");
                    });
    if (!r) log::debug("link watch: {}", r.error().message());
}

}  // namespace husk
