// Starting other programs: the one fork/exec in husk's host binaries (the
// runtime's helpers and husk-vmm, husk-bench's peers, the tests' children).
// An exec that fails is an error of spawn() itself, named, not a child that
// exits 127.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "vmm/base/result.h"

namespace husk::sys {

struct SpawnOptions {
    // The child's stdin, stdout and stderr; -1 is /dev/null.
    int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;
    // The environment; none: this process's.
    const std::vector<std::string>* env = nullptr;
    // What runs (searched in PATH) with argv as its argv; empty: argv[0].
    std::string program;
    // PR_SET_PDEATHSIG SIGKILL: a helper does not outlive the command that ran it.
    bool die_with_parent = false;
    // The last step before exec, in the child, with stdio in place: returns
    // an errno (0 to go on), which spawn() reports with `before_exec_what`.
    // Only async-signal-safe work belongs here (the parent may have threads).
    std::function<int()> before_exec;
    std::string before_exec_what = "set up the child";
};

Result<pid_t> spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});

// Reaps `pid`: its exit code, or 128 + N when signal N ended it (then
// `term_signal`, when given, is N; else 0).
int wait_exit_status(pid_t pid, int* term_signal = nullptr);

}  // namespace husk::sys
