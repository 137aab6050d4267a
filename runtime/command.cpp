#include "runtime/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "vmm/base/subprocess.h"

namespace husk::runtime {

Result<CommandResult> run_command(const std::vector<std::string>& argv, const std::string& input, int timeout_s,
                                  const std::vector<std::string>* env, const std::string& program,
                                  std::function<int()> before_exec) {
    int in[2], err[2];
    if (::pipe2(in, O_CLOEXEC) < 0) return Error::from_errno(errno, "pipe");
    if (::pipe2(err, O_CLOEXEC) < 0) {
        ::close(in[0]);
        ::close(in[1]);
        return Error::from_errno(errno, "pipe");
    }
    sys::SpawnOptions spawn;
    spawn.stdin_fd = in[0];
    spawn.stderr_fd = err[1];  // stdout: /dev/null
    spawn.env = env;
    spawn.program = program;
    spawn.die_with_parent = true;  // a helper does not outlive a husk command that was killed
    spawn.before_exec = std::move(before_exec);
    auto started = sys::spawn(argv, spawn);
    if (started.is_error()) {
        for (int fd : {in[0], in[1], err[0], err[1]}) ::close(fd);
        return started.release_error();
    }
    pid_t pid = started.value();
    ::close(in[0]);
    ::close(err[1]);
    // Feed stdin and read stderr together so neither side blocks on a full pipe.
    ::fcntl(in[1], F_SETFL, O_NONBLOCK);
    size_t written = 0;
    if (input.empty()) {
        ::close(in[1]);
        in[1] = -1;
    }
    CommandResult r;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    bool killed = false;
    for (;;) {
        pollfd fds[2] = {{err[0], POLLIN, 0}, {in[1], POLLOUT, 0}};
        int n = ::poll(fds, in[1] >= 0 ? 2 : 1, 100);
        if (n < 0 && errno != EINTR) break;
        if (in[1] >= 0 && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = ::write(in[1], input.data() + written, input.size() - written);
            if (w > 0) written += size_t(w);
            if (w < 0 || written == input.size()) {
                ::close(in[1]);
                in[1] = -1;
            }
        }
        if (fds[0].revents) {
            char buf[4096];
            ssize_t got = ::read(err[0], buf, sizeof buf);
            if (got <= 0) break;
            if (r.err.size() < 65536) r.err.append(buf, size_t(got));
        }
        if (!killed && std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            killed = true;
        }
    }
    if (in[1] >= 0) ::close(in[1]);
    ::close(err[0]);
    r.status = sys::wait_exit_status(pid);
    if (killed) r.err += "\n(killed after " + std::to_string(timeout_s) + " s)";
    return r;
}

std::string find_program(const std::string& name) {
    if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : std::string();
    const char* path = std::getenv("PATH");
    std::string dirs = path && *path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (size_t at = 0; at <= dirs.size();) {
        size_t end = dirs.find(':', at);
        if (end == std::string::npos) end = dirs.size();
        std::string candidate = dirs.substr(at, end - at) + "/" + name;
        if (end > at && ::access(candidate.c_str(), X_OK) == 0) return candidate;
        at = end + 1;
    }
    return {};
}

}  // namespace husk::runtime
