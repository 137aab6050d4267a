#include "agent/dns_relay.h"

#include <arpa/inet.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <optional>
#include <system_error>
#include <thread>

#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/base/unique_fd.h"

namespace husk::agent {

namespace {

constexpr size_t kHeader = 12;         // RFC 1035 §4.1.1
constexpr size_t kMaxMessage = 65535;  // a DNS over TCP length
constexpr int kTimeoutSeconds = 5;     // per exchange with the host, and per idle TCP client
constexpr uint16_t kServFail = 2;      // RCODE
// Queries and TCP clients served at once, each on a thread of its own: a slow
// answer or an idle client holds up no other. Past these, a UDP query is
// dropped (its client asks again) and a TCP client is closed at once.
constexpr int kMaxUdpInFlight = 32;
constexpr int kMaxTcpClients = 16;

std::atomic<int> udp_in_flight{0}, tcp_clients{0};

// Runs `work` on a thread of its own when fewer than `limit` are running.
template <typename F>
bool run_bounded(std::atomic<int>& running, int limit, F work) {
    if (running.fetch_add(1) >= limit) {
        --running;
        return false;
    }
    try {
        std::thread([&running, work = std::move(work)]() mutable {
            work();
            --running;
        }).detach();
    } catch (const std::system_error&) {  // no thread to be had: as if over the limit
        --running;
        return false;
    }
    return true;
}

void set_timeouts(int fd) {
    timeval tv{kTimeoutSeconds, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

bool recv_all(int fd, char* at, size_t size) {
    while (size) {
        ssize_t n = ::recv(fd, at, size, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        at += n;
        size -= size_t(n);
    }
    return true;
}

std::string framed(std::string_view message) {
    std::string out(2, '\0');
    out[0] = char(message.size() >> 8);
    out[1] = char(message.size() & 0xff);
    out.append(message);
    return out;
}

// One framed message from a stream; nullopt at its end, a timeout or a bad length.
std::optional<std::string> read_framed(int fd) {
    unsigned char len[2];
    if (!recv_all(fd, reinterpret_cast<char*>(len), 2)) return std::nullopt;
    size_t size = size_t(len[0]) << 8 | len[1];
    if (size < kHeader) return std::nullopt;
    std::string message(size, '\0');
    if (!recv_all(fd, message.data(), size)) return std::nullopt;
    return message;
}

// The query asked of the host's server over a vsock stream of its own; the
// answer, or nullopt when none came.
std::optional<std::string> ask_host(std::string_view query) {
    UniqueFd fd(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return std::nullopt;
    set_timeouts(fd.get());
    sockaddr_vm host{};
    host.svm_family = AF_VSOCK;
    host.svm_cid = VMADDR_CID_HOST;
    host.svm_port = kDnsRelayPort;
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&host), sizeof host) < 0) return std::nullopt;
    if (!sys::send_all(fd.get(), framed(query))) return std::nullopt;
    return read_framed(fd.get());
}

std::string answer(std::string_view query) {
    if (auto a = ask_host(query)) return *a;
    return servfail_for(query);
}

// A TCP client of the guest: framed queries, one after another, until it
// closes or stays idle for the timeout.
void serve_tcp_client(int fd) {
    set_timeouts(fd);
    while (auto query = read_framed(fd)) {
        std::string a = answer(*query);
        if (a.empty() || !sys::send_all(fd, framed(a))) return;
    }
}

Result<UniqueFd> bound_socket(int type) {
    UniqueFd fd(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
    if (!fd) return Error::from_errno(errno, "socket");
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_port = htons(53);
    ::inet_pton(AF_INET, kDnsRelayAddress, &at.sin_addr);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) < 0)
        return Error::from_errno(errno, std::string("bind ") + kDnsRelayAddress + ":53");
    if (type == SOCK_STREAM && ::listen(fd.get(), 16) < 0) return Error::from_errno(errno, "listen");
    return fd;
}

// The relay's sockets live as long as the agent: its threads use them by fd.
[[noreturn]] void relay(UniqueFd udp, UniqueFd tcp) {
    std::string buf(kMaxMessage, '\0');
    const int udp_fd = udp.get();
    for (;;) {
        pollfd p[2] = {{udp_fd, POLLIN, 0}, {tcp.get(), POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) continue;
        if (p[0].revents & POLLIN) {
            sockaddr_storage from{};
            socklen_t from_len = sizeof from;
            ssize_t n =
                ::recvfrom(udp_fd, buf.data(), buf.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &from_len);
            if (n >= ssize_t(kHeader))
                run_bounded(udp_in_flight, kMaxUdpInFlight,
                            [udp_fd, query = std::string(buf.data(), size_t(n)), from, from_len] {
                                std::string a = for_udp(query, answer(query));
                                if (!a.empty())
                                    ::sendto(udp_fd, a.data(), a.size(), MSG_DONTWAIT,
                                             reinterpret_cast<const sockaddr*>(&from), from_len);
                            });
        }
        if (p[1].revents & POLLIN) {
            int client = ::accept4(tcp.get(), nullptr, nullptr, SOCK_CLOEXEC);
            if (client >= 0 && !run_bounded(tcp_clients, kMaxTcpClients, [client] {
                    UniqueFd owned(client);
                    serve_tcp_client(client);
                }))
                ::close(client);
        }
    }
}

}  // namespace

Result<void> start_dns_relay() {
    static std::atomic<bool> started{false};
    if (started) return {};
    UniqueFd udp = TRY(bound_socket(SOCK_DGRAM).context("the DNS relay"));
    UniqueFd tcp = TRY(bound_socket(SOCK_STREAM).context("the DNS relay"));
    started = true;
    std::thread(relay, std::move(udp), std::move(tcp)).detach();
    log::info("relaying DNS at {}:53 to the container's server on the host", kDnsRelayAddress);
    return {};
}

std::string servfail_for(std::string_view query) {
    if (query.size() < kHeader) return {};
    // The first question: its name's labels, then type and class.
    size_t at = kHeader;
    uint16_t questions = uint16_t(uint8_t(query[4]) << 8 | uint8_t(query[5]));
    if (questions) {
        while (at < query.size() && query[at] != 0) {
            if (uint8_t(query[at]) & 0xc0) return {};  // no compression in a question
            at += 1 + uint8_t(query[at]);
        }
        at += 1 + 4;
        if (at > query.size()) return {};
    }
    std::string out(query.substr(0, at));
    out[2] = char((uint8_t(query[2]) & 0x79) | 0x80);  // QR, the opcode and RD kept
    out[3] = char(0x80 | kServFail);                   // RA, RCODE
    out[4] = 0;
    out[5] = questions ? 1 : 0;
    std::memset(out.data() + 6, 0, 6);  // no answer, authority or additional records
    return out;
}

std::string for_udp(std::string_view query, std::string answer) {
    // Any additional record in a query is taken for EDNS's OPT: 1232 bytes, the size DNS Flag Day 2020 settled on.
    bool edns = query.size() >= kHeader && (query[10] || query[11]);
    if (answer.size() <= (edns ? 1232u : 512u)) return answer;
    std::string out = servfail_for(query);
    if (out.empty()) return out;
    out[2] = char(uint8_t(out[2]) | 0x02);  // TC
    out[3] = char(0x80);                    // RA, no error
    return out;
}

}  // namespace husk::agent
