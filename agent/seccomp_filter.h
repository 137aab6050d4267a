// The container's seccomp filter (linux.seccomp): compiled once per container
// with libseccomp, linked statically into the agent, and loaded by each of the
// container's processes with seccomp(2) just before they become the
// container's (agent/spawn.cpp says when).
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <vector>

#include "agent/protocol.h"
#include "vmm/base/result.h"

namespace husk::agent {

struct SeccompProgram {
    std::vector<sock_filter> instructions;
    uint32_t flags = 0;  // SECCOMP_FILTER_FLAG_*
    // Syscall names of the rules this kernel does not know (a profile lists
    // newer ones); they are left out, as runc does.
    std::vector<std::string> unknown_syscalls;
};

// The BPF program for `spec`, as runc would build it: the native architecture
// and those listed, rules whose action is the default one left out, a rule
// whose arguments repeat an index split into one rule per argument (either
// matches), otherwise one rule with all of them (all must match).
Result<SeccompProgram> compile_seccomp(const Seccomp& spec);

// Loads the program into the calling thread (a forked child of the agent).
// Without no_new_privs it needs CAP_SYS_ADMIN.
Result<void> load_seccomp(const SeccompProgram& program);

}  // namespace husk::agent
