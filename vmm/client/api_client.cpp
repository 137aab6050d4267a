#include "vmm/client/api_client.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include "vmm/base/json_text.h"
#include "vmm/base/system.h"

namespace husk {

Result<nlohmann::json> api_call(const std::string& path, const nlohmann::json& request, int timeout_ms) {
    UniqueFd fd = TRY(sys::connect_unix(path).context("connect to husk-vmm's API socket"));
    TRY(sys::send_all(fd.get(), json_text(request) + "\n"));
    std::string line;
    for (;;) {
        pollfd p{fd.get(), POLLIN, 0};
        int r = ::poll(&p, 1, timeout_ms);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return Error::from_string("husk-vmm did not answer in time", ETIMEDOUT);
        char chunk[4096];
        ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return Error::from_string("husk-vmm closed its API connection", ECONNRESET);
        line.append(chunk, size_t(n));
        if (auto nl = line.find('\n'); nl != std::string::npos) {
            line.resize(nl);
            break;
        }
        if (line.size() > kMaxApiLine) return Error::from_string("husk-vmm's reply is too long", EPROTO);
    }
    try {
        auto reply = nlohmann::json::parse(line);
        if (reply.is_object() && reply.contains("error") && reply["error"].is_string())
            return Error::from_string(reply["error"].get<std::string>());
        return reply;
    } catch (const nlohmann::json::exception&) {
        return Error::from_string("husk-vmm's reply is not JSON", EPROTO);
    }
}

}  // namespace husk
