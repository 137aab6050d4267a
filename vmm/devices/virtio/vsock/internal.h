// What vsock.cpp (the device: its queues and the driver's packets),
// event_handler.cpp (the host sockets' events on the event loop) and
// persist.cpp share, inside the device.
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>

#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"
#include "vmm/devices/virtio/vsock/vsock.h"

namespace husk::virtio::vsock {

inline constexpr size_t kRx = 0, kTx = 1, kEvent = 2;
inline constexpr uint32_t kEventTransportReset = 0;  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (§5.10.6.6)
inline constexpr size_t kMaxInbound = 64 * 1024;     // host bytes read ahead per connection
inline constexpr size_t kMaxConnectLine = 64;

// Tells a host client why it is turned away, if its socket has room; the
// caller then drops it.
inline void refuse(int fd, std::string_view why) {
    [[maybe_unused]] ssize_t w = ::send(fd, why.data(), why.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace husk::virtio::vsock

namespace husk::virtio {

struct Vsock::Connection {
    uint64_t id;
    uint32_t host_port, guest_port;
    UniqueFd sock;
    bool host_initiated = false;
    bool established = false;
    uint32_t peer_buf_alloc = 0, peer_fwd_cnt = 0;
    uint32_t tx_cnt = 0;         // bytes sent to the guest
    uint32_t fwd_cnt = 0;        // guest bytes written to the socket
    uint32_t last_fwd_sent = 0;  // fwd_cnt the guest last heard of
    std::string out;             // guest -> host, not yet written
    std::string in;              // host -> guest, read but not yet delivered
    bool read_armed = false, write_armed = false;
    bool host_eof = false;              // the socket reached EOF
    bool eof_reported = false;          // SHUTDOWN(SEND) delivered to the guest
    bool guest_sent_all = false;        // the guest will send no more: SHUT_WR once `out` drains
    bool guest_closed = false;          // the guest shut both ways: reset once `out` drains
    bool credit_update_queued = false;  // a CREDIT_UPDATE waits in m_control

    uint32_t peer_free() const { return peer_buf_alloc - (tx_cnt - peer_fwd_cnt); }
    // A poll io_uring still holds keeps the file open after close(): shutdown
    // is what tells the host peer the connection is gone.
    ~Connection() {
        if (sock) ::shutdown(sock.get(), SHUT_RDWR);
    }
};

}  // namespace husk::virtio
