#include "tests/lib/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "vmm/base/subprocess.h"

namespace husk::test {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// sys::spawn with the given fds as 0, 1, 2 (-1: /dev/null); -1 when it
// could not start, with the reason in `error`.
// With `own_group`, the child leads a process group of its own, so that a
// hang guard can kill it with everything it started.
pid_t spawn(const std::vector<std::string>& argv, int in, int out, int err, std::string* error = nullptr,
            bool own_group = false) {
    sys::SpawnOptions o;
    o.stdin_fd = in;
    o.stdout_fd = out;
    o.stderr_fd = err;
    if (own_group) {
        o.before_exec = [] { return setpgid(0, 0) < 0 ? errno : 0; };
        o.before_exec_what = "put the child in a process group of its own";
    }
    auto pid = sys::spawn(argv, o);
    if (pid) return pid.value();
    if (error) *error = pid.error().message();
    return -1;
}

// Writes all of `data` to a pipe. A child that has died makes this return
// false (EPIPE) instead of killing the test binary with SIGPIPE: the signal is
// blocked on this thread for the write and a pending one is taken back.
bool write_all(int fd, const std::string& data) {
    sigset_t pipe_only, old;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    size_t done = 0;
    bool ok = true;
    while (done < data.size()) {
        ssize_t n = write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            ok = false;
            break;
        }
        done += size_t(n);
    }
    if (!ok && errno == EPIPE && !sigismember(&old, SIGPIPE)) {
        timespec zero{};
        while (sigtimedwait(&pipe_only, nullptr, &zero) == SIGPIPE) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return ok;
}

// Where each thread of a hung child, and of every process in its group,
// waits: for the test's failure message.
std::string threads_of(pid_t pid) {
    std::string text = "\n[hung: the threads of the child's process group, where they wait]\n";
    std::error_code ec;
    auto read = [](const std::filesystem::path& p) {
        std::ifstream f(p);
        return std::string(std::istreambuf_iterator<char>(f), {});
    };
    for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
        std::string stat = read(proc.path() / "stat");
        // pid (comm) state ppid pgrp ...: the comm may hold spaces, so parse after its ')'.
        size_t close = stat.rfind(')');
        if (close == std::string::npos) continue;
        char state = 0;
        int ppid = 0, pgrp = 0;
        if (std::sscanf(stat.c_str() + close + 1, " %c %d %d", &state, &ppid, &pgrp) != 3 || pgrp != pid) continue;
        std::string cmdline = read(proc.path() / "cmdline");
        for (char& c : cmdline)
            if (c == '\0') c = ' ';
        text += "pid " + proc.path().filename().string() + ": " + cmdline.substr(0, 200) + "\n";
        for (const auto& task : std::filesystem::directory_iterator(proc.path() / "task", ec)) {
            std::string comm = read(task.path() / "comm"), wchan = read(task.path() / "wchan");
            if (!comm.empty() && comm.back() == '\n') comm.pop_back();
            text +=
                "  " + task.path().filename().string() + " " + comm + ": " + wchan + "\n" + read(task.path() / "stack");
        }
    }
    return text;
}

}  // namespace

ProcessResult run_process(const std::vector<std::string>& argv, const RunOptions& o) {
    ProcessResult r;
    int out[2], err[2], in[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(in, O_CLOEXEC)) return r;
    if (o.nonblocking_output)
        for (int fd : {out[1], err[1]}) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    auto start = Clock::now();
    pid_t pid = spawn(argv, in[0], out[1], err[1], &r.err, /*own_group=*/true);
    close(out[1]);
    close(err[1]);
    close(in[0]);
    if (pid < 0) {
        for (int fd : {out[0], err[0], in[1]}) close(fd);
        r.exit_status = 127;
        r.exit_ms = ms_since(start);
        return r;
    }
    if (!o.stdin_data.empty()) write_all(in[1], o.stdin_data);
    close(in[1]);

    bool signalled = false;
    pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    int open_fds = 2;
    // Once the hang guard has fired, what is left of the output is read for
    // a few seconds more: a grandchild that outlived the kill (one that
    // left the group) must not hold the test forever.
    constexpr double kDrainAfterKillMs = 5000;
    while (open_fds > 0) {
        if (r.timed_out && ms_since(start) > o.timeout_seconds * 1000.0 + kDrainAfterKillMs) {
            r.err += "\n[hung: the output was still open 5 s after the kill; not read further]\n";
            break;
        }
        int n = poll(fds, 2, 100);
        if (n < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
            char buf[4096];
            ssize_t got = read(fds[i].fd, buf, sizeof buf);
            if (got <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                --open_fds;
                continue;
            }
            (i == 0 ? r.out : r.err).append(buf, size_t(got));
            if (o.read_pause_us) usleep(useconds_t(o.read_pause_us));
            if (i == 0 && o.close_stdout_after && r.out.size() >= o.close_stdout_after) {
                close(fds[i].fd);
                fds[i].fd = -1;
                --open_fds;
                continue;
            }
            if (i == 0 && r.marker_ms < 0 && !o.stdout_marker.empty() &&
                r.out.find(o.stdout_marker) != std::string::npos)
                r.marker_ms = ms_since(start);
        }
        if (o.signal && !signalled && !o.signal_after.empty() && r.err.find(o.signal_after) != std::string::npos) {
            kill(pid, o.signal);
            signalled = true;
        }
        if (!r.timed_out && ms_since(start) > o.timeout_seconds * 1000.0) {
            r.timed_out = true;
            r.err += "\n[hung: killed after " + std::to_string(o.timeout_seconds) + " s]" + threads_of(pid);
            kill(-pid, SIGKILL);  // the child and everything it started (docker, ctr, ...)
            kill(pid, SIGKILL);
        }
    }
    for (auto& f : fds)
        if (f.fd >= 0) close(f.fd);
    r.exit_status = sys::wait_exit_status(pid, &r.term_signal);
    r.exit_ms = ms_since(start);
    return r;
}

RunningProcess::RunningProcess(const std::vector<std::string>& argv, bool stdin_pipe) {
    int out[2];
    if (pipe2(out, O_CLOEXEC)) return;
    int in[2] = {-1, -1};
    if (stdin_pipe && pipe2(in, O_CLOEXEC)) return;
    m_pid = spawn(argv, in[0], out[1], -1);
    close(out[1]);
    if (in[0] >= 0) close(in[0]);
    m_stdin = in[1];
    m_stdout = out[0];
}

bool RunningProcess::write_stdin(const std::string& data) {
    return write_all(m_stdin, data);
}

RunningProcess::~RunningProcess() {
    if (m_pid > 0) {
        kill(m_pid, SIGKILL);
        sys::wait_exit_status(m_pid);
    }
    if (m_stdout >= 0) close(m_stdout);
    if (m_stdin >= 0) close(m_stdin);
}

bool RunningProcess::wait_for_stdout(const std::string& text, int timeout_seconds) {
    auto start = Clock::now();
    while (m_seen.find(text) == std::string::npos) {
        if (ms_since(start) > timeout_seconds * 1000.0) return false;
        pollfd p{m_stdout, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        char buf[1024];
        ssize_t n = read(m_stdout, buf, sizeof buf);
        if (n <= 0) return false;
        m_seen.append(buf, size_t(n));
    }
    return true;
}

int RunningProcess::wait_exit(int timeout_seconds) {
    auto start = Clock::now();
    for (;;) {
        int status = 0;
        pid_t r = waitpid(m_pid, &status, WNOHANG);
        if (r == m_pid) {
            m_pid = -1;
            char buf[4096];
            ssize_t n;
            while ((n = read(m_stdout, buf, sizeof buf)) > 0) m_seen.append(buf, size_t(n));
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        if (ms_since(start) > timeout_seconds * 1000.0) kill(m_pid, SIGKILL);
        pollfd p{m_stdout, POLLIN, 0};
        if (poll(&p, 1, 50) > 0) {
            char buf[4096];
            ssize_t n = read(m_stdout, buf, sizeof buf);
            if (n > 0) m_seen.append(buf, size_t(n));
        }
    }
}

void Daemon::start(const std::vector<std::string>& argv, const std::string& log,
                   const std::vector<std::string>& extra_env) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) env.emplace_back(*e);
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    sys::SpawnOptions o;
    o.env = &env;
    o.stdout_fd = o.stderr_fd = fd;
    // HUSK_ENGINE_CPU=N: the daemon, and every shim and container VM it
    // starts, runs on CPU N only (see Engines::start_docker).
    int cpu = -1;
    if (const char* c = getenv("HUSK_ENGINE_CPU"); c && *c) cpu = atoi(c);
    o.before_exec = [cpu] {
        if (setsid() < 0) return errno;
        if (cpu >= 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            if (sched_setaffinity(0, sizeof one, &one) < 0) return errno;
        }
        return 0;
    };
    o.before_exec_what = "start the daemon in its own session (and on HUSK_ENGINE_CPU)";
    auto pid = sys::spawn(argv, o);
    if (fd >= 0) close(fd);
    m_pid = pid ? pid.value() : -1;
}

void Daemon::stop() {
    if (m_pid <= 0) return;
    kill(-m_pid, SIGTERM);
    for (int i = 0; i < 100 && waitpid(m_pid, nullptr, WNOHANG) == 0; ++i) usleep(100 * 1000);
    kill(-m_pid, SIGKILL);
    waitpid(m_pid, nullptr, 0);
    m_pid = -1;
}

bool wait_until(const std::function<bool()>& ready, int seconds) {
    // By the clock, not by a count of tries: a try that runs an engine's
    // CLI takes a second or more in the rig, and "60 s" of tries ran ten
    // times that (a lifecycle test waited past its 600 s deadline so).
    auto deadline = Clock::now() + std::chrono::seconds(seconds);
    for (;;) {
        if (ready()) return true;
        if (Clock::now() >= deadline) return false;
        usleep(100 * 1000);
    }
}

std::string env_or(const char* name, const std::string& fallback) {
    const char* v = getenv(name);
    return v && *v ? v : fallback;
}

ProcessResult shell(const std::string& command, const std::string& input, int timeout_seconds) {
    RunOptions o;
    o.timeout_seconds = timeout_seconds;
    o.stdin_data = input;
    return run_process({"/bin/sh", "-c", command}, o);
}

std::string single_quoted(const std::string& text) {
    std::string out = "'";
    for (char ch : text) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    return out + "'";
}

// The daemons pass their environment down to the shims and husk: every
// container VM's log is kept in DIR/vmm-logs (runtime/cmd_create.cpp).
std::string newest_vmm_log_tail(const std::string& logs, size_t lines) {
    std::error_code ec;
    std::filesystem::path newest;
    std::filesystem::file_time_type when{};
    for (const auto& e : std::filesystem::directory_iterator(logs, ec))
        if (newest.empty() || e.last_write_time(ec) > when) {
            newest = e.path();
            when = e.last_write_time(ec);
        }
    if (newest.empty()) return {};
    return "\n[husk-vmm log " + newest.string() + ", last lines]\n" +
           shell("grep -v '\"level\":\"debug\"' " + newest.string() + " | tail -" + std::to_string(lines)).out;
}

std::string vmm_errors_since(const std::string& logs, std::filesystem::file_time_type since) {
    std::error_code ec;
    std::string out;
    for (const auto& e : std::filesystem::directory_iterator(logs, ec)) {
        if (e.last_write_time(ec) < since) continue;
        std::string errors = shell("grep '\"level\":\"error\"' " + e.path().string() + " | head -20").out;
        if (!errors.empty()) out += "\n[husk-vmm log " + e.path().string() + ", errors]\n" + errors;
    }
    return out;
}

bool Engines::install_husk(const std::string& runtime, const std::string& engine_flag, const std::string& file,
                           const std::string& registered) {
    auto installed = shell("HUSK_INSTALL_ROOT=" + dir + "/install-root " + runtime + " install " + engine_flag +
                           " --path " + runtime + " 2>&1");
    if (installed.exit_status == 0 && shell("grep -q " + single_quoted(registered) + " " + file).exit_status == 0)
        return true;
    error = "husk install " + engine_flag + " did not register husk in " + file + ": " + installed.out +
            shell("cat " + file + " 2>&1").out;
    return false;
}

bool Engines::start_docker(const std::string& runtime) {
    mkdir(dir.c_str(), 0755);
    mkdir(vmm_logs().c_str(), 0755);
    // Docker's default networking (its bridge, iptables, published ports): what the
    // kernel needs for it, and for husk's redirects, loaded first (the rig has modprobe).
    shell(
        "modprobe -a bridge br_netfilter veth nf_nat iptable_nat iptable_filter xt_MASQUERADE xt_addrtype "
        "xt_conntrack sch_ingress cls_u32 act_mirred tun >/dev/null 2>&1");
    // The daemon's own settings, then husk registered in that file by `husk install --docker` (its /etc
    // under HUSK_INSTALL_ROOT): dockerd reads what install wrote, so every Docker test runs through it.
    std::string etc = dir + "/install-root/etc/docker";
    std::string daemon_json = etc + "/daemon.json";
    {
        shell("mkdir -p " + etc);
        std::string config = "{\n  \"data-root\": \"" + dir + "/docker-data\", \"exec-root\": \"" + dir +
                             "/docker-exec\",\n"
                             "  \"pidfile\": \"" +
                             dir + "/dockerd.pid\", \"hosts\": [\"unix://" + dir + "/docker.sock\"]\n}\n";
        int fd = open(daemon_json.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, config.data(), config.size()) != ssize_t(config.size())) return false;
        close(fd);
    }
    if (!install_husk(runtime, "--docker", daemon_json, "\"husk\"")) return false;
    dockerd.start({"dockerd", "--config-file", daemon_json}, dir + "/dockerd.log", {"HUSK_VMM_LOG_DIR=" + vmm_logs()});
    docker = "/usr/bin/docker -H unix://" + dir + "/docker.sock";
    if (wait_until([&] { return shell(docker + " info >/dev/null 2>&1").exit_status == 0; }, 120)) return true;
    error = "dockerd did not start: " + shell("tail -20 " + dir + "/dockerd.log").out;
    return false;
}

bool Engines::start_containerd() {
    mkdir(dir.c_str(), 0755);
    mkdir(vmm_logs().c_str(), 0755);
    std::string config = "version = 2\nroot = \"" + dir + "/containerd-root\"\nstate = \"" + dir +
                         "/containerd-state\"\n[grpc]\n  address = \"" + dir + "/containerd.sock\"\n" +
                         "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"" + dir + "/containerd-opt\"\n";
    int fd = open((dir + "/containerd.toml").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, config.data(), config.size()) != ssize_t(config.size())) return false;
    close(fd);
    containerd.start({"containerd", "--config", dir + "/containerd.toml"}, dir + "/containerd.log",
                     {"HUSK_VMM_LOG_DIR=" + vmm_logs()});
    ctr = "ctr -a " + dir + "/containerd.sock";
    if (wait_until([&] { return shell(ctr + " version >/dev/null 2>&1").exit_status == 0; }, 60)) return true;
    error = "containerd did not start: " + shell("tail -20 " + dir + "/containerd.log").out;
    return false;
}

bool Engines::start_podman(const std::string& runtime) {
    mkdir(dir.c_str(), 0755);
    mkdir(vmm_logs().c_str(), 0755);
    // No daemon to pin (Daemon::start): each podman command, and the conmon and container VM it starts, runs
    // on HUSK_ENGINE_CPU.
    std::string cpu = env_or("HUSK_ENGINE_CPU");
    // husk registered as Podman's runtime "husk" by `husk install --podman` (its /etc under
    // HUSK_INSTALL_ROOT), and Podman told to read that file (CONTAINERS_CONF): `--runtime husk`
    // then runs through what install wrote.
    std::string etc = dir + "/install-root/etc/containers", dropin = etc + "/containers.conf.d/husk.conf";
    shell("mkdir -p " + etc);
    if (!install_husk(runtime, "--podman", dropin, "^husk = ")) return false;
    podman = (cpu.empty() ? "" : "taskset -c " + cpu + " ") + "env HUSK_VMM_LOG_DIR=" + vmm_logs() +
             " CONTAINERS_CONF=" + dropin + " podman --root " + dir + "/podman-root --runroot " + dir +
             "/podman-run --storage-driver vfs --cgroup-manager cgroupfs --events-backend file --tmpdir " + dir +
             "/podman-tmp";
    auto r = shell(podman + " info >/dev/null");
    if (r.exit_status == 0) return true;
    error = "podman does not work here: " + r.out + r.err;
    return false;
}

// The busybox tree as a tar, imported by `cli` ("docker", "podman" command prefix) as `image`.
bool Engines::import_busybox_tar(const std::string& source_dir, const std::string& cli, const std::string& image) {
    auto r = shell("rm -rf " + dir + "/tree && " + source_dir + "/tests/guests/rootfs/mkrootfs --dir " + dir +
                   "/tree && tar -C " + dir + "/tree -cf " + dir + "/busybox.tar . && " + cli + " import " + dir +
                   "/busybox.tar " + image);
    if (r.exit_status != 0) error = "import failed: " + r.out + r.err;
    return r.exit_status == 0;
}

bool Engines::import_busybox_podman(const std::string& source_dir) {
    return import_busybox_tar(source_dir, podman, "localhost/busybox:husk");
}

bool Engines::import_busybox_docker(const std::string& source_dir) {
    return import_busybox_tar(source_dir, docker, "busybox:husk");
}

bool Engines::import_busybox_containerd(const std::string& source_dir) {
    auto r = shell(source_dir + "/tests/rigtier/make-oci-image " + dir +
                   "/busybox-oci.tar docker.io/library/busybox:husk && " + ctr + " images import " + dir +
                   "/busybox-oci.tar");
    if (r.exit_status != 0) error = "ctr images import failed: " + r.out + r.err;
    return r.exit_status == 0;
}

}  // namespace husk::test
