// husk serve without VMs: the HTTP parsing and formatting, the API's checks
// and routing, and the metrics text (runtime/serve/). Pools with VMs are the
// rig's (tests/rigtier/serve_test.cpp).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/serve/service.h"
#include "vmm/base/system.h"

namespace husk::runtime::serve {
namespace {

using Json = nlohmann::json;

TEST(ServeHttp, ARequestIsParsedWhole) {
    auto r = parse_request("POST /pools/fn/invoke HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}");
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r.value().method, "POST");
    EXPECT_EQ(r.value().target, "/pools/fn/invoke");
    EXPECT_EQ(r.value().body, "{}");
    EXPECT_TRUE(r.value().keep_alive);
    auto chunked =
        parse_request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
    ASSERT_TRUE(chunked) << chunked.error().message();
    EXPECT_EQ(chunked.value().body, "{}");
    auto close = parse_request("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    ASSERT_TRUE(close);
    EXPECT_FALSE(close.value().keep_alive);
}

TEST(ServeHttp, MalformedIncompleteAndOversizedRequestsAreRefused) {
    EXPECT_FALSE(parse_request(""));
    // A final chunk with its trailer's end missing (the fuzzer's first find in Beast's chunk parser).
    EXPECT_FALSE(parse_request("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"));
    EXPECT_FALSE(parse_request("GARBAGE\r\n\r\n"));
    EXPECT_FALSE(parse_request("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}"));
    EXPECT_FALSE(parse_request("GET / HTTP/1.1\r\nX: " + std::string(kMaxHeaderBytes, 'a') + "\r\n\r\n"));
    EXPECT_FALSE(parse_request("POST / HTTP/1.1\r\nContent-Length: " + std::to_string(kMaxBodyBytes + 1) + "\r\n\r\n"));
}

TEST(ServeHttp, AResponseCarriesItsLengthAndType) {
    std::string r = format_response({404, "{\"error\":\"x\"}\n"}, false);
    EXPECT_EQ(r.rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u) << r;
    EXPECT_NE(r.find("Content-Length: 14\r\n"), std::string::npos) << r;
    EXPECT_NE(r.find("Content-Type: application/json\r\n"), std::string::npos) << r;
    EXPECT_NE(r.find("Connection: close\r\n"), std::string::npos) << r;
}

TEST(ServeHttp, AStreamedResponseIsChunked) {
    std::string head = format_stream_head({200, "", "application/x-ndjson"}, true);
    EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << head;
    EXPECT_NE(head.find("Transfer-Encoding: chunked\r\n"), std::string::npos) << head;
    EXPECT_TRUE(head.ends_with("\r\n\r\n")) << head;
    EXPECT_EQ(format_chunk("{}\n"), "3\r\n{}\n\r\n");
    EXPECT_EQ(format_chunk(std::string(26, 'a')).substr(0, 4), "1a\r\n");
    EXPECT_EQ(format_chunk(""), "0\r\n\r\n");
}

// A real server on a socket: two requests pipelined on one connection are
// answered in order, a malformed one gets 400 and the connection's end, a
// second server on the same path is refused, and stop() ends it all.
TEST(ServeHttp, AServerAnswersPipelinedRequestsAndStops) {
    char tmpl[] = "/tmp/husk-serve-http.XXXXXX";
    std::string dir = ::mkdtemp(tmpl);
    std::string path = dir + "/s.sock";
    auto server = HttpServer::listen(path, [](const HttpRequest& r) {
        return HttpResponse{200, r.method + " " + r.target + " " + r.body};
    });
    ASSERT_TRUE(server) << server.error().message();
    std::thread accept([&] { server.value()->run(); });
    auto again = HttpServer::listen(path, [](const HttpRequest&) { return HttpResponse{}; });
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code(), EADDRINUSE);
    auto exchange = [&](const std::string& bytes) {
        UniqueFd fd = sys::connect_unix(path).release_value();
        EXPECT_TRUE(sys::send_all(fd.get(), bytes));
        ::shutdown(fd.get(), SHUT_WR);
        std::string out;
        char buf[4096];
        for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
        return out;
    };
    std::string two = exchange("GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
    size_t first = two.find("GET /a "), second = two.find("POST /b hi");
    EXPECT_NE(first, std::string::npos) << two;
    EXPECT_NE(second, std::string::npos) << two;
    EXPECT_LT(first, second) << two;
    std::string bad = exchange("NOT HTTP\r\n\r\n");
    EXPECT_EQ(bad.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << bad;
    server.value()->stop();
    accept.join();
    server.value().reset();
    EXPECT_FALSE(std::filesystem::exists(path));
    std::filesystem::remove_all(dir);
}

// TCP beside the Unix socket, on loopback only: anything else is refused by name.
TEST(ServeHttp, TcpIsServedOnLoopbackOnly) {
    char tmpl[] = "/tmp/husk-serve-http.XXXXXX";
    std::string dir = ::mkdtemp(tmpl);
    auto server = HttpServer::listen(dir + "/s.sock", [](const HttpRequest& r) {
        return HttpResponse{200, r.method + " " + r.target};
    });
    ASSERT_TRUE(server) << server.error().message();
    for (const char* refused : {"0.0.0.0:8080", "[::]:8080", "192.0.2.1:80", "8080", "127.0.0.1:"}) {
        auto r = server.value()->listen_tcp(refused);
        ASSERT_FALSE(r) << refused;
        EXPECT_EQ(r.error().code(), EINVAL) << refused;
    }
    EXPECT_NE(server.value()->listen_tcp("0.0.0.0:1").error().message().find("not a loopback address"),
              std::string::npos);
    auto tcp = server.value()->listen_tcp("127.0.0.1:0");
    ASSERT_TRUE(tcp) << tcp.error().message();
    ASSERT_NE(server.value()->tcp_port(), 0);
    std::thread accept([&] { server.value()->run(); });
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(server.value()->tcp_port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
    EXPECT_TRUE(sys::send_all(fd.get(), "GET /health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
    EXPECT_EQ(out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << out;
    EXPECT_NE(out.find("GET /health"), std::string::npos) << out;
    server.value()->stop();
    accept.join();
    server.value().reset();
    std::filesystem::remove_all(dir);
}

TEST(ServeApi, APoolConfigIsCheckedWhole) {
    auto ok = parse_pool_config({{"name", "fn-1"}, {"bundle", "/b"}, {"size", 2}, {"env", {"A=1"}}});
    ASSERT_TRUE(ok) << ok.error().message();
    EXPECT_EQ(ok.value().size, 2u);
    EXPECT_EQ(ok.value().queue, 16u);
    EXPECT_EQ(ok.value().timeout_ms, 30000u);
    EXPECT_EQ(ok.value().max_size, 2u);  // `size` when not given
    auto refused = [](const Json& body, const std::string& why) {
        auto r = parse_pool_config(body);
        ASSERT_FALSE(r) << body.dump();
        EXPECT_EQ(r.error().code(), EINVAL);
        EXPECT_NE(r.error().message().find(why), std::string::npos) << r.error().message();
    };
    refused(Json::array(), "JSON object");
    refused({{"bundle", "/b"}}, "`name`");
    refused({{"name", "x"}}, "either `bundle` (an OCI bundle) or `rootfs`");
    refused({{"name", "x"}, {"bundle", "/b"}, {"rootfs", "/r"}}, "either `bundle`");
    refused({{"name", "x"}, {"rootfs", "r"}}, "`rootfs` must be an absolute path");
    auto from_rootfs = parse_pool_config({{"name", "x"}, {"rootfs", "/r"}, {"args", {"python3", "-c", "print(1)"}}});
    ASSERT_TRUE(from_rootfs) << from_rootfs.error().message();
    EXPECT_EQ(from_rootfs.value().rootfs, "/r");
    EXPECT_EQ(from_rootfs.value().args.size(), 3u);
    refused({{"name", "../x"}, {"bundle", "/b"}}, "`name` must be");
    refused({{"name", "x"}, {"bundle", "relative"}}, "`bundle` must be an absolute path");
    refused({{"name", "x"}, {"bundle", "/b"}, {"size", 0}}, "`size` must be a whole number from 1 to 64");
    refused({{"name", "x"}, {"bundle", "/b"}, {"size", -1}}, "`size`");
    refused({{"name", "x"}, {"bundle", "/b"}, {"memory_mib", 1.5}}, "`memory_mib`");
    refused({{"name", "x"}, {"bundle", "/b"}, {"memory_limit_mib", 256}}, "from 8 to memory_mib - 64 (192)");
    refused({{"name", "x"}, {"bundle", "/b"}, {"memory_limit_mib", 4}}, "`memory_limit_mib`");
    refused({{"name", "x"}, {"bundle", "/b"}, {"size", 3}, {"max_size", 2}}, "`max_size` must be at least `size` (3)");
    refused({{"name", "x"}, {"bundle", "/b"}, {"scale_down_ms", 10}}, "`scale_down_ms`");
    auto limited = parse_pool_config({{"name", "x"}, {"bundle", "/b"}, {"memory_mib", 512}, {"memory_limit_mib", 448}});
    ASSERT_TRUE(limited) << limited.error().message();
    EXPECT_EQ(limited.value().memory_limit_mib, 448u);
    refused({{"name", "x"}, {"bundle", "/b"}, {"env", {"NOEQUALS"}}}, "NAME=VALUE");
    refused({{"name", "x"}, {"bundle", "/b"}, {"startup", "true"}}, "array of strings");
    refused({{"name", "x"}, {"bundle", "/b"}, {"sise", 2}}, "unknown field `sise`");
}

TEST(ServeApi, AnInvocationIsCheckedWhole) {
    auto ok = parse_invoke_request({{"args", {"echo", "hi"}}, {"stdin", "x"}, {"timeout_ms", 5}});
    ASSERT_TRUE(ok) << ok.error().message();
    EXPECT_EQ(ok.value().args.size(), 2u);
    EXPECT_EQ(*ok.value().timeout_ms, 5u);
    EXPECT_FALSE(parse_invoke_request({{"args", {1, 2}}}));
    EXPECT_FALSE(parse_invoke_request({{"stdin", 5}}));
    EXPECT_FALSE(parse_invoke_request({{"timeout_ms", 0}}));
    EXPECT_FALSE(parse_invoke_request({{"what", 0}}));
    EXPECT_FALSE(parse_invoke_request({{"stream", "yes"}}));
    EXPECT_TRUE(parse_invoke_request({{"stream", true}}).value().stream);
}

class ServeRouting : public ::testing::Test {
protected:
    Service m_service{"/nonexistent",
                      [this](const PoolConfig& c, const std::string& dir) -> Result<std::shared_ptr<Pool>> {
                          m_made = c.name + " in " + dir;
                          return Error::from_string("no VMs in unit tests", ENOSYS);
                      }};
    std::string m_made;
    HttpResponse call(const std::string& method, const std::string& target, const std::string& body = "") {
        return m_service.handle({method, target, body, true});
    }
};

TEST_F(ServeRouting, EachMistakeGetsItsStatusAndAnError) {
    auto check = [&](const HttpResponse& r, int status) {
        EXPECT_EQ(r.status, status) << r.body;
        if (status >= 400) {
            EXPECT_TRUE(Json::parse(r.body).contains("error")) << r.body;
        }
    };
    check(call("GET", "/pools"), 200);
    EXPECT_EQ(Json::parse(call("GET", "/pools").body), (Json{{"pools", Json::array()}}));
    check(call("GET", "/nothing"), 404);
    check(call("GET", "/pools/fn"), 404);
    check(call("POST", "/pools/fn/invoke", "{}"), 404);
    check(call("POST", "/pools/fn/invoke", "{bad"), 400);
    check(call("PUT", "/pools"), 405);
    check(call("GET", "/pools/fn/invoke"), 405);
    check(call("POST", "/pools", "{\"name\":\"fn\"}"), 400);
    check(call("POST", "/pools", "{\"name\":\"fn\",\"bundle\":\"/b\"}"), 500);
    EXPECT_EQ(m_made, "fn in /nonexistent/fn");
    check(call("GET", "/health"), 200);
}

TEST_F(ServeRouting, MetricsAreInPrometheusTextFormat) {
    call("GET", "/nothing");
    auto r = call("GET", "/metrics");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "text/plain; version=0.0.4");
    EXPECT_NE(r.body.find("# TYPE husk_serve_requests_total counter\nhusk_serve_requests_total 1\n"), std::string::npos)
        << r.body;
    EXPECT_NE(r.body.find("# TYPE husk_serve_vms gauge\n"), std::string::npos) << r.body;
}

TEST(ServeApi, ErrorCodesMapToStatuses) {
    EXPECT_EQ(status_for(Error::from_string("x", EAGAIN)), 429);
    EXPECT_EQ(status_for(Error::from_string("x", ETIMEDOUT)), 504);
    EXPECT_EQ(status_for(Error::from_string("x", EMSGSIZE)), 502);
    EXPECT_EQ(status_for(Error::from_string("x", ENOMEM)), 502);
    EXPECT_EQ(status_for(Error::from_string("x", ESHUTDOWN)), 503);
    EXPECT_EQ(status_for(Error::from_string("x", EEXIST)), 409);
}

}  // namespace
}  // namespace husk::runtime::serve
