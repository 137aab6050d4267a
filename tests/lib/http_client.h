// A minimal HTTP/1.1 client over a Unix socket (or TCP), for the tests and husk-bench
// that drive `husk serve`: one request per connection (Connection: close).
#pragma once

#include <string>

namespace husk::test {

struct HttpReply {
    int status = 0;    // 0: no response (the connect or the read failed; `raw` says why)
    std::string body;  // after the headers (a chunked body decoded)
    std::string raw;   // the whole response
};

// `socket`: a Unix socket's path, or tcp:IPV4:PORT.
HttpReply http_request(const std::string& socket, const std::string& method, const std::string& path,
                       const std::string& body = "");

}  // namespace husk::test
