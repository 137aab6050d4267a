// virtio-vsock (virtio 1.2 §5.10) with its host side on Unix sockets:
//
// - host -> guest: a client connects to the VM's socket and writes
//   "CONNECT <port>\n"; once the guest accepts, it reads "OK <host port>\n"
//   and the socket carries the stream.
// - guest -> host: a guest connection to CID 2 port P is connected to the
//   Unix socket "<socket>_<P>"; nobody listening there resets it.
//
// Flow control is the spec's credit scheme: each side advertises its buffer
// (buf_alloc) and how much it consumed (fwd_cnt); nothing is sent beyond the
// peer's free space, so guest memory and VMM buffers stay bounded.
//
// What a guest (or a host client) can make this device hold is capped:
//   connections        kMaxConnections (64), either side's; a guest REQUEST
//                      past it is reset, a host CONNECT answered "ERROR".
//   per connection     kBufAlloc (256 KiB) of guest bytes for the host and
//                      64 KiB read ahead from the host: at most 20 MiB in all.
//   host clients       kMaxPendingClients (16) still writing their CONNECT
//                      line; more are answered "ERROR" and closed.
//   control packets    kMaxControlPackets (512) header-only packets waiting
//                      for rx buffers (44 bytes each); past it a packet is
//                      dropped and counted (dropped_control_packets()). A
//                      connection has at most one credit update queued.
//   io_uring polls     at most one read and one write poll per connection,
//                      one per pending client, one on the listener.
// A connection closed for any reason (RST, device reset, snapshot reset, the
// device's end) is shut down before its fd is closed, so its host peer sees
// end of file even while an io_uring poll still holds the file.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vmm/base/unique_fd.h"
#include "vmm/base/wire.h"
#include "vmm/devices/virtio/device.h"
#include "vmm/devices/virtio/persist.h"
#include "vmm/devices/virtio/vsock/packet.h"

namespace husk::virtio {

struct VsockOptions {
    uint64_t guest_cid = 3;
    std::string socket_path;  // the VM's listening socket; "<path>_<port>" for guest-initiated connections
    // Guest connections to port 53 (kDnsPort) go to this TCP address instead of
    // "<path>_53": the container's DNS server, as husk-vmm's network namespace
    // (the container's) reaches it. The guest agent relays its queries there.
    std::optional<sockaddr_in> dns_forward;
};

// What a snapshot keeps of vsock (persist.h); connections do not survive a
// restore (restored() resets the transport in the guest).
struct VsockState {
    static constexpr uint32_t kVersion = 1;
    static constexpr const char* kName = "virtio-vsock state";
    uint32_t next_host_port = 0;  // host-side ports are not reused across a restore
    void encode(wire::Writer& w) const;
    static VsockState decode(wire::Reader& r);
};

class Vsock final : public VirtioDevice {
public:
    static constexpr uint16_t kQueueSize = 256;
    static constexpr uint32_t kBufAlloc = 256 * 1024;  // per-connection buffer we advertise
    static constexpr uint32_t kMaxPacketPayload = 64 * 1024;
    static constexpr uint32_t kFirstHostPort = 1u << 30;  // ports for host-initiated connections
    static constexpr uint32_t kDnsPort = 53;              // VsockOptions::dns_forward
    static constexpr size_t kMaxConnections = 64;
    static constexpr size_t kMaxPendingClients = 16;
    static constexpr size_t kMaxControlPackets = 512;

    static Result<std::unique_ptr<Vsock>> create(const VsockOptions& options);
    ~Vsock() override;

    uint32_t device_type() const override { return kTypeVsock; }
    uint64_t device_features() const override { return 0; }
    std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize, kQueueSize}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;

    Result<void> activate(uint64_t features, std::span<Queue> queues, DeviceContext ctx) override;
    void queue_notify(size_t index) override;
    void reset() override;
    // A restored guest hears of a transport reset: its old connections are gone.
    void restored() override;
    // The next host port: a restored VM's new connections must not reuse a
    // port the guest may still hold a closing socket for.
    std::string save_state() const override;
    Result<void> load_state(std::string_view bytes) override;

    size_t connection_count() const { return m_conns.size(); }
    size_t pending_client_count() const { return m_pending_clients.size(); }
    size_t control_backlog() const { return m_control.size(); }
    uint64_t dropped_control_packets() const { return m_dropped_control; }
    bool has_pending_output() const override;

private:
    struct Connection;
    using Key = std::pair<uint32_t, uint32_t>;  // (host port, guest port)

    Vsock(VsockOptions options, UniqueFd listener);

    void process_tx();
    void process_rx();
    void handle_packet(const vsock::Header& hdr, std::span<const uint8_t> payload);
    void send_control(uint16_t op, uint32_t host_port, uint32_t guest_port, uint32_t flags = 0);
    // The host end of a guest connection to `port`: "<socket>_<port>", or
    // dns_forward's TCP address for port 53. Empty when nothing takes it.
    UniqueFd connect_host_side(uint32_t port);
    void send_credit(Connection& c, uint16_t op);
    vsock::Header header_for(uint16_t op, uint32_t host_port, uint32_t guest_port) const;
    void close(const Key& key, bool send_rst);
    void flush_to_socket(Connection& c);

    // Polling on the event loop (one-shot io_uring POLL_ADD); completions find the
    // connection again by key and generation, so a closed one is simply skipped.
    void arm_accept();
    void arm_read(Connection& c);
    void arm_write(Connection& c);
    void on_accept();
    void on_client_line(uint64_t id);
    void on_readable(const Key& key, uint64_t id);
    void on_writable(const Key& key, uint64_t id);

    VsockOptions m_options;
    UniqueFd m_listener;
    Queue* m_rx = nullptr;
    Queue* m_tx = nullptr;
    Queue* m_event = nullptr;
    // A transport reset the guest has not acknowledged (by reposting its
    // event buffer); host clients that connect meanwhile wait in this list.
    bool m_reset_unacked = false;
    uint16_t m_reset_avail = 0;  // the event queue's avail index when the reset was sent
    std::vector<uint64_t> m_waiting_for_reset;
    DeviceContext m_ctx;
    bool m_active = false;
    bool m_accept_armed = false;  // a poll on m_listener is in the ring
    uint64_t m_generation = 0;
    uint64_t m_next_id = 1;
    uint32_t m_next_host_port = kFirstHostPort;
    std::map<Key, std::unique_ptr<Connection>> m_conns;
    // Accepted host clients still writing their "CONNECT <port>\n" line.
    struct PendingClient {
        UniqueFd fd;
        std::string line;
        PendingClient(UniqueFd f) : fd(std::move(f)) {}
        PendingClient(PendingClient&&) = default;
        PendingClient& operator=(PendingClient&&) = default;
        ~PendingClient();  // shuts the socket down: the client sees EOF at once
    };
    std::map<uint64_t, PendingClient> m_pending_clients;
    std::deque<vsock::Header> m_control;  // packets without payload waiting for rx buffers
    uint64_t m_dropped_control = 0;       // control packets dropped past kMaxControlPackets
};

}  // namespace husk::virtio
