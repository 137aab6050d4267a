#include "runtime/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace husk::runtime {

Result<CommandResult> run_command(const std::vector<std::string>& argv, const std::string& input, int timeout_s,
                                  const std::vector<std::string>* env, const std::string& program) {
    int in[2], err[2];
    if (::pipe2(in, O_CLOEXEC) < 0) return Error::from_errno(errno, "pipe");
    if (::pipe2(err, O_CLOEXEC) < 0) {
        ::close(in[0]);
        ::close(in[1]);
        return Error::from_errno(errno, "pipe");
    }
    pid_t pid = ::fork();
    if (pid < 0) return Error::from_errno(errno, "fork");
    if (pid == 0) {
        // A helper does not outlive a husk command that was killed.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null_fd = ::open("/dev/null", O_WRONLY);
        ::dup2(in[0], 0);
        ::dup2(null_fd, 1);
        ::dup2(err[1], 2);
        std::vector<char*> args, envp;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        const char* file = program.empty() ? args[0] : program.c_str();
        if (env) {
            for (const auto& e : *env) envp.push_back(const_cast<char*>(e.c_str()));
            envp.push_back(nullptr);
            ::execvpe(file, args.data(), envp.data());
        } else {
            ::execvp(file, args.data());
        }
        std::string m = argv[0] + ": " + std::string(strerror(errno)) + "\n";
        [[maybe_unused]] ssize_t w = ::write(2, m.data(), m.size());
        ::_exit(127);
    }
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
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (killed) r.err += "\n(killed after " + std::to_string(timeout_s) + " s)";
    return r;
}

}  // namespace husk::runtime
