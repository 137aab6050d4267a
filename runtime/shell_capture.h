// For the runtime's unit tests: runs a shell command line, stdout and stderr together.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <utility>

namespace husk::runtime {

// The command's exit status and everything it printed (the command line says `2>&1` to include stderr).
inline std::pair<int, std::string> run_captured(const std::string& command) {
    FILE* f = ::popen(command.c_str(), "r");
    if (!f) return {-1, "popen failed"};
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    int status = ::pclose(f);
    return {WEXITSTATUS(status), out};
}

}  // namespace husk::runtime
