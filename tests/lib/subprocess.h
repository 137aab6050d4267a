// Runs a program with captured stdout/stderr, for the end-to-end tests and husk-bench.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace husk::test {

struct ProcessResult {
    int exit_status = -1;  // exit code, or 128+N for signal N
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
};

ProcessResult run_process(const std::vector<std::string>& argv, const RunOptions& options = {});

// A child started with stdin from /dev/null and stdout on a pipe; killed (SIGKILL) and reaped on destruction.
class RunningProcess {
public:
    explicit RunningProcess(const std::vector<std::string>& argv);
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

private:
    pid_t m_pid = -1;
    int m_stdout = -1;
    std::string m_seen;
};

}  // namespace husk::test
