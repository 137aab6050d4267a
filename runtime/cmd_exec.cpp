// husk exec [--process FILE | ID COMMAND...] [--tty] [--detach] [--pid-file F] [--console-socket S] ...
//
// Runs another process in a running container, through an exec proxy (exec_proxy.h).
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <random>

#include "oci/spec.h"
#include "runtime/args.h"
#include "runtime/console.h"
#include "runtime/exec_proxy.h"
#include "runtime/handoff.h"
#include "runtime/runtime.h"
#include "runtime/state.h"
#include "vmm/base/system.h"
#include "vmm/client/agent_specs.h"

namespace husk::runtime {

namespace {

std::string random_exec_id() {
    std::random_device rd;
    char buf[32];
    std::snprintf(buf, sizeof buf, "exec-%08x%08x", rd(), rd());
    return buf;
}

Result<agent::ProcessSpec> exec_spec(const ArgParser& p, const ContainerState& state) {
    agent::ProcessSpec s;
    if (p.has("process")) {
        std::string text = TRY(sys::read_file(p.get("process"), 16 << 20).context("--process"));
        s = process_spec_for(TRY(oci::parse_process(text, p.get("process"))), random_exec_id());
    } else {
        s.exec_id = random_exec_id();
        const auto& pos = p.positionals();
        if (pos.size() < 2)
            return Error::from_string("exec: usage: husk exec [options] ID COMMAND [ARGS...] (or --process FILE)");
        s.args.assign(pos.begin() + 1, pos.end());
        // The container's own environment and user are the defaults, as runc takes them from config.json.
        if (auto spec = oci::load_spec(state.bundle); spec && spec.value().process) {
            s.env = spec.value().process->env;
            s.cwd = spec.value().process->cwd;
            s.uid = spec.value().process->user.uid;
            s.gid = spec.value().process->user.gid;
        }
        for (const auto& e : p.all("env")) s.env.push_back(e);
        if (p.has("cwd")) s.cwd = p.get("cwd");
        if (p.has("user")) {
            std::string u = p.get("user");
            auto colon = u.find(':');
            try {
                s.uid = uint32_t(std::stoul(u.substr(0, colon)));
                if (colon != std::string::npos) s.gid = uint32_t(std::stoul(u.substr(colon + 1)));
            } catch (...) {
                return Error::from_string("exec: --user wants UID[:GID], not `" + u + "`");
            }
        }
        s.terminal = p.get("tty") == "true";
        if (p.get("no-new-privs") == "true") s.no_new_privileges = true;
    }
    if (s.args.empty()) return Error::from_string("exec: no command to run");
    return s;
}

}  // namespace

Result<int> cmd_exec(const GlobalOptions& g, const Args& args) {
    ArgParser p("exec");
    p.value("process", "p").value("console-socket").value("pid-file").value("cwd").value("env", "e").value("user", "u");
    p.flag("tty", "t").flag("detach", "d").flag("no-new-privs");
    p.ignored_value("process-label").ignored_value("apparmor").ignored_value("cap").ignored_value("preserve-fds");
    p.ignored_value("additional-gids").ignored_value("cgroup").ignored_flag("ignore-paused");
    TRY(p.parse(args));
    if (p.positionals().empty()) return Error::from_string("exec: a container ID is required");
    auto state = TRY(load_state(g.root, p.positionals()[0]));
    std::string status = live_status(state);
    if (status != "running") return Error::from_string("container `" + state.id + "` is " + status + ", not running");
    agent::ProcessSpec spec = TRY(exec_spec(p, state));

    std::optional<Pty> pty;
    if (spec.terminal && p.has("console-socket")) pty = TRY(open_pty());
    bool detach = p.get("detach") == "true";
    if (!detach && !pty) return run_exec_proxy(state, spec, -1);

    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) < 0) return Error::from_errno(errno, "pipe");
    UniqueFd ready_r(ready[0]), ready_w(ready[1]);
    pid_t pid = ::fork();
    if (pid < 0) return Error::from_errno(errno, "fork");
    if (pid == 0) {
        ready_r.reset();
        if (pty)
            become_terminal_owner(pty->slave.get());
        else
            ::setsid();
        auto exit_status = run_exec_proxy(state, spec, ready_w.release());
        ::_exit(exit_status ? exit_status.value() : 255);
    }
    ready_w.reset();
    if (pty) {
        pty->slave.reset();
        TRY(send_console(p.get("console-socket"), pty->master.get()));
    }
    TRY(wait_ready(ready_r.get(), pid, "the exec proxy"));
    if (p.has("pid-file")) TRY(write_pid_file(p.get("pid-file"), pid));
    state.exec_pids.push_back(pid);
    (void)save_state(state);
    if (detach) return 0;
    // A terminal without --detach: we stay until the proxy ends and pass its status on.
    int wstatus = 0;
    ::waitpid(pid, &wstatus, 0);
    return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
}

}  // namespace husk::runtime
