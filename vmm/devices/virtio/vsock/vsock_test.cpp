// virtio-vsock through the mmio transport with a fake guest driver: the host
// side is real Unix sockets, the event loop is the real io_uring loop.
#include "vmm/devices/virtio/vsock/vsock.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "vmm/base/system.h"
#include "vmm/devices/virtio/mmio/mmio_transport.h"
#include "vmm/devices/virtio/queue/fake_driver.h"
#include "vmm/io/event_loop.h"

namespace husk::virtio {
namespace {

using testing::FakeDriver;
using namespace vsock;

void wr32(MmioTransport& t, uint64_t off, uint32_t v) {
    testing::mmio_write32(t, off, v);
}
uint32_t rd32(MmioTransport& t, uint64_t off) {
    return testing::mmio_read32(t, off);
}

struct VsockHarness {
    GuestMemory mem = GuestMemory::create(16 << 20).release_value();
    std::unique_ptr<EventLoop> loop = EventLoop::create().release_value();
    std::thread thread;
    std::unique_ptr<MmioTransport> t;
    FakeDriver rx{mem, 64, 0x100000}, tx{mem, 64, 0x400000};
    std::string path = "/tmp/husk-vsock-test-" + std::to_string(getpid()) + ".sock";

    Vsock* dev = nullptr;  // owned by t

    explicit VsockHarness(int rx_buffers = 32, std::optional<sockaddr_in> dns_forward = {}) {
        auto owned = Vsock::create({3, path, dns_forward}).release_value();
        dev = owned.get();
        t = std::make_unique<MmioTransport>(std::move(owned), "vsock", mem, *loop, 5);
        thread = std::thread([this] { loop->run(); });
        bring_up();
        // Rx buffers as Linux posts them: header and 4 KiB payload.
        for (int i = 0; i < rx_buffers; ++i) give_rx();
        wr32(*t, 0x50, 0);
    }
    void bring_up() {
        wr32(*t, 0x70, kStatusAcknowledge | kStatusDriver);
        wr32(*t, 0x24, 1);
        wr32(*t, 0x20, 1);
        wr32(*t, 0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
        setup_queue(0, rx);
        setup_queue(1, tx);
        wr32(*t, 0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
    }
    ~VsockHarness() {
        loop->stop();
        thread.join();
    }
    // Reads a device counter under the transport's lock (the loop thread changes them).
    template <typename F>
    auto device_locked(F f) {
        auto held = t->hold();
        return f(*dev);
    }
    void setup_queue(uint32_t index, FakeDriver& d) { testing::setup_queue(*t, index, d); }
    // Linux 6.1 posts one 4 KiB buffer per packet, header included; older
    // kernels a header buffer and a 4 KiB payload buffer. Alternate both.
    void give_rx() {
        uint64_t h = rx.alloc(sizeof(Header)), p = rx.alloc(4096);
        if (rx_posted++ % 2)
            rx.add_chain({{h, sizeof(Header), true}, {p, 4096, true}});
        else
            rx.add_chain({{h, 4096, true}});
    }
    int rx_posted = 0;
    void send(Header h, const std::string& payload = "") {
        h.src_cid = 3;
        h.dst_cid = 2;
        h.type = kTypeStream;
        h.len = uint32_t(payload.size());
        if (!h.buf_alloc) h.buf_alloc = 1 << 20;
        uint64_t a = tx.alloc(sizeof h, &h);
        if (payload.empty()) {
            tx.add_chain({{a, sizeof h, false}});
        } else {
            uint64_t p = tx.alloc(uint32_t(payload.size()), payload.data());
            tx.add_chain({{a, sizeof h, false}, {p, uint32_t(payload.size()), false}});
        }
        wr32(*t, 0x50, 1);
    }
    // Waits for the next rx packet; returns its header and payload.
    bool receive(Header& h, std::string& payload, uint16_t& seen, int wait_ms = 3000) {
        for (int i = 0; i < wait_ms && rx.used_idx() == seen; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (rx.used_idx() == seen) return false;
        auto [id, len] = rx.used(seen++);
        // Buffers come in pairs (header area, 4 KiB), in descriptor order; find this chain's.
        (void)id;
        uint64_t hdr_at = 0x100000 + 0x10000 + uint64_t(seen - 1) * ((sizeof(Header) + 15) / 16 * 16 + 4096);
        bool split = (seen - 1) % 2;
        (void)mem.read(hdr_at, std::span(reinterpret_cast<uint8_t*>(&h), sizeof h));
        payload.assign(len - sizeof h, '\0');
        uint64_t payload_at = split ? hdr_at + (sizeof(Header) + 15) / 16 * 16 : hdr_at + sizeof(Header);
        if (!payload.empty())
            (void)mem.read(payload_at, std::span(reinterpret_cast<uint8_t*>(payload.data()), payload.size()));
        give_rx();
        wr32(*t, 0x50, 0);
        return true;
    }
};

// Blocking client socket; the test owns the raw fd.
int connect_to(const std::string& path) {
    auto fd = sys::connect_unix(path);
    return fd.is_error() ? -1 : fd.release_value().release();
}

TEST(Vsock, HostConnectsGuestAcceptsDataFlowsBothWays) {
    VsockHarness h;
    int fd = connect_to(h.path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "CONNECT 52\nearly", 16), 16);
    Header req;
    std::string payload;
    uint16_t seen = 0;
    ASSERT_TRUE(h.receive(req, payload, seen));
    EXPECT_EQ(req.op, kOpRequest);
    EXPECT_EQ(req.dst_port, 52u);
    EXPECT_GE(req.src_port, Vsock::kFirstHostPort);
    Header resp{};
    resp.op = kOpResponse;
    resp.src_port = 52;
    resp.dst_port = req.src_port;
    h.send(resp);
    char line[32] = {};
    ASSERT_GT(read(fd, line, sizeof line - 1), 0);
    EXPECT_EQ(std::string(line), "OK " + std::to_string(req.src_port) + "\n");
    // Bytes the client wrote after its CONNECT line arrive in the guest.
    Header rw;
    ASSERT_TRUE(h.receive(rw, payload, seen));
    EXPECT_EQ(rw.op, kOpRw);
    EXPECT_EQ(payload, "early");
    // Guest -> host.
    Header data{};
    data.op = kOpRw;
    data.src_port = 52;
    data.dst_port = req.src_port;
    h.send(data, "from the guest");
    char buf[64] = {};
    ASSERT_EQ(read(fd, buf, sizeof buf), 14);
    EXPECT_EQ(std::string(buf), "from the guest");
    // Host closes: the guest hears SHUTDOWN(SEND).
    close(fd);
    Header sd;
    ASSERT_TRUE(h.receive(sd, payload, seen));
    EXPECT_EQ(sd.op, kOpShutdown);
    EXPECT_EQ(sd.flags, kShutdownSend);
}

TEST(Vsock, LargeHostWriteIsSplitToFitBuffersAndCredit) {
    VsockHarness h;
    int fd = connect_to(h.path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "CONNECT 60\n", 11), 11);
    Header req;
    std::string payload;
    uint16_t seen = 0;
    ASSERT_TRUE(h.receive(req, payload, seen));
    Header resp{};
    resp.op = kOpResponse;
    resp.src_port = 60;
    resp.dst_port = req.src_port;
    resp.buf_alloc = 10000;  // the guest has room for 10000 bytes only
    h.send(resp);
    char line[32];
    ASSERT_GT(read(fd, line, sizeof line), 0);
    std::string big(30000, 'x');
    ASSERT_EQ(write(fd, big.data(), big.size()), ssize_t(big.size()));
    size_t got = 0;
    Header rw;
    while (got < 10000 && h.receive(rw, payload, seen)) {
        EXPECT_EQ(rw.op, kOpRw);
        EXPECT_LE(payload.size(), 4096u);
        got += payload.size();
    }
    EXPECT_EQ(got, 10000u);
    // Nothing more until the guest reports consumption.
    EXPECT_FALSE(h.receive(rw, payload, seen, 200));
    Header credit{};
    credit.op = kOpCreditUpdate;
    credit.src_port = 60;
    credit.dst_port = req.src_port;
    credit.buf_alloc = 10000;
    credit.fwd_cnt = 10000;
    h.send(credit);
    ASSERT_TRUE(h.receive(rw, payload, seen));
    EXPECT_EQ(rw.op, kOpRw);
    close(fd);
}

// The guest's REQUEST from its port `from` to the host's port `to`.
Header guest_request(uint32_t from, uint32_t to) {
    Header req{};
    req.op = kOpRequest;
    req.src_port = from;
    req.dst_port = to;
    return req;
}

TEST(Vsock, GuestConnectToNobodyIsReset) {
    VsockHarness h;
    h.send(guest_request(1000, 7));
    Header rst;
    std::string payload;
    uint16_t seen = 0;
    ASSERT_TRUE(h.receive(rst, payload, seen));
    EXPECT_EQ(rst.op, kOpRst);
    EXPECT_EQ(rst.dst_port, 1000u);
}

// A TCP socket bound to a free loopback port (listening when asked); `at` gets its address.
int loopback_tcp(sockaddr_in& at, bool listening) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    at = {};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof at;
    if (bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof at) < 0 || (listening && listen(fd, 4) < 0) ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&at), &len) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

// vsock.dns_forward: a guest connection to port 53 is a TCP stream to the
// forward's address (the agent's DNS relay talks DNS over TCP through it);
// other ports still go to <socket>_<port>.
TEST(Vsock, GuestConnectionsToPort53GoToTheDnsForward) {
    sockaddr_in at{};
    int server = loopback_tcp(at, true);
    ASSERT_GE(server, 0);
    VsockHarness h(32, at);
    Header req = guest_request(4000, Vsock::kDnsPort);
    h.send(req);
    Header resp;
    std::string payload;
    uint16_t seen = 0;
    ASSERT_TRUE(h.receive(resp, payload, seen));
    EXPECT_EQ(resp.op, kOpResponse);
    Header rw{};
    rw.op = kOpRw;
    rw.src_port = 4000;
    rw.dst_port = Vsock::kDnsPort;
    h.send(rw, std::string("\0\5query", 7));
    int c = accept4(server, nullptr, nullptr, SOCK_CLOEXEC);
    ASSERT_GE(c, 0);
    char got[7] = {};
    pollfd p{c, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 3000), 1);
    ASSERT_EQ(recv(c, got, sizeof got, MSG_WAITALL), 7);
    EXPECT_EQ(std::string(got, 7), std::string("\0\5query", 7));
    ASSERT_EQ(write(c, "\0\2ok", 4), 4);
    Header back;
    ASSERT_TRUE(h.receive(back, payload, seen));
    EXPECT_EQ(back.op, kOpRw);
    EXPECT_EQ(payload, std::string("\0\2ok", 4));
    close(c);
    close(server);
    // Another port has no listener: reset, as without a forward (after the
    // first connection's SHUTDOWN, which may come first).
    h.send(guest_request(4001, 54));
    Header rst{};
    for (int i = 0; i < 3 && rst.dst_port != 4001; ++i) ASSERT_TRUE(h.receive(rst, payload, seen));
    EXPECT_EQ(rst.dst_port, 4001u);
    EXPECT_EQ(rst.op, kOpRst);
}

// A refused forward (no DNS server in the namespace) resets the guest's
// connection, as a closed port would.
TEST(Vsock, ARefusedDnsForwardResetsTheGuestsConnection) {
    sockaddr_in at{};
    int server = loopback_tcp(at, false);
    ASSERT_GE(server, 0);
    close(server);  // the port, now closed
    VsockHarness h(32, at);
    Header req = guest_request(4002, Vsock::kDnsPort);
    h.send(req);
    Header resp, rw{}, rst;
    std::string payload;
    uint16_t seen = 0;
    ASSERT_TRUE(h.receive(resp, payload, seen));
    rw.op = kOpRw;
    rw.src_port = 4002;
    rw.dst_port = Vsock::kDnsPort;
    if (resp.op == kOpResponse) {
        h.send(rw, std::string("\0\5query", 7));
        ASSERT_TRUE(h.receive(rst, payload, seen));
    } else {
        rst = resp;
    }
    EXPECT_EQ(rst.op, kOpRst);
    EXPECT_EQ(rst.dst_port, 4002u);
}

// A listening host socket for guest connections to CID 2 port `port`.
struct HostListener {
    std::string path;
    int fd = -1;
    HostListener(const std::string& vsock_path, uint32_t port) : path(vsock_path + "_" + std::to_string(port)) {
        auto l = sys::listen_unix(path, 1024);
        EXPECT_FALSE(l.is_error()) << l.error().message();
        if (!l.is_error()) fd = l.release_value().release();
    }
    ~HostListener() {
        close(fd);
        unlink(path.c_str());
    }
};

TEST(Vsock, GuestConnectsToHostListener) {
    VsockHarness h;
    HostListener l(h.path, 9);
    h.send(guest_request(1001, 9));
    Header resp;
    std::string payload;
    uint16_t seen = 0;
    ASSERT_TRUE(h.receive(resp, payload, seen));
    EXPECT_EQ(resp.op, kOpResponse);
    int c = accept(l.fd, nullptr, nullptr);
    ASSERT_GE(c, 0);
    ASSERT_EQ(write(c, "hi", 2), 2);
    Header rw;
    ASSERT_TRUE(h.receive(rw, payload, seen));
    EXPECT_EQ(payload, "hi");
    close(c);
}

TEST(Vsock, MalformedPacketsDoNotBreakTheDevice) {
    VsockHarness h;
    // Wrong CID and a type that is not a stream: both reset, the device lives on.
    Header bad{};
    bad.op = kOpRequest;
    bad.src_port = 1;
    bad.dst_port = 2;
    bad.type = 2;
    uint64_t a = h.tx.alloc(sizeof bad, &bad);
    h.tx.add_chain({{a, sizeof bad, false}});
    wr32(*h.t, 0x50, 1);
    // A header claiming more payload than the chain holds.
    Header liar{};
    liar.src_cid = 3;
    liar.dst_cid = 2;
    liar.type = kTypeStream;
    liar.op = kOpRw;
    liar.len = 1 << 30;
    uint64_t b = h.tx.alloc(sizeof liar, &liar);
    h.tx.add_chain({{b, sizeof liar, false}});
    wr32(*h.t, 0x50, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(rd32(*h.t, 0x70) & kStatusNeedsReset);
    Header rst;
    std::string payload;
    uint16_t seen = 0;
    ASSERT_TRUE(h.receive(rst, payload, seen));
    EXPECT_EQ(rst.op, kOpRst);
}

TEST(Vsock, BadConnectLineIsAnswered) {
    VsockHarness h;
    int fd = connect_to(h.path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "HELLO\n", 6), 6);
    char buf[64] = {};
    ASSERT_GT(read(fd, buf, sizeof buf - 1), 0);
    EXPECT_EQ(std::string(buf), "ERROR expected CONNECT <port>\n");
    close(fd);
}

// A driver that resets and sets the device up again and again (found by the
// vsock fuzz target) leaves one poll on the listener, not one per activation.
TEST(Vsock, ResetsDoNotPileUpPollsOnTheListener) {
    VsockHarness h;
    size_t before = h.loop->in_flight();
    for (int i = 0; i < 50; ++i) {
        wr32(*h.t, 0x70, 0);
        h.bring_up();
    }
    EXPECT_LE(h.loop->in_flight(), before);
}

TEST(Vsock, SocketPathInUseIsRefused) {
    std::string path = "/tmp/husk-vsock-busy-" + std::to_string(getpid()) + ".sock";
    auto first = Vsock::create({3, path});
    ASSERT_FALSE(first.is_error());
    auto second = Vsock::create({3, path});
    ASSERT_TRUE(second.is_error());
    EXPECT_NE(second.error().message().find("in use"), std::string::npos);
    EXPECT_TRUE(Vsock::create({2, "/tmp/x.sock"}).is_error());
}

// The guest connects to a host listener; returns the host's accepted end,
// whose io_uring read poll is armed in the device by then.
int guest_connects(VsockHarness& h, HostListener& l, uint32_t guest_port, uint32_t host_port) {
    h.send(guest_request(guest_port, host_port));
    return accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC);
}

// True when `fd` reads end of file within 2 s.
bool sees_eof(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 2000) != 1) return false;
    char c;
    return read(fd, &c, 1) == 0 || errno == ECONNRESET;
}

size_t open_fds() {
    size_t n = 0;
    DIR* d = opendir("/proc/self/fd");
    while (readdir(d)) ++n;
    closedir(d);
    return n;
}

TEST(VsockClose, TheHostPeerSeesEofWhenTheGuestResetsTheConnection) {
    VsockHarness h;
    HostListener l(h.path, 9);
    int c = guest_connects(h, l, 2000, 9);
    ASSERT_GE(c, 0);
    Header rst{};
    rst.op = kOpRst;
    rst.src_port = 2000;
    rst.dst_port = 9;
    h.send(rst);
    EXPECT_TRUE(sees_eof(c)) << "a poll in io_uring kept the closed socket open";
    close(c);
}

TEST(VsockClose, TheHostPeerSeesEofWhenTheDriverResetsTheDevice) {
    VsockHarness h;
    HostListener l(h.path, 9);
    int c = guest_connects(h, l, 2001, 9);
    ASSERT_GE(c, 0);
    wr32(*h.t, 0x70, 0);
    EXPECT_TRUE(sees_eof(c));
    close(c);
}

TEST(VsockClose, TheHostPeerSeesEofWhenTheVmIsResetToItsSnapshot) {
    VsockHarness h;
    HostListener l(h.path, 9);
    // A host-initiated connection too: the client of the VM's own socket.
    int client = connect_to(h.path);
    ASSERT_GE(client, 0);
    ASSERT_EQ(write(client, "CONNECT 52\n", 11), 11);
    Header req;
    std::string payload;
    uint16_t seen = 0;
    ASSERT_TRUE(h.receive(req, payload, seen));  // the device holds the connection now
    ASSERT_EQ(req.op, kOpRequest);
    int c = guest_connects(h, l, 2002, 9);
    ASSERT_GE(c, 0);
    std::string state;
    {
        // As Vmm::reset_to_snapshot does it: quiesce, then the snapshot's state.
        auto held = h.t->hold();
        state = h.t->save_state_locked();
        h.t->quiesce_locked();
    }
    ASSERT_FALSE(h.t->load_state(state).is_error());
    EXPECT_TRUE(sees_eof(c));
    EXPECT_TRUE(sees_eof(client));
    close(c);
    close(client);
}

TEST(VsockClose, TheHostPeerSeesEofWhenTheVmExits) {
    VsockHarness h;
    HostListener l(h.path, 9);
    int c = guest_connects(h, l, 2003, 9);
    ASSERT_GE(c, 0);
    // As ~Vmm does: the loop stops first (its ring, and the polls in it, live
    // on until the loop object goes), then the devices go.
    h.loop->stop();
    h.thread.join();
    h.t.reset();
    EXPECT_TRUE(sees_eof(c)) << "a poll left in the ring kept the socket open";
    h.thread = std::thread([] {});
    close(c);
}

TEST(VsockHostile, AFloodOfBadPacketsWithNoRxBuffersIsCapped) {
    VsockHarness h(0);  // a driver that never posts an rx buffer
    Header bad{};
    bad.op = kOpRw;
    for (uint32_t i = 0; i < 3 * Vsock::kMaxControlPackets; ++i) {
        bad.src_port = 10000 + i;  // a connection nobody knows: each earns a RST
        bad.dst_port = 7;
        h.send(bad);
    }
    EXPECT_EQ(h.device_locked([](Vsock& v) { return v.control_backlog(); }), Vsock::kMaxControlPackets);
    EXPECT_EQ(h.device_locked([](Vsock& v) { return v.dropped_control_packets(); }), 2 * Vsock::kMaxControlPackets);
    EXPECT_FALSE(rd32(*h.t, 0x70) & kStatusNeedsReset);
}

TEST(VsockHostile, CreditRequestsQueueOneUpdatePerConnection) {
    VsockHarness h(0);
    HostListener l(h.path, 9);
    int c = guest_connects(h, l, 3000, 9);
    ASSERT_GE(c, 0);
    Header ask{};
    ask.op = kOpCreditRequest;
    ask.src_port = 3000;
    ask.dst_port = 9;
    for (int i = 0; i < 2000; ++i) h.send(ask);
    // The RESPONSE and one CREDIT_UPDATE.
    EXPECT_EQ(h.device_locked([](Vsock& v) { return v.control_backlog(); }), 2u);
    // Once the guest posts buffers it hears both, the update with the current count.
    for (int i = 0; i < 4; ++i) h.give_rx();
    wr32(*h.t, 0x50, 0);
    Header got;
    std::string payload;
    uint16_t seen = 0;
    ASSERT_TRUE(h.receive(got, payload, seen));
    EXPECT_EQ(got.op, kOpResponse);
    ASSERT_TRUE(h.receive(got, payload, seen));
    EXPECT_EQ(got.op, kOpCreditUpdate);
    EXPECT_FALSE(h.receive(got, payload, seen, 100));
    close(c);
}

TEST(VsockHostile, GuestConnectionsAreCappedInNumberAndFds) {
    VsockHarness h;
    HostListener l(h.path, 9);
    size_t fds_before = open_fds();
    for (uint32_t i = 0; i < 4 * Vsock::kMaxConnections; ++i) {
        h.send(guest_request(5000 + i, 9));
    }
    EXPECT_EQ(h.device_locked([](Vsock& v) { return v.connection_count(); }), Vsock::kMaxConnections);
    EXPECT_LE(open_fds(), fds_before + Vsock::kMaxConnections + 4);
    // Each connection past the cap was reset, and the device is still usable.
    EXPECT_FALSE(rd32(*h.t, 0x70) & kStatusNeedsReset);
}

}  // namespace
}  // namespace husk::virtio
