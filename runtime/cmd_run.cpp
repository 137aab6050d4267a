// husk run [--bundle DIR] [--detach] [--pid-file F] [--console-socket S] ID:
// create + start; without --detach, waits for the container, passes signals on,
// deletes it and exits with its status.
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/create.h"
#include "vmm/base/log.h"
#include "vmm/base/system.h"

namespace husk::runtime {

Result<int> cmd_run(const GlobalOptions& g, const Args& args) {
    CreateOptions o = TRY(parse_create_options(args, "run"));
    sigset_t forwarded;
    sigemptyset(&forwarded);
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&forwarded, s);
    if (o.foreground) ::sigprocmask(SIG_BLOCK, &forwarded, nullptr);
    auto state = TRY(create_container(g, o));
    if (auto r = start_container(state); !r) {
        (void)destroy_container(state);
        return r.release_error();
    }
    if (!o.foreground) return 0;
    // husk-vmm is our child here: wait for it, passing our signals to it (it passes them to the process).
    int status = 0;
    for (;;) {
        pid_t r = ::waitpid(state.pid, &status, WNOHANG);
        if (r == state.pid) break;
        timespec tick{0, 50 * 1000 * 1000};
        int sig = ::sigtimedwait(&forwarded, nullptr, &tick);
        if (sig > 0) ::kill(state.pid, sig);
    }
    if (WIFSIGNALED(status)) {
        std::string log_path = vmm_log_path(g, state.dir, state.id);
        // husk-vmm passes the process's status on as its own exit status: a signal means husk-vmm itself died,
        // and the VM with it. Its log goes with the state directory, so its end is shown now.
        int sig = WTERMSIG(status);
        log::error("husk-vmm, the container's VM, was killed by signal {} ({}); the end of its log ({}):\n{}", sig,
                   sigabbrev_np(sig) ? sigabbrev_np(sig) : "?", log_path, sys::read_tail(log_path));
    }
    (void)destroy_container(state);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace husk::runtime
