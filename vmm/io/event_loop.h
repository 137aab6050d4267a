// EventLoop: the VM's one I/O thread, on io_uring (liburing). Queue
// notifications arrive as ioeventfds (an 8-byte read on the ring), device I/O
// (disk reads and writes, socket and tap I/O) is submitted and completed on
// the same ring, so a vCPU never waits for I/O and many requests cost one
// io_uring_enter.
#pragma once

#include <liburing.h>

#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk {

class EventLoop {
public:
    static Result<std::unique_ptr<EventLoop>> create(unsigned entries = 256);
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    using Completion = std::function<void(int result)>;

    // Runs `handler` on the loop thread each time the eventfd is signalled.
    Result<void> watch_eventfd(int fd, std::function<void()> handler);
    // Queues one operation: `prepare` fills the SQE, `done` gets the CQE's result
    // on the loop thread. Safe from any thread; submitted at the next loop turn
    // (or at once from other threads).
    Result<void> submit(const std::function<void(io_uring_sqe*)>& prepare, Completion done);

    // Runs `fn` on the loop thread once the completions of the current turn are
    // all handled (e.g. one interrupt for a batch of requests). Loop thread only.
    void defer(std::function<void()> fn) { m_deferred.push_back(std::move(fn)); }

    // Processes completions until stop(). Call from one thread.
    void run();
    // Thread-safe; run() returns after the current turn.
    void stop();

    bool on_loop_thread() const;
    // Operations submitted and not yet completed (watched eventfds included).
    size_t in_flight();

private:
    struct Op;
    EventLoop() = default;
    Result<void> arm_read(Op* op);
    void complete(Op* op, int result);
    void release(Op* op);

    io_uring m_ring{};
    bool m_ring_ready = false;
    std::mutex m_submit_lock;  // guards the submission queue
    UniqueFd m_stop;
    bool m_stopping = false;
    std::thread::id m_thread;
    std::vector<std::function<void()>> m_deferred;
    std::unordered_set<Op*> m_live;  // ops the kernel may still complete; freed with the loop (m_submit_lock)
};

}  // namespace husk
