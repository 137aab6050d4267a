#include "agent/dns_relay.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "vmm/base/netlink.h"

namespace husk::agent {
namespace {

// A query for "web." type A, class IN, id 0xbeef, recursion desired.
std::string query_for_web() {
    std::string q = std::string("\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 12);
    q += std::string("\x03web\x00\x00\x01\x00\x01", 9);
    return q;
}

TEST(DnsRelay, ServfailKeepsTheIdAndTheQuestion) {
    std::string q = query_for_web();
    std::string a = servfail_for(q);
    ASSERT_EQ(a.size(), q.size());
    EXPECT_EQ(a.substr(0, 2), "\xbe\xef");
    EXPECT_EQ(uint8_t(a[2]), 0x81);      // a response, recursion desired as asked
    EXPECT_EQ(uint8_t(a[3]) & 0x0f, 2);  // SERVFAIL
    EXPECT_EQ(a.substr(4, 8), std::string("\x00\x01\x00\x00\x00\x00\x00\x00", 8));
    EXPECT_EQ(a.substr(12), q.substr(12));  // the question, as asked
    // An additional record (EDNS) after the question is not echoed.
    std::string edns = q;
    edns[11] = 1;
    edns += std::string("\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00", 11);
    EXPECT_EQ(servfail_for(edns), a);
}

TEST(DnsRelay, AnAnswerTooBigForUdpIsTruncatedForTcp) {
    std::string q = query_for_web();
    std::string small(100, 'a'), big(600, 'b');
    EXPECT_EQ(for_udp(q, small), small);
    std::string tc = for_udp(q, big);
    ASSERT_EQ(tc.size(), q.size());
    EXPECT_EQ(tc.substr(0, 2), "\xbe\xef");
    EXPECT_EQ(uint8_t(tc[2]), 0x83);  // a response, TC, recursion desired
    EXPECT_EQ(uint8_t(tc[3]), 0x80);  // no error
    // With EDNS the client takes up to 1232 bytes.
    std::string edns = q;
    edns[11] = 1;
    edns += std::string("\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00", 11);
    EXPECT_EQ(for_udp(edns, big), big);
    EXPECT_EQ(for_udp(edns, std::string(1300, 'c')).size(), q.size());
}

TEST(DnsRelay, MalformedQueriesGetNoAnswer) {
    std::string q = query_for_web();
    EXPECT_EQ(servfail_for(q.substr(0, 11)), "");
    EXPECT_EQ(servfail_for(q.substr(0, 16)), "");  // the name runs past the end
    std::string pointer = q;
    pointer[12] = char(0xc0);  // a compression pointer in a question
    EXPECT_EQ(servfail_for(pointer), "");
    std::string no_question = q.substr(0, 12);
    no_question[5] = 0;
    EXPECT_EQ(servfail_for(no_question).size(), 12u);
}

// In a network namespace of its own (root only): the relay answers at
// 127.0.0.11:53 over UDP and TCP, with SERVFAIL here, where no host answers
// over vsock. A TCP client that connects and sends nothing holds up neither:
// both answers come while it is still connected (the relay closes a client
// idle for 5 s; one served after it would find it closed).
TEST(DnsRelay, AnswersAt127_0_0_11WithServfailWhenTheHostCannot) {
    std::string skipped, failure, answer, tcp_answer;
    bool idle_client_still_open = false;
    std::thread([&] {
        if (::unshare(CLONE_NEWNET) < 0) return void(skipped = std::string("unshare: ") + std::strerror(errno));
        auto net = netlink::read_network();
        if (!net) return void(failure = net.error().message());
        for (const auto& link : net.value().links)
            if (link.loopback)
                if (auto up = netlink::change_link(link.index,
                                                   {.mac = {}, .mtu = {}, .name = {}, .up = true, .netns_fd = {}});
                    !up)
                    return void(failure = up.error().message());
        if (auto r = start_dns_relay(); !r) return void(failure = r.error().message());
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(53);
        ::inet_pton(AF_INET, "127.0.0.11", &to.sin_addr);
        auto tcp_client = [&] {
            int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (::connect(c, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) failure = "connect over TCP";
            return c;
        };
        int idle = tcp_client();
        std::string q = query_for_web();
        // Over TCP on a second connection: a 2-byte length, then the query.
        int asker = tcp_client();
        std::string framed = std::string(1, char(q.size() >> 8)) + char(q.size() & 0xff) + q;
        ::send(asker, framed.data(), framed.size(), MSG_NOSIGNAL);
        pollfd t{asker, POLLIN, 0};
        if (::poll(&t, 1, 10000) == 1) {
            char buf[512];
            ssize_t n = ::recv(asker, buf, sizeof buf, 0);
            if (n > 2) tcp_answer.assign(buf + 2, size_t(n) - 2);
        }
        ::close(asker);
        int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ::sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 10000) == 1) {
            char buf[512];
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n > 0) answer.assign(buf, size_t(n));
        }
        ::close(fd);
        char byte;
        idle_client_still_open = ::recv(idle, &byte, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN;
        ::close(idle);
    }).join();
    if (!skipped.empty()) GTEST_SKIP() << skipped;
    ASSERT_EQ(failure, "");
    EXPECT_EQ(answer, servfail_for(query_for_web()));
    EXPECT_EQ(tcp_answer, servfail_for(query_for_web()));
    EXPECT_TRUE(idle_client_still_open) << "the idle TCP client held the relay up until it was closed";
}

}  // namespace
}  // namespace husk::agent
