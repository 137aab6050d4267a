#include "agent/stdio_relay.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

#include "vmm/base/system.h"

namespace husk::agent {

void relay_output(int stream, int fd) {
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(stream, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        (void)sys::write_all(fd, std::string_view(buf, size_t(n)));
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
        if (!sys::write_all(stream, std::string_view(buf, size_t(n)))) return;
    }
    ::shutdown(stream, SHUT_WR);
}

}  // namespace husk::agent
