// Terminals for containers: a host pty whose master goes to the caller's
// --console-socket (one SCM_RIGHTS message, as runc sends it) and whose slave
// becomes the stdio of husk-vmm or of an exec proxy.
#pragma once

#include <string>

#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk::runtime {

struct Pty {
    UniqueFd master;
    UniqueFd slave;
};

// A pty whose slave is raw: the guest's pty does the line discipline, the host's must not do it twice.
Result<Pty> open_pty();
Result<void> send_console(const std::string& socket_path, int master);
// In a child: new session, `slave` as the controlling terminal and fds 0-2.
void become_terminal_owner(int slave);

}  // namespace husk::runtime
