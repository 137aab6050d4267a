#include "runtime/console.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "vmm/base/system.h"

namespace husk::runtime {

Result<Pty> open_pty() {
    int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) return Error::from_errno(errno, "open a pty");
    Pty p;
    p.master = UniqueFd(master);
    if (::grantpt(master) < 0 || ::unlockpt(master) < 0) return Error::from_errno(errno, "unlock the pty");
    char name[128];
    if (::ptsname_r(master, name, sizeof name) != 0) return Error::from_errno(errno, "ptsname");
    p.slave = TRY(sys::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
    termios t{};
    if (::tcgetattr(p.slave.get(), &t) == 0) {
        ::cfmakeraw(&t);
        ::tcsetattr(p.slave.get(), TCSANOW, &t);
    }
    return p;
}

Result<void> send_console(const std::string& socket_path, int master) {
    UniqueFd sock = TRY(sys::connect_unix(socket_path).context("connect to the console socket"));
    char name[] = "/dev/ptmx";
    iovec iov{name, sizeof name - 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &master, sizeof(int));
    if (::sendmsg(sock.get(), &msg, MSG_NOSIGNAL) < 0)
        return Error::from_errno(errno, "send the console to its socket");
    return {};
}

void become_terminal_owner(int slave) {
    ::setsid();
    ::ioctl(slave, TIOCSCTTY, 0);
    for (int i = 0; i < 3; ++i) ::dup2(slave, i);
}

}  // namespace husk::runtime
