// HTTP/1.1 for `husk serve`, over a Unix socket (and TCP on loopback, if
// asked): Boost.Beast parses the
// requests and writes the responses; this file owns the sockets and threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk::runtime::serve {

struct HttpRequest {
    std::string method;  // "GET", "POST", ...
    std::string target;  // "/pools/fn/invoke"
    std::string body;
    bool keep_alive = true;
};

// Writes one piece of a streamed body; false once the client is gone.
using ChunkWriter = std::function<bool(std::string_view data)>;

struct HttpResponse {
    int status = 200;
    std::string body;
    std::string content_type = "application/json";
    // Set: the body is streamed (chunked transfer encoding) by this, after the
    // headers, instead of `body`.
    std::function<void(const ChunkWriter&)> stream;
};

inline constexpr size_t kMaxHeaderBytes = 16 * 1024;
inline constexpr size_t kMaxBodyBytes = 16 << 20;
inline constexpr size_t kMaxConnections = 256;
inline constexpr int kIdleTimeoutMs = 60000;
inline constexpr int kSendTimeoutS = 30;

// One whole request from `bytes` (for tests and the fuzz target): an error
// when it is malformed, incomplete, or over the limits above.
Result<HttpRequest> parse_request(std::string_view bytes);
// The bytes of a response (keep-alive or close as asked).
std::string format_response(const HttpResponse& response, bool keep_alive);
// The headers of a streamed response (Transfer-Encoding: chunked), and one chunk of its body.
std::string format_stream_head(const HttpResponse& response, bool keep_alive);
std::string format_chunk(std::string_view data);

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
public:
    // Listens on `socket_path` (mode 0660); a stale socket nobody answers on is replaced.
    static Result<std::unique_ptr<HttpServer>> listen(const std::string& socket_path, HttpHandler handler);
    // Also listens on TCP at `address`, HOST:PORT (`[::1]:PORT` for IPv6;
    // PORT 0 takes a free one). Loopback only: the API has no authentication,
    // so anyone who reaches it may run code in the pools' VMs.
    Result<void> listen_tcp(const std::string& address);
    // The port listen_tcp bound (0: none).
    uint16_t tcp_port() const { return m_tcp_port; }
    ~HttpServer();
    // Serves until stop(): a thread per connection, at most kMaxConnections.
    void run();
    // From any thread: stops accepting, lets each connection finish the
    // request it is serving, then closes it; returns when all are closed.
    void stop();

private:
    HttpServer(std::string path, UniqueFd listener, UniqueFd stop_event, HttpHandler handler);
    void serve_connection(UniqueFd fd);

    std::string m_path;
    UniqueFd m_listener, m_tcp, m_stop;
    uint16_t m_tcp_port = 0;
    HttpHandler m_handler;
    std::atomic<bool> m_stopping{false};
    std::mutex m_lock;
    std::condition_variable m_changed;
    size_t m_connections = 0;
};

}  // namespace husk::runtime::serve
