#include "tests/lib/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "vmm/base/system.h"

namespace husk::test {

HttpReply http_request(const std::string& socket, const std::string& method, const std::string& path,
                       const std::string& body) {
    HttpReply r;
    UniqueFd owned;
    if (socket.rfind("tcp:", 0) == 0) {
        std::string address = socket.substr(4);
        size_t colon = address.rfind(':');
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(uint16_t(std::atoi(address.substr(colon + 1).c_str())));
        owned = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (colon == std::string::npos || ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr) != 1 ||
            ::connect(owned.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
            r.raw = "connect " + address + ": " + std::strerror(errno);
            return r;
        }
    } else {
        auto connected = sys::connect_unix(socket);
        if (!connected) {
            r.raw = connected.error().message();
            return r;
        }
        owned = connected.release_value();
    }
    int fd = owned.get();
    std::string request = method + " " + path + " HTTP/1.1\r\nHost: husk\r\nConnection: close\r\n";
    if (!body.empty() || method == "POST") request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    request += "\r\n" + body;
    for (size_t sent = 0; sent < request.size();) {
        ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        sent += size_t(n);
    }
    char buf[65536];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        r.raw.append(buf, size_t(n));
    }
    owned.reset();
    if (r.raw.rfind("HTTP/1.1 ", 0) == 0) r.status = std::atoi(r.raw.c_str() + 9);
    size_t at = r.raw.find("\r\n\r\n");
    if (at == std::string::npos) return r;
    r.body = r.raw.substr(at + 4);
    if (r.raw.substr(0, at).find("Transfer-Encoding: chunked") == std::string::npos) return r;
    // Chunked: size in hex, CRLF, the bytes, CRLF; a size of 0 ends it.
    std::string decoded;
    for (size_t p = 0;;) {
        size_t eol = r.body.find("\r\n", p);
        if (eol == std::string::npos) break;
        size_t n = std::strtoul(r.body.substr(p, eol - p).c_str(), nullptr, 16);
        if (n == 0 || eol + 2 + n > r.body.size()) break;
        decoded.append(r.body, eol + 2, n);
        p = eol + 2 + n + 2;
    }
    r.body = std::move(decoded);
    return r;
}

}  // namespace husk::test
