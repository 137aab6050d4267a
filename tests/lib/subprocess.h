// Runs a program with captured stdout/stderr, for the end-to-end tests and husk-bench.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace husk::test {

struct ProcessResult {
    int exit_status = -1;  // exit code, or 128+N for signal N
    int term_signal = 0;   // N when a signal ended it (exit_status alone cannot tell 141 from SIGPIPE)
    std::string out, err;
    bool timed_out = false;
    double exit_ms = -1;    // launch -> exit
    double marker_ms = -1;  // launch -> RunOptions::stdout_marker first seen on stdout
};

struct RunOptions {
    int timeout_seconds = 120;  // a hang guard, not a timing assertion
    // Sends this signal once the child's stderr contains `signal_after` (0: never).
    int signal = 0;
    std::string signal_after;
    std::string stdin_data;
    std::string stdout_marker;
    // The child's stdout and stderr as an engine's shim may hand them over:
    // O_NONBLOCK pipes (the flag is on the pipe, so the child sees it too).
    bool nonblocking_output = false;
    // A slow reader: pauses this long after each read of the child's output.
    int read_pause_us = 0;
    // A reader that goes away: closes the child's stdout once it read this many bytes (0: never).
    size_t close_stdout_after = 0;
};

ProcessResult run_process(const std::vector<std::string>& argv, const RunOptions& options = {});

// A child started with stdin from /dev/null and stdout on a pipe; killed (SIGKILL) and reaped on destruction.
class RunningProcess {
public:
    // With `stdin_pipe`, write_stdin() feeds the child's stdin.
    explicit RunningProcess(const std::vector<std::string>& argv, bool stdin_pipe = false);
    ~RunningProcess();
    RunningProcess(const RunningProcess&) = delete;
    RunningProcess& operator=(const RunningProcess&) = delete;

    // Reads stdout until `text` shows up or the timeout passes; true if it did.
    bool wait_for_stdout(const std::string& text, int timeout_seconds);
    // Waits for the exit (up to the timeout, then SIGKILL); the status like ProcessResult's.
    int wait_exit(int timeout_seconds);
    // What stdout held so far (and everything up to EOF after wait_exit).
    const std::string& seen() const { return m_seen; }
    pid_t pid() const { return m_pid; }
    // False once the child has closed its stdin or died (never SIGPIPE).
    bool write_stdin(const std::string& data);
    // Forgets what stdout held so far (wait_for_stdout then looks only at new output).
    void clear_seen() { m_seen.clear(); }

private:
    int m_stdin = -1;
    pid_t m_pid = -1;
    int m_stdout = -1;
    std::string m_seen;
};

// A daemon (dockerd, containerd) in its own session with its output in a log
// file; stop() sends TERM to its group, then KILL, and reaps it.
class Daemon {
public:
    Daemon() = default;
    ~Daemon() { stop(); }
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;
    // `extra_env` ("NAME=value") is added to this process's environment for the daemon alone.
    // With HUSK_ENGINE_CPU=N set, the daemon and everything it starts run on CPU N only.
    void start(const std::vector<std::string>& argv, const std::string& log,
               const std::vector<std::string>& extra_env = {});
    void stop();

private:
    pid_t m_pid = -1;
};

// Polls `ready` every 100 ms until it holds or `seconds` have passed by the
// clock (however long each try takes); false if it never held.
bool wait_until(const std::function<bool()>& ready, int seconds);

// Private dockerd and containerd for the end-to-end tests and benchmarks
// (TESTING.md): each under `dir`, with `runtime` registered as "husk".
struct Engines {
    std::string dir;
    std::string docker;  // "/usr/bin/docker -H unix://…" command prefix
    std::string ctr;     // "ctr -a …" command prefix
    std::string podman;  // "podman --root … --runroot …" command prefix (Podman has no daemon)
    Daemon dockerd, containerd;
    std::string error;  // why start failed
    bool start_docker(const std::string& runtime);
    bool start_containerd();
    // Podman with its own storage under `dir`, cgroupfs and a file event log (the rig has no systemd),
    // and `runtime` registered as "husk" by its `husk install --podman`.
    bool start_podman(const std::string& runtime);
    // Imports the busybox test image as busybox:husk (docker) and docker.io/library/busybox:husk (ctr).
    bool import_busybox_docker(const std::string& source_dir);
    bool import_busybox_containerd(const std::string& source_dir);
    bool import_busybox_podman(const std::string& source_dir);
    bool import_busybox_tar(const std::string& source_dir, const std::string& cli, const std::string& image);
    // Where the daemons' container VMs keep their logs (HUSK_VMM_LOG_DIR in
    // the daemons' environment only: nothing else the test runs inherits it).
    std::string vmm_logs() const { return dir + "/vmm-logs"; }

private:
    // `husk install ENGINE_FLAG --path runtime` under dir/install-root (HUSK_INSTALL_ROOT); true when
    // it succeeded and `file` (the engine's, under that root) then matches the grep pattern `registered`.
    bool install_husk(const std::string& runtime, const std::string& engine_flag, const std::string& file,
                      const std::string& registered);
};
// The last `lines` non-debug lines of the newest log in `logs_dir` (Engines::vmm_logs): why a container VM ended.
std::string newest_vmm_log_tail(const std::string& logs_dir, size_t lines = 20);
// The error lines of every husk-vmm log in `logs_dir` written since `since`
// (at most 20 a log): printed when an engine test fails, so that a VM lost to
// the rig (tests/rig/signatures) is told from a failure of husk's own.
std::string vmm_errors_since(const std::string& logs_dir, std::filesystem::file_time_type since);

// The variable's value, or `fallback` when it is unset or empty.
std::string env_or(const char* name, const std::string& fallback = "");

ProcessResult shell(const std::string& command, const std::string& input = "", int timeout_seconds = 300);

// `text` as one word for sh, whatever quotes it holds.
std::string single_quoted(const std::string& text);

}  // namespace husk::test
