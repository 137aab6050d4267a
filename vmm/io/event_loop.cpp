#include "vmm/io/event_loop.h"

#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "vmm/base/log.h"
#include "vmm/base/system.h"

namespace husk {

struct EventLoop::Op {
    enum class Kind { OneShot, EventFd, Stop } kind;
    Completion done;                // OneShot
    std::function<void()> handler;  // EventFd
    int fd = -1;
    uint64_t counter = 0;  // eventfd read target
};

Result<std::unique_ptr<EventLoop>> EventLoop::create(unsigned entries) {
    std::unique_ptr<EventLoop> loop(new EventLoop());
    io_uring_params params{};
    // Completions are reaped by the loop thread itself: no need for task-work
    // IPIs (5.19+). The ring starts disabled so its restrictions go in first.
    params.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_R_DISABLED;
    int r = io_uring_queue_init_params(entries, &loop->m_ring, &params);
    if (r == -EINVAL) {
        params = {};
        params.flags = IORING_SETUP_R_DISABLED;
        r = io_uring_queue_init_params(entries, &loop->m_ring, &params);
    }
    if (r < 0) return Error::from_errno(-r, "io_uring_queue_init (is io_uring disabled by kernel.io_uring_disabled?)");
    loop->m_ring_ready = true;
    // seccomp cannot see inside the ring, so the ring itself takes only the
    // operations the devices use: no openat, connect or anything else through it.
    std::vector<io_uring_restriction> allowed;
    for (int op : {IORING_OP_READ, IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC, IORING_OP_FALLOCATE,
                   IORING_OP_POLL_ADD, IORING_OP_NOP}) {
        io_uring_restriction res{};
        res.opcode = IORING_RESTRICTION_SQE_OP;
        res.sqe_op = uint8_t(op);
        allowed.push_back(res);
    }
    // Raw io_uring_register: Debian's shared liburing does not export the restriction helper.
    int fd = loop->m_ring.ring_fd;
    if (::syscall(__NR_io_uring_register, fd, IORING_REGISTER_RESTRICTIONS, allowed.data(), allowed.size()) < 0)
        return Error::from_errno(errno, "io_uring restrictions");
    if (::syscall(__NR_io_uring_register, fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) < 0)
        return Error::from_errno(errno, "io_uring enable");
    loop->m_stop = TRY(sys::eventfd(0, 0));
    auto* stop = new Op{Op::Kind::Stop, {}, {}, loop->m_stop.get(), 0};
    loop->m_live.insert(stop);
    TRY(loop->arm_read(stop));
    return loop;
}

EventLoop::~EventLoop() {
    if (m_ring_ready) io_uring_queue_exit(&m_ring);
    // The ring is gone: nothing completes the ops still in flight.
    for (Op* op : m_live) delete op;
}

bool EventLoop::on_loop_thread() const {
    return std::this_thread::get_id() == m_thread;
}

size_t EventLoop::in_flight() {
    std::lock_guard guard(m_submit_lock);
    return m_live.size();
}

Result<void> EventLoop::arm_read(Op* op) {
    std::lock_guard guard(m_submit_lock);
    io_uring_sqe* sqe = io_uring_get_sqe(&m_ring);
    if (!sqe) {
        io_uring_submit(&m_ring);
        sqe = io_uring_get_sqe(&m_ring);
        if (!sqe) return Error::from_errno(EBUSY, "io_uring submission queue full");
    }
    io_uring_prep_read(sqe, op->fd, &op->counter, sizeof op->counter, 0);
    io_uring_sqe_set_data(sqe, op);
    if (!on_loop_thread()) io_uring_submit(&m_ring);
    return {};
}

Result<void> EventLoop::watch_eventfd(int fd, std::function<void()> handler) {
    auto* op = new Op{Op::Kind::EventFd, {}, std::move(handler), fd, 0};
    {
        std::lock_guard guard(m_submit_lock);
        m_live.insert(op);
    }
    auto r = arm_read(op);
    if (r.is_error()) release(op);
    return r;
}

void EventLoop::release(Op* op) {
    {
        std::lock_guard guard(m_submit_lock);
        m_live.erase(op);
    }
    delete op;
}

Result<void> EventLoop::submit(const std::function<void(io_uring_sqe*)>& prepare, Completion done) {
    auto* op = new Op{Op::Kind::OneShot, std::move(done), {}, -1, 0};
    std::lock_guard guard(m_submit_lock);
    io_uring_sqe* sqe = io_uring_get_sqe(&m_ring);
    if (!sqe) {
        io_uring_submit(&m_ring);
        sqe = io_uring_get_sqe(&m_ring);
    }
    if (!sqe) {
        delete op;
        return Error::from_errno(EBUSY, "io_uring submission queue full");
    }
    prepare(sqe);
    io_uring_sqe_set_data(sqe, op);
    m_live.insert(op);
    if (!on_loop_thread()) io_uring_submit(&m_ring);
    return {};
}

void EventLoop::complete(Op* op, int result) {
    switch (op->kind) {
        case Op::Kind::Stop:
            m_stopping = true;
            release(op);
            return;
        case Op::Kind::OneShot:
            op->done(result);
            release(op);
            return;
        case Op::Kind::EventFd:
            if (result == -ECANCELED || result == -EBADF) {
                release(op);  // the fd went away: stop watching it
                return;
            }
            op->handler();
            if (auto r = arm_read(op); r.is_error()) {
                log::error("event loop: re-arm eventfd: {}", r.error().message());
                release(op);
            }
            return;
    }
}

void EventLoop::run() {
    m_thread = std::this_thread::get_id();
    while (!m_stopping) {
        {
            std::lock_guard guard(m_submit_lock);
            io_uring_submit(&m_ring);
        }
        io_uring_cqe* cqe = nullptr;
        int r = io_uring_wait_cqe(&m_ring, &cqe);
        if (r == -EINTR) continue;
        if (r < 0) {
            log::error("event loop: io_uring_wait_cqe: {}", strerror(-r));
            return;
        }
        // Drain everything that completed in this turn.
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&m_ring, head, cqe) {
            auto* op = static_cast<Op*>(io_uring_cqe_get_data(cqe));
            int res = cqe->res;
            ++seen;
            io_uring_cq_advance(&m_ring, 1);
            if (op) complete(op, res);
            if (m_stopping) break;
        }
        (void)seen;
        // Deferred work may defer again (into the next turn).
        auto deferred = std::move(m_deferred);
        m_deferred.clear();
        for (auto& fn : deferred) fn();
    }
}

void EventLoop::stop() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(m_stop.get(), &one, sizeof one);
}

}  // namespace husk
