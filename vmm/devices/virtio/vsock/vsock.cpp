#include "vmm/devices/virtio/vsock/vsock.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string_view>

#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/base/wire.h"
#include "vmm/devices/virtio/vsock/internal.h"
#include "vmm/io/event_loop.h"

namespace husk::virtio {

using namespace vsock;

namespace {

Result<UniqueFd> unix_socket() {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return Error::from_errno(errno, "socket");
    return UniqueFd(fd);
}

}  // namespace

Vsock::PendingClient::~PendingClient() {
    if (fd) ::shutdown(fd.get(), SHUT_RDWR);
}

Vsock::Vsock(VsockOptions options, UniqueFd listener)
    : m_options(std::move(options)), m_listener(std::move(listener)) {}

Result<std::unique_ptr<Vsock>> Vsock::create(const VsockOptions& o) {
    if (o.guest_cid < 3 || o.guest_cid > 0xffffffffu)
        return Error::from_string("vsock guest CID must be between 3 and 4294967295");
    if (o.socket_path.empty()) return Error::from_string("vsock needs a socket path");
    auto addr = TRY(sys::unix_address(o.socket_path).context("vsock"));
    // A stale socket from a dead VMM is replaced; anything else at the path is kept.
    struct stat st {};
    if (::lstat(o.socket_path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return Error::from_string("vsock socket path `" + o.socket_path + "` exists and is not a socket", EEXIST);
        auto probe = TRY(unix_socket());
        if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 || errno == EAGAIN)
            return Error::from_string("vsock socket `" + o.socket_path + "` is in use by another VMM", EADDRINUSE);
        ::unlink(o.socket_path.c_str());
    }
    auto fd = TRY(unix_socket());
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        return Error::from_errno(errno, "bind vsock socket `" + o.socket_path + "`");
    if (::listen(fd.get(), 64) < 0) return Error::from_errno(errno, "listen on `" + o.socket_path + "`");
    return std::unique_ptr<Vsock>(new Vsock(o, std::move(fd)));
}

bool Vsock::has_pending_output() const {
    for (const auto& [key, c] : m_conns)
        if (!c->out.empty()) return true;
    return false;
}

Vsock::~Vsock() {
    ::unlink(m_options.socket_path.c_str());
}

void Vsock::read_config(uint64_t offset, std::span<uint8_t> data) const {
    uint64_t cid = m_options.guest_cid;
    read_config_bytes(std::span(reinterpret_cast<const uint8_t*>(&cid), sizeof cid), offset, data);
}

Result<void> Vsock::activate(uint64_t, std::span<Queue> queues, DeviceContext ctx) {
    if (queues.size() < 2 || !queues[kRx].ready() || !queues[kTx].ready())
        return Error::from_string("virtio-vsock: rx/tx queues not ready");
    m_rx = &queues[kRx];
    m_tx = &queues[kTx];
    m_event = queues.size() > kEvent && queues[kEvent].ready() ? &queues[kEvent] : nullptr;
    m_ctx = std::move(ctx);
    m_active = true;
    arm_accept();
    return {};
}

void Vsock::reset() {
    // §5.10.6.6: a transport reset drops every connection.
    m_active = false;
    m_rx = m_tx = m_event = nullptr;
    m_reset_unacked = false;
    m_waiting_for_reset.clear();
    m_conns.clear();
    m_pending_clients.clear();
    m_control.clear();
    ++m_generation;
}

void Vsock::queue_notify(size_t index) {
    if (!m_active) return;
    if (index == kEvent && m_reset_unacked && m_event) {
        // Acknowledged once the guest gave the event buffer back (its avail index moved).
        auto avail = m_event->avail_index(*m_ctx.memory);
        if (avail.is_error()) return m_ctx.fail(avail.error());
        if (avail.value() == m_reset_avail) return;
        m_reset_unacked = false;
        auto waiting = std::move(m_waiting_for_reset);
        m_waiting_for_reset.clear();
        for (uint64_t id : waiting) on_client_line(id);
    }
    if (index == kTx) process_tx();
    process_rx();
}

Header Vsock::header_for(uint16_t op, uint32_t host_port, uint32_t guest_port) const {
    Header h{};
    h.src_cid = kHostCid;
    h.dst_cid = m_options.guest_cid;
    h.src_port = host_port;
    h.dst_port = guest_port;
    h.type = kTypeStream;
    h.op = op;
    h.buf_alloc = kBufAlloc;
    return h;
}

void Vsock::send_control(uint16_t op, uint32_t host_port, uint32_t guest_port, uint32_t flags) {
    Header h = header_for(op, host_port, guest_port);
    h.flags = flags;
    Connection* c = nullptr;
    if (auto it = m_conns.find({host_port, guest_port}); it != m_conns.end()) c = it->second.get();
    // One queued credit update per connection says all there is to say:
    // its fwd_cnt is filled in when it is delivered.
    if (op == kOpCreditUpdate && c && c->credit_update_queued) return;
    if (m_control.size() >= kMaxControlPackets) {
        // A guest that floods bad packets or credit requests while posting no
        // rx buffers: its answers are dropped, not queued without end.
        if (m_dropped_control++ == 0)
            log::warn("virtio-vsock: more than {} control packets wait for rx buffers; dropping (counted)",
                      kMaxControlPackets);
        return;
    }
    if (c) {
        h.fwd_cnt = c->fwd_cnt;
        c->last_fwd_sent = h.fwd_cnt;
        if (op == kOpCreditUpdate) c->credit_update_queued = true;
    }
    m_control.push_back(h);
}

void Vsock::send_credit(Connection& c, uint16_t op) {
    send_control(op, c.host_port, c.guest_port);
}

void Vsock::close(const Key& key, bool send_rst) {
    if (send_rst) send_control(kOpRst, key.first, key.second);
    m_conns.erase(key);
}

// --- guest -> host ----------------------------------------------------------------

void Vsock::process_tx() {
    const GuestMemory& mem = *m_ctx.memory;
    bool used = false;
    for (;;) {
        auto next = m_tx->pop(mem);
        if (next.is_error()) return m_ctx.fail(next.error());
        if (!next.value()) break;
        auto& chain = *next.value();
        // Gather header and payload from the readable buffers (guest-controlled lengths).
        Header hdr{};
        std::string payload;
        size_t got = 0;
        bool bad = false;
        for (const auto& b : chain.buffers()) {
            if (b.device_writable) break;
            auto src = mem.slice(b.addr, b.len).value();
            size_t pos = 0;
            if (got < sizeof hdr) {
                size_t take = std::min(sizeof hdr - got, src.size());
                std::memcpy(reinterpret_cast<uint8_t*>(&hdr) + got, src.data(), take);
                got += take;
                pos = take;
            }
            if (got == sizeof hdr && pos < src.size()) {
                if (payload.size() + (src.size() - pos) > kMaxPacketPayload) {
                    bad = true;
                    break;
                }
                payload.append(reinterpret_cast<const char*>(src.data()) + pos, src.size() - pos);
            }
        }
        if (auto r = m_tx->add_used(mem, chain.head(), 0); r.is_error()) return m_ctx.fail(r.error());
        used = true;
        if (bad || got < sizeof hdr || hdr.len > payload.size()) {
            // A malformed packet: reset its connection, keep the device.
            if (got == sizeof hdr) close(Key{uint32_t(hdr.dst_port), uint32_t(hdr.src_port)}, true);
            continue;
        }
        payload.resize(hdr.len);
        handle_packet(hdr, std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()));
    }
    if (used) {
        notify_if_wanted(*m_tx, m_ctx);
    }
}

void Vsock::handle_packet(const Header& hdr, std::span<const uint8_t> payload) {
    Key key{uint32_t(hdr.dst_port), uint32_t(hdr.src_port)};
    if (hdr.src_cid != m_options.guest_cid || hdr.dst_cid != kHostCid || hdr.type != kTypeStream) {
        if (hdr.op != kOpRst) send_control(kOpRst, hdr.dst_port, hdr.src_port);
        return;
    }
    auto it = m_conns.find(key);
    Connection* c = it == m_conns.end() ? nullptr : it->second.get();
    if (c) {
        c->peer_buf_alloc = hdr.buf_alloc;
        c->peer_fwd_cnt = hdr.fwd_cnt;
    }
    switch (hdr.op) {
        case kOpRequest: {
            if (c) return close(key, true);  // duplicate request
            if (m_conns.size() >= kMaxConnections) {
                send_control(kOpRst, hdr.dst_port, hdr.src_port);
                return;
            }
            auto sock = connect_host_side(hdr.dst_port);
            if (!sock) {
                send_control(kOpRst, hdr.dst_port, hdr.src_port);
                return;
            }
            auto conn = std::make_unique<Connection>();
            conn->id = m_next_id++;
            conn->host_port = hdr.dst_port;
            conn->guest_port = hdr.src_port;
            conn->sock = std::move(sock);
            conn->established = true;
            conn->peer_buf_alloc = hdr.buf_alloc;
            conn->peer_fwd_cnt = hdr.fwd_cnt;
            Connection& ref = *conn;
            m_conns[key] = std::move(conn);
            send_control(kOpResponse, key.first, key.second);
            arm_read(ref);
            return;
        }
        case kOpResponse: {
            if (!c || c->established || !c->host_initiated) return close(key, true);
            c->established = true;
            std::string ok = fmt::format("OK {}\n", c->host_port);
            [[maybe_unused]] ssize_t n = ::send(c->sock.get(), ok.data(), ok.size(), MSG_NOSIGNAL);
            arm_read(*c);
            return;
        }
        case kOpRw: {
            if (!c || !c->established) return close(key, true);
            // The guest must respect our credit: more than buf_alloc outstanding is a protocol violation.
            if (c->out.size() + payload.size() > kBufAlloc) return close(key, true);
            c->out.append(reinterpret_cast<const char*>(payload.data()), payload.size());
            flush_to_socket(*c);
            return;
        }
        case kOpCreditUpdate:
            if (c) arm_read(*c);  // more room in the guest: read on
            return;
        case kOpCreditRequest:
            if (c) send_credit(*c, kOpCreditUpdate);
            return;
        case kOpShutdown:
            if (!c) return;
            if ((hdr.flags & kShutdownRcv) && (hdr.flags & kShutdownSend)) {
                // Both directions done: what we hold still goes to the host, then
                // the reset (§5.10.6.5). A slow host reader only delays it.
                c->guest_sent_all = true;
                c->guest_closed = true;
                flush_to_socket(*c);
                return;
            }
            if (hdr.flags & kShutdownSend) {
                c->guest_sent_all = true;
                flush_to_socket(*c);
            }
            return;
        case kOpRst:
            if (c) close(key, false);
            return;
        default:
            return close(key, true);
    }
}

UniqueFd Vsock::connect_host_side(uint32_t port) {
    if (port == kDnsPort && m_options.dns_forward) {
        // The connection completes on its own (EINPROGRESS); what the guest
        // sends meanwhile waits for the socket to become writable, and a
        // refusal ends the connection at the first send.
        UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        const sockaddr_in& to = *m_options.dns_forward;
        if (!fd || (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) < 0 && errno != EINPROGRESS))
            return {};
        return fd;
    }
    auto sock = unix_socket();
    auto addr = sys::unix_address(fmt::format("{}_{}", m_options.socket_path, port));
    if (sock.is_error() || addr.is_error() ||
        ::connect(sock.value().get(), reinterpret_cast<sockaddr*>(&addr.value()), sizeof addr.value()) < 0)
        return {};
    return sock.release_value();
}

void Vsock::flush_to_socket(Connection& c) {
    while (!c.out.empty()) {
        ssize_t n = ::send(c.sock.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                arm_write(c);
                break;
            }
            return close({c.host_port, c.guest_port}, true);  // the host side went away
        }
        c.out.erase(0, size_t(n));
        c.fwd_cnt += uint32_t(n);
    }
    if (c.out.empty() && c.guest_sent_all) ::shutdown(c.sock.get(), SHUT_WR);
    if (c.out.empty() && c.guest_closed) return close({c.host_port, c.guest_port}, true);
    // Tell the guest about freed space before it runs dry.
    if (c.fwd_cnt - c.last_fwd_sent >= kBufAlloc / 4) send_credit(c, kOpCreditUpdate);
}

// --- host -> guest ----------------------------------------------------------------

void Vsock::process_rx() {
    const GuestMemory& mem = *m_ctx.memory;
    bool used = false;
    // Pops one rx chain and writes a packet into it. `fill` gets the payload
    // room the chain has after the header and returns the payload to send.
    auto deliver = [&](Header h, const std::function<std::string_view(size_t room)>& fill) -> bool {
        auto next = m_rx->pop(mem);
        if (next.is_error()) {
            m_ctx.fail(next.error());
            return false;
        }
        if (!next.value()) return false;
        auto& chain = *next.value();
        if (chain.writable_bytes() < sizeof(Header)) {
            m_ctx.fail(Error::from_string("virtio-vsock: rx buffer smaller than a packet header", EPROTO));
            return false;
        }
        std::string_view data =
            fill(size_t(std::min<uint64_t>(chain.writable_bytes() - sizeof(Header), kMaxPacketPayload)));
        h.len = uint32_t(data.size());
        // Scatter header then payload over the writable buffers.
        std::string bytes(reinterpret_cast<const char*>(&h), sizeof h);
        bytes.append(data);
        write_to_chain(mem, chain, std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
        if (auto r = m_rx->add_used(mem, chain.head(), uint32_t(bytes.size())); r.is_error()) {
            m_ctx.fail(r.error());
            return false;
        }
        used = true;
        return true;
    };
    auto no_payload = [](size_t) { return std::string_view(); };

    while (!m_control.empty()) {
        Header h = m_control.front();
        Connection* c = nullptr;
        if (h.op == kOpCreditUpdate)
            if (auto it = m_conns.find(Key{uint32_t(h.src_port), uint32_t(h.dst_port)}); it != m_conns.end())
                c = it->second.get();
        if (c) h.fwd_cnt = c->fwd_cnt;  // the newest count, not the one of when it was queued
        if (!deliver(h, no_payload)) goto done;
        if (c) {
            c->credit_update_queued = false;
            c->last_fwd_sent = h.fwd_cnt;
        }
        m_control.pop_front();
    }
    for (auto& [key, conn] : m_conns) {
        Connection& c = *conn;
        while (c.established && !c.in.empty() && c.peer_free() > 0) {
            Header h = header_for(kOpRw, c.host_port, c.guest_port);
            h.fwd_cnt = c.fwd_cnt;
            size_t sent = 0;
            bool ok = deliver(h, [&](size_t room) {
                sent = std::min<size_t>({c.in.size(), c.peer_free(), room});
                return std::string_view(c.in.data(), sent);
            });
            if (!ok) goto done;
            c.last_fwd_sent = c.fwd_cnt;
            c.in.erase(0, sent);
            c.tx_cnt += uint32_t(sent);
        }
        if (c.in.empty() && c.host_eof && !c.eof_reported) {
            Header h = header_for(kOpShutdown, c.host_port, c.guest_port);
            h.flags = kShutdownSend;
            h.fwd_cnt = c.fwd_cnt;
            if (!deliver(h, no_payload)) goto done;
            c.eof_reported = true;
        }
        arm_read(c);
    }
done:
    if (!used) return;
    notify_if_wanted(*m_rx, m_ctx);
}

}  // namespace husk::virtio
