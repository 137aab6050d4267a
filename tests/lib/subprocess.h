// Runs a program with captured stdout/stderr for the end-to-end tests.
#pragma once

#include <signal.h>
#include <string>
#include <vector>

namespace husk::test {

struct ProcessResult {
    int exit_status = -1;  // exit code, or 128+N for signal N
    std::string out, err;
    bool timed_out = false;
};

struct RunOptions {
    int timeout_seconds = 120;  // a hang guard, not a timing assertion
    // Sends this signal once the child's stderr contains `signal_after` (0: never).
    int signal = 0;
    std::string signal_after;
    std::string stdin_data;
};

ProcessResult run_process(const std::vector<std::string>& argv, const RunOptions& options = {});

}  // namespace husk::test
