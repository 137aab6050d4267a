#include "vmm/api/api_server.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>

#include "vmm/base/guarded_thread.h"
#include "vmm/base/json_text.h"
#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/client/api_client.h"
#include "vmm/seccomp/seccomp.h"

namespace husk {

Result<std::unique_ptr<ApiServer>> ApiServer::create(const std::string& path, Handler handler) {
    UniqueFd listener = TRY(sys::listen_unix(path, 16).context("API socket"));
    UniqueFd stop = TRY(sys::eventfd(0, EFD_NONBLOCK));
    auto server =
        std::unique_ptr<ApiServer>(new ApiServer(path, std::move(listener), std::move(stop), std::move(handler)));
    return server;
}

void ApiServer::start() {
    // The last resort: an exception past serve_client's own catch stops husk-vmm cleanly.
    if (!m_thread.joinable())
        m_thread = std::thread([this] {
            run_guarded(
                "API", [this] { serve(); }, [] { ::kill(::getpid(), SIGTERM); });
        });
}

ApiServer::ApiServer(std::string path, UniqueFd listener, UniqueFd stop, Handler handler)
    : m_path(std::move(path)),
      m_listener(std::move(listener)),
      m_stop(std::move(stop)),
      m_handler(std::move(handler)) {}

ApiServer::~ApiServer() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(m_stop.get(), &one, sizeof one);
    if (m_thread.joinable()) m_thread.join();
    ::unlink(m_path.c_str());
}

void ApiServer::serve() {
    // Signals are the main thread's (it waits for them); this thread may start
    // before the main thread blocks them, so it blocks them itself.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    // Requests are parsed here: this thread is filtered like husk-vmm's main thread.
    if (auto r = seccomp::install(seccomp::Thread::Control); r.is_error()) {
        log::error("API thread: {}; stopping", r.error().message());
        ::kill(::getpid(), SIGTERM);
        return;
    }
    for (;;) {
        pollfd fds[2] = {{m_listener.get(), POLLIN, 0}, {m_stop.get(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds[1].revents) return;
        int fd = ::accept4(m_listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        UniqueFd client(fd);
        serve_client(fd);
    }
}

void ApiServer::serve_client(int fd) {
    std::string buffer;
    for (;;) {
        pollfd fds[2] = {{fd, POLLIN, 0}, {m_stop.get(), POLLIN, 0}};
        if (::poll(fds, 2, 30000) <= 0) return;  // an idle client does not hold the socket forever
        if (fds[1].revents) return;
        char chunk[4096];
        ssize_t n = ::read(fd, chunk, sizeof chunk);
        if (n <= 0) return;
        buffer.append(chunk, size_t(n));
        if (buffer.size() > kMaxApiLine) {
            (void)sys::send_all(fd, std::string(R"({"error":"request too long"})") + "\n");
            return;
        }
        size_t nl;
        while ((nl = buffer.find('\n')) != std::string::npos) {
            std::string line = buffer.substr(0, nl);
            buffer.erase(0, nl + 1);
            nlohmann::json reply;
            try {
                reply = m_handler(nlohmann::json::parse(line));
            } catch (const nlohmann::json::exception& e) {
                reply = {{"error", std::string("bad request: ") + e.what()}};
            } catch (const std::exception& e) {
                reply = {{"error", std::string("request failed: ") + e.what()}};
            }
            if (!sys::send_all(fd, json_text(reply) + "\n")) return;
        }
    }
}

}  // namespace husk
