// Poller: an epoll set with one handler per file descriptor — the agent's
// whole event loop (it is single-threaded: PID 1 forks container processes).
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>

#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk::agent {

class Poller {
public:
    using Handler = std::function<void(uint32_t events)>;

    static Result<Poller> create();

    // events 0 takes the fd out of the epoll set (so a hang-up is not reported
    // over and over while its owner is not ready for it); the handler stays.
    Result<void> watch(int fd, uint32_t events, Handler handler);
    Result<void> modify(int fd, uint32_t events);
    void unwatch(int fd);
    // Waits for events (timeout in ms, -1 forever) and runs their handlers.
    Result<void> run_once(int timeout_ms);

private:
    explicit Poller(UniqueFd epoll) : m_epoll(std::move(epoll)) {}
    UniqueFd m_epoll;
    // shared_ptr: a handler may unwatch its own fd (and so drop its entry) while it runs.
    struct Entry {
        std::shared_ptr<Handler> handler;
        bool armed = false;
    };
    std::map<int, Entry> m_handlers;
};

}  // namespace husk::agent
