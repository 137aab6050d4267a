#include "runtime/serve/http.h"

#include <fmt/format.h>
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
    UniqueFd fd = TRY(sys::listen_unix(path, 128));
    ::chmod(path.c_str(), 0660);
    UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop) return Error::from_errno(errno, "eventfd");
    return std::unique_ptr<HttpServer>(new HttpServer(path, std::move(fd), std::move(stop), std::move(handler)));
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
        pollfd p[2] = {{m_listener.get(), POLLIN, 0}, {m_stop.get(), POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            log::error("poll: {}", std::strerror(errno));
            return;
        }
        if (p[1].revents) return;
        if (!p[0].revents) continue;
        UniqueFd client(::accept4(m_listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
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
