#include "agent/poller.h"

#include <cerrno>

namespace husk::agent {

Result<Poller> Poller::create() {
    int fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) return Error::from_errno(errno, "epoll_create1");
    return Poller(UniqueFd(fd));
}

Result<void> Poller::watch(int fd, uint32_t events, Handler handler) {
    m_handlers[fd] = Entry{std::make_shared<Handler>(std::move(handler)), false};
    return modify(fd, events);
}

Result<void> Poller::modify(int fd, uint32_t events) {
    auto it = m_handlers.find(fd);
    if (it == m_handlers.end()) return Error::from_string("poller: fd is not watched", EBADF);
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (events == 0) {
        if (it->second.armed) ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
        it->second.armed = false;
        return {};
    }
    if (::epoll_ctl(m_epoll.get(), it->second.armed ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0)
        return Error::from_errno(errno, "epoll_ctl");
    it->second.armed = true;
    return {};
}

void Poller::unwatch(int fd) {
    auto it = m_handlers.find(fd);
    if (it == m_handlers.end()) return;
    if (it->second.armed) ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
    m_handlers.erase(it);
}

Result<void> Poller::run_once(int timeout_ms) {
    epoll_event events[32];
    int n = ::epoll_wait(m_epoll.get(), events, 32, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return {};
        return Error::from_errno(errno, "epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
        auto it = m_handlers.find(events[i].data.fd);
        if (it == m_handlers.end() || !it->second.armed) continue;  // changed by an earlier handler in this batch
        auto handler = it->second.handler;
        (*handler)(events[i].events);
    }
    return {};
}

}  // namespace husk::agent
