#include "agent/stdio_relay.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <string_view>

#include "vmm/base/system.h"

namespace husk::agent {

namespace {

// Writes all of `data` to `fd`, waiting out EAGAIN with poll (a non-blocking
// pipe the engine handed us). False once the reader is gone or `fd` failed.
bool write_fully(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n > 0) {
            data.remove_prefix(size_t(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            pollfd p{fd, POLLOUT, 0};
            // POLLERR/POLLHUP wake us too; the next write tells what happened.
            if (::poll(&p, 1, -1) < 0 && errno != EINTR) return false;
            if (p.revents & POLLNVAL) return false;
            continue;
        }
        return false;  // EPIPE (the reader closed), EIO, ENOSPC, ...
    }
    return true;
}

// SIGPIPE blocked in this thread for the guard's life. A SIGPIPE a write
// raised meanwhile stays pending on the thread and is taken back at the end,
// so it never reaches the process.
class SigpipeBlocked {
public:
    SigpipeBlocked() {
        sigemptyset(&m_pipe);
        sigaddset(&m_pipe, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &m_pipe, &m_old);
    }
    ~SigpipeBlocked() {
        timespec zero{0, 0};
        while (::sigtimedwait(&m_pipe, nullptr, &zero) == SIGPIPE) {
        }
        pthread_sigmask(SIG_SETMASK, &m_old, nullptr);
    }
    SigpipeBlocked(const SigpipeBlocked&) = delete;
    SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

private:
    sigset_t m_pipe, m_old;
};

}  // namespace

RelayEnd relay_output(int stream, int fd) {
    SigpipeBlocked no_sigpipe;
    char chunk[65536];
    for (;;) {
        ssize_t n = ::read(stream, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return RelayEnd::StreamEnded;
        if (!write_fully(fd, std::string_view(chunk, size_t(n)))) {
            // The guest's writer gets EPIPE through the stream, as it would
            // from the pipe itself (agent/PROTOCOL.md, "Stdio streams").
            ::shutdown(stream, SHUT_RDWR);
            return RelayEnd::ReaderGone;
        }
    }
}

void relay_input(int fd, int stream, int stop) {
    char buf[65536];
    for (;;) {
        pollfd fds[2] = {{fd, POLLIN, 0}, {stop, POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (fds[1].revents) return;
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) break;
        if (!sys::send_all(stream, std::string_view(buf, size_t(n)))) return;
    }
    ::shutdown(stream, SHUT_WR);
}

}  // namespace husk::agent
