#include "runtime/serve/http.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "vmm/base/log.h"
#include "vmm/base/system.h"

namespace husk::runtime::serve {

namespace {

namespace http = boost::beast::http;
using Parser = http::request_parser<http::string_body>;

std::unique_ptr<Parser> new_parser() {
    auto p = std::make_unique<Parser>();
    p->header_limit(kMaxHeaderBytes);
    p->body_limit(kMaxBodyBytes);
    p->eager(true);
    return p;
}

HttpRequest request_of(Parser& parser) {
    auto message = parser.release();
    HttpRequest r;
    r.method = std::string(message.method_string());
    r.target = std::string(message.target());
    r.body = std::move(message.body());
    r.keep_alive = message.keep_alive();
    return r;
}

// Feeds `pending` to the parser; what it used is removed. True once a request is whole.
Result<bool> feed(Parser& parser, std::string& pending) {
    while (!pending.empty() && !parser.is_done()) {
        boost::beast::error_code ec;
        size_t used = parser.put(boost::asio::buffer(pending.data(), pending.size()), ec);
        pending.erase(0, used);
        // Eager: one put() takes all it can. After need_more, Beast wants the
        // same bytes again only with more behind them (it asserts otherwise).
        if (ec == http::error::need_more) break;
        if (ec) return Error::from_string("a malformed HTTP request: " + ec.message(), EINVAL);
    }
    return parser.is_done();
}

HttpResponse error_response(int status, const std::string& message) {
    return {status,
            nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"};
}

}  // namespace

Result<HttpRequest> parse_request(std::string_view bytes) {
    auto parser = new_parser();
    std::string pending(bytes);
    if (!TRY(feed(*parser, pending))) {
        // Beast asserts that an end of file follows some bytes.
        if (!parser->got_some()) return Error::from_string("an empty HTTP request", EINVAL);
        boost::beast::error_code ec;
        parser->put_eof(ec);
        if (ec || !parser->is_done()) return Error::from_string("an incomplete HTTP request", EINVAL);
    }
    return request_of(*parser);
}

std::string format_response(const HttpResponse& response, bool keep_alive) {
    http::response<http::string_body> res{static_cast<http::status>(response.status), 11};
    res.set(http::field::server, "husk-serve");
    res.set(http::field::content_type, response.content_type);
    res.keep_alive(keep_alive);
    res.body() = response.body;
    res.prepare_payload();
    std::ostringstream out;
    out << res;
    return out.str();
}

std::string format_stream_head(const HttpResponse& response, bool keep_alive) {
    http::response<http::empty_body> res{static_cast<http::status>(response.status), 11};
    res.set(http::field::server, "husk-serve");
    res.set(http::field::content_type, response.content_type);
    res.keep_alive(keep_alive);
    res.chunked(true);
    std::ostringstream out;
    out << res.base();
    return out.str();
}

std::string format_chunk(std::string_view data) {
    if (data.empty()) return "0\r\n\r\n";  // the last chunk
    return fmt::format("{:x}\r\n", data.size()) + std::string(data) + "\r\n";
}

Result<std::unique_ptr<HttpServer>> HttpServer::listen(const std::string& path, HttpHandler handler) {
    // Someone answering there is another server; a socket file nobody answers on is stale, and replaced.
    if (sys::connect_unix(path)) return Error::from_string("another server listens on " + path, EADDRINUSE);
    UniqueFd fd = TRY(sys::listen_unix(path, 128, 0660));
    UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop) return Error::from_errno(errno, "eventfd");
    return std::unique_ptr<HttpServer>(new HttpServer(path, std::move(fd), std::move(stop), std::move(handler)));
}

namespace {

bool is_loopback(const sockaddr* addr) {
    if (addr->sa_family == AF_INET)
        return (ntohl(reinterpret_cast<const sockaddr_in*>(addr)->sin_addr.s_addr) >> 24) == 127;
    if (addr->sa_family == AF_INET6) {
        const auto& a6 = reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(&a6);
    }
    return false;
}

}  // namespace

Result<void> HttpServer::listen_tcp(const std::string& address) {
    size_t colon = address.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
        return Error::from_string("`" + address + "` is not HOST:PORT", EINVAL);
    std::string host = address.substr(0, colon), port = address.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0)
        return Error::from_string("`" + address + "`: " + ::gai_strerror(rc), EINVAL);
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owned(found, ::freeaddrinfo);
    for (addrinfo* a = found; a; a = a->ai_next)
        if (!is_loopback(a->ai_addr))
            return Error::from_string("`" + address +
                                          "` is not a loopback address: the API has no authentication, so husk serve "
                                          "listens on TCP on loopback only (127.0.0.0/8, ::1)",
                                      EINVAL);
    UniqueFd fd(::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return Error::from_errno(errno, "socket");
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), found->ai_addr, found->ai_addrlen) < 0) return Error::from_errno(errno, "bind " + address);
    if (::listen(fd.get(), 128) < 0) return Error::from_errno(errno, "listen on " + address);
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len);
    m_tcp_port = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                                  : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
    m_tcp = std::move(fd);
    return {};
}

HttpServer::HttpServer(std::string path, UniqueFd listener, UniqueFd stop_event, HttpHandler handler)
    : m_path(std::move(path)),
      m_listener(std::move(listener)),
      m_stop(std::move(stop_event)),
      m_handler(std::move(handler)) {}

HttpServer::~HttpServer() {
    stop();
    ::unlink(m_path.c_str());
}

void HttpServer::run() {
    while (!m_stopping) {
        // A negative fd (no TCP listener) is skipped by poll.
        pollfd p[3] = {{m_stop.get(), POLLIN, 0}, {m_listener.get(), POLLIN, 0}, {m_tcp.get(), POLLIN, 0}};
        if (::poll(p, 3, -1) < 0) {
            if (errno == EINTR) continue;
            log::error("poll: {}", std::strerror(errno));
            return;
        }
        if (p[0].revents) return;
        int ready = p[1].revents ? p[1].fd : p[2].revents ? p[2].fd : -1;
        if (ready < 0) continue;
        UniqueFd client(::accept4(ready, nullptr, nullptr, SOCK_CLOEXEC));
        if (!client) continue;
        // A client that stops reading holds its invocation's VM at most this long.
        timeval send_timeout{kSendTimeoutS, 0};
        ::setsockopt(client.get(), SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
        std::unique_lock lock(m_lock);
        if (m_connections >= kMaxConnections) {
            lock.unlock();
            (void)sys::send_all(client.get(), format_response(error_response(503, "too many connections"), false));
            continue;
        }
        m_connections++;
        lock.unlock();
        std::thread([this, fd = std::move(client)]() mutable {
            serve_connection(std::move(fd));
            std::lock_guard done(m_lock);
            m_connections--;
            m_changed.notify_all();
        }).detach();
    }
}

void HttpServer::serve_connection(UniqueFd fd) {
    std::string pending;
    char buf[65536];
    for (;;) {
        auto parser = new_parser();
        bool whole = false;
        for (;;) {
            auto fed = feed(*parser, pending);
            if (!fed) {
                (void)sys::send_all(fd.get(), format_response(error_response(400, fed.error().message()), false));
                return;
            }
            if ((whole = fed.value())) break;
            // Idle between requests: the stop event ends the connection.
            pollfd p[2] = {{fd.get(), POLLIN, 0}, {m_stop.get(), POLLIN, 0}};
            int n = ::poll(p, 2, kIdleTimeoutMs);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0 || p[1].revents) return;
            ssize_t got = ::recv(fd.get(), buf, sizeof buf, 0);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                if (!pending.empty() || parser->got_some())
                    (void)sys::send_all(fd.get(),
                                        format_response(error_response(400, "an incomplete HTTP request"), false));
                return;
            }
            pending.append(buf, size_t(got));
        }
        HttpRequest request = request_of(*parser);
        HttpResponse response = m_handler(request);
        bool keep = request.keep_alive && !m_stopping;
        if (response.stream) {
            if (!sys::send_all(fd.get(), format_stream_head(response, keep))) return;
            bool gone = false;
            response.stream([&](std::string_view data) {
                gone = gone || data.empty() || !sys::send_all(fd.get(), format_chunk(data));
                return !gone;
            });
            if (gone || !sys::send_all(fd.get(), format_chunk("")) || !keep) return;
            continue;
        }
        if (!sys::send_all(fd.get(), format_response(response, keep)) || !keep) return;
    }
}

void HttpServer::stop() {
    m_stopping = true;
    uint64_t one = 1;
    (void)!::write(m_stop.get(), &one, sizeof one);
    std::unique_lock lock(m_lock);
    m_changed.wait(lock, [&] { return m_connections == 0; });
}

}  // namespace husk::runtime::serve
