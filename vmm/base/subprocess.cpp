#include "vmm/base/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace husk::sys {
namespace {

// What the child tells the parent through the report pipe when it cannot exec.
struct Failure {
    int step;  // 0: exec, 1: before_exec, 2: stdio
    int error;
};

[[noreturn]] void fail(int report, int step, int error) {
    Failure f{step, error};
    [[maybe_unused]] ssize_t n = ::write(report, &f, sizeof f);
    ::_exit(127);
}

}  // namespace

Result<pid_t> spawn(const std::vector<std::string>& argv, const SpawnOptions& o) {
    if (argv.empty()) return Error::from_string("spawn: no program", EINVAL);
    // Built before fork: the child only calls async-signal-safe functions.
    std::vector<char*> args, envp;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (o.env) {
        for (const auto& e : *o.env) envp.push_back(const_cast<char*>(e.c_str()));
        envp.push_back(nullptr);
    }
    const char* file = o.program.empty() ? args[0] : o.program.c_str();
    int report[2];
    if (::pipe2(report, O_CLOEXEC) < 0) return Error::from_errno(errno, "pipe");
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
        int e = errno;
        ::close(report[0]);
        ::close(report[1]);
        return Error::from_errno(e, "fork");
    }
    if (pid == 0) {
        // Out of the way of the fds the child is given (and of before_exec's dup2s).
        int r = ::fcntl(report[1], F_DUPFD_CLOEXEC, 64);
        if (r < 0) r = report[1];
        if (o.die_with_parent) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) ::_exit(127);  // the parent is already gone
        }
        int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        int fds[3] = {o.stdin_fd, o.stdout_fd, o.stderr_fd};
        // Moved up first, so that dup2 onto 0..2 cannot clobber a source still needed.
        for (int& fd : fds) {
            if (fd < 0) fd = devnull;
            if (fd >= 0 && fd < 3) fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
            if (fd < 0) fail(r, 2, errno);
        }
        for (int i = 0; i < 3; ++i)
            if (::dup2(fds[i], i) < 0) fail(r, 2, errno);
        if (o.before_exec)
            if (int e = o.before_exec(); e != 0) fail(r, 1, e);
        // SIG_IGN and the signal mask survive exec: give the program the defaults.
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        if (o.env)
            ::execvpe(file, args.data(), envp.data());
        else
            ::execvp(file, args.data());
        fail(r, 0, errno);
    }
    ::close(report[1]);
    Failure f{};
    ssize_t got;
    while ((got = ::read(report[0], &f, sizeof f)) < 0 && errno == EINTR) {
    }
    ::close(report[0]);
    if (got == ssize_t(sizeof f)) {
        wait_exit_status(pid);
        switch (f.step) {
            case 0:
                return Error::from_errno(f.error, std::string("exec ") + file);
            case 1:
                return Error::from_errno(f.error, o.before_exec_what);
            default:
                return Error::from_errno(f.error, "set up the stdio of " + argv[0]);
        }
    }
    return pid;
}

int wait_exit_status(pid_t pid, int* term_signal) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (term_signal) *term_signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace husk::sys
