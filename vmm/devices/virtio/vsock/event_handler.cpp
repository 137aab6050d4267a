// virtio-vsock's host side on the event loop: host clients connecting and
// saying CONNECT, and each connection's socket becoming readable or
// writable. Every callback takes the device lock; a callback from before a
// device reset finds its generation gone and does nothing.
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>

#include "vmm/base/log.h"
#include "vmm/devices/virtio/vsock/internal.h"
#include "vmm/io/event_loop.h"

namespace husk::virtio {

using namespace vsock;

// --- polling ------------------------------------------------------------------------

void Vsock::arm_accept() {
    // One poll on the listener at a time, however often the driver resets the
    // device: a poll per activation would pile up in the ring (the listener
    // stays quiet until a host client comes), host memory a guest could grow.
    if (m_accept_armed) return;
    m_accept_armed = true;
    int fd = m_listener.get();
    (void)m_ctx.loop->submit([fd](io_uring_sqe* sqe) { io_uring_prep_poll_add(sqe, fd, POLLIN); },
                             [this](int) {
                                 std::lock_guard guard(*m_ctx.lock);
                                 m_accept_armed = false;
                                 if (!m_active) return;  // armed again at the next activation
                                 on_accept();
                             });
}

void Vsock::on_accept() {
    for (;;) {
        int fd = ::accept4(m_listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        if (m_pending_clients.size() >= kMaxPendingClients) {
            refuse(fd, "ERROR too many connections waiting\n");
            ::close(fd);
            continue;
        }
        uint64_t id = m_next_id++;
        m_pending_clients.emplace(id, PendingClient(UniqueFd(fd)));
        uint64_t gen = m_generation;
        (void)m_ctx.loop->submit([fd](io_uring_sqe* sqe) { io_uring_prep_poll_add(sqe, fd, POLLIN); },
                                 [this, gen, id](int) {
                                     std::lock_guard guard(*m_ctx.lock);
                                     if (gen == m_generation && m_active) on_client_line(id);
                                 });
    }
    arm_accept();
}

void Vsock::on_client_line(uint64_t id) {
    auto it = m_pending_clients.find(id);
    if (it == m_pending_clients.end()) return;
    PendingClient& p = it->second;
    if (p.line.find('\n') == std::string::npos) {
        char buf[kMaxConnectLine];
        ssize_t n = ::recv(p.fd.get(), buf, sizeof buf - p.line.size(), MSG_DONTWAIT);
        if (n <= 0 && !(n < 0 && errno == EAGAIN)) {
            m_pending_clients.erase(it);
            return;
        }
        if (n > 0) p.line.append(buf, size_t(n));
    }
    size_t nl = p.line.find('\n');
    if (nl == std::string::npos) {
        if (p.line.size() >= kMaxConnectLine - 1) {
            m_pending_clients.erase(it);  // no line in sight: not a client of ours
            return;
        }
        int fd = p.fd.get();
        uint64_t gen = m_generation;
        (void)m_ctx.loop->submit([fd](io_uring_sqe* sqe) { io_uring_prep_poll_add(sqe, fd, POLLIN); },
                                 [this, gen, id](int) {
                                     std::lock_guard guard(*m_ctx.lock);
                                     if (gen == m_generation && m_active) on_client_line(id);
                                 });
        return;
    }
    unsigned port = 0;
    char extra = 0;
    if (std::sscanf(p.line.c_str(), "CONNECT %u%c", &port, &extra) != 2 || extra != '\n') {
        refuse(p.fd.get(), "ERROR expected CONNECT <port>\n");
        m_pending_clients.erase(it);
        return;
    }
    if (m_conns.size() >= kMaxConnections) {
        refuse(p.fd.get(), "ERROR too many connections\n");
        m_pending_clients.erase(it);
        return;
    }
    if (m_reset_unacked) {
        // The guest has not handled the transport reset yet; a connection made
        // now could be reset along with the old ones. It waits.
        m_waiting_for_reset.push_back(id);
        return;
    }
    auto conn = std::make_unique<Connection>();
    conn->id = m_next_id++;
    conn->host_port = m_next_host_port++;
    if (m_next_host_port == 0) m_next_host_port = kFirstHostPort;
    conn->guest_port = port;
    conn->sock = std::move(p.fd);
    conn->host_initiated = true;
    // Bytes the client sent after its line belong to the stream.
    conn->in = p.line.substr(nl + 1);
    m_pending_clients.erase(it);
    Key key{conn->host_port, conn->guest_port};
    m_conns[key] = std::move(conn);
    send_control(kOpRequest, key.first, key.second);
    process_rx();
}

void Vsock::arm_read(Connection& c) {
    if (c.read_armed || !c.established || c.host_eof || c.in.size() >= kMaxInbound) return;
    c.read_armed = true;
    Key key{c.host_port, c.guest_port};
    uint64_t id = c.id, gen = m_generation;
    int fd = c.sock.get();
    (void)m_ctx.loop->submit([fd](io_uring_sqe* sqe) { io_uring_prep_poll_add(sqe, fd, POLLIN | POLLRDHUP); },
                             [this, key, id, gen](int) {
                                 std::lock_guard guard(*m_ctx.lock);
                                 if (gen == m_generation && m_active) on_readable(key, id);
                             });
}

void Vsock::on_readable(const Key& key, uint64_t id) {
    auto it = m_conns.find(key);
    if (it == m_conns.end() || it->second->id != id) return;
    Connection& c = *it->second;
    c.read_armed = false;
    char buf[16384];
    while (c.in.size() < kMaxInbound) {
        size_t want = std::min(sizeof buf, kMaxInbound - c.in.size());
        ssize_t n = ::recv(c.sock.get(), buf, want, MSG_DONTWAIT);
        if (n > 0) {
            c.in.append(buf, size_t(n));
            continue;
        }
        if (n == 0) {
            c.host_eof = true;
        } else if (errno != EAGAIN && errno != EINTR) {
            close(key, true);
            process_rx();
            return;
        }
        break;
    }
    process_rx();
}

void Vsock::arm_write(Connection& c) {
    if (c.write_armed) return;
    c.write_armed = true;
    Key key{c.host_port, c.guest_port};
    uint64_t id = c.id, gen = m_generation;
    int fd = c.sock.get();
    (void)m_ctx.loop->submit([fd](io_uring_sqe* sqe) { io_uring_prep_poll_add(sqe, fd, POLLOUT); },
                             [this, key, id, gen](int) {
                                 std::lock_guard guard(*m_ctx.lock);
                                 if (gen == m_generation && m_active) on_writable(key, id);
                             });
}

void Vsock::on_writable(const Key& key, uint64_t id) {
    auto it = m_conns.find(key);
    if (it == m_conns.end() || it->second->id != id) return;
    it->second->write_armed = false;
    flush_to_socket(*it->second);
    process_rx();
}

}  // namespace husk::virtio
