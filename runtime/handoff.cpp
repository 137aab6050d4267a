#include "runtime/handoff.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "vmm/base/system.h"

namespace husk::runtime {

Result<void> wait_ready(int fd, pid_t pid, const std::string& who) {
    std::string reply;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        int n = ::poll(&p, 1, 200);
        if (n < 0 && errno != EINTR) return Error::from_errno(errno, "wait for " + who);
        if (n > 0) {
            char buf[4096];
            ssize_t got = ::read(fd, buf, sizeof buf);
            if (got > 0) {
                reply.append(buf, size_t(got));
                continue;
            }
            break;  // EOF: the child said its word, or died
        }
        if (std::chrono::steady_clock::now() > deadline)
            return Error::from_string(who + " was not ready within 3 minutes", ETIMEDOUT);
    }
    while (!reply.empty() && reply.back() == '\n') reply.pop_back();
    if (reply == "ok") return {};
    if (reply.rfind("error: ", 0) == 0) return Error::from_string(reply.substr(7));
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid)
        return Error::from_string(who + " exited with status " +
                                  std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)) +
                                  " before it was ready (see the log)");
    return Error::from_string(who + " closed its ready pipe without a word");
}

Result<void> write_pid_file(const std::string& path, pid_t pid) {
    std::string tmp = path + ".husk-tmp";
    {
        auto fd = TRY(sys::open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644).context("--pid-file"));
        TRY(sys::write_all(fd.get(), std::to_string(pid)));
    }
    if (::rename(tmp.c_str(), path.c_str()) < 0) return Error::from_errno(errno, "write --pid-file");
    return {};
}

}  // namespace husk::runtime
