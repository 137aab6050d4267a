// run_command: runs a helper program (mkfs.ext4, debugfs, a hook) to completion.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "vmm/base/result.h"

namespace husk::runtime {

struct CommandResult {
    int status = -1;  // exit code, or 128+N when killed by signal N
    std::string err;  // its stderr (the first 64 KiB)
};

// stdin gets `input` (then end of file), stdout is discarded; killed after `timeout_s` seconds.
// `program`, when given, is what runs, with `argv` as its argv (argv[0] included: some programs dispatch on it).
// `before_exec`, when given, runs in the child before it execs (sys::SpawnOptions::before_exec).
Result<CommandResult> run_command(const std::vector<std::string>& argv, const std::string& input = "",
                                  int timeout_s = 600, const std::vector<std::string>* env = nullptr,
                                  const std::string& program = "", std::function<int()> before_exec = {});

// `name` found in PATH (or as given, when it holds a slash) and executable; empty when not found.
std::string find_program(const std::string& name);

}  // namespace husk::runtime
