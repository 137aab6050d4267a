// Handing off to a child that outlives us (husk-vmm, an exec proxy): its
// one-line verdict on a ready pipe, and the pid file the engine reads.
#pragma once

#include <sys/types.h>

#include <string>

#include "vmm/base/result.h"

namespace husk::runtime {

// Reads the child's "ok" or "error: <why>" from `fd` until end of file (at
// most 3 minutes). `who` names the child in errors.
Result<void> wait_ready(int fd, pid_t pid, const std::string& who);
// Writes `pid` to `path` through a rename, as runc does: a reader never sees an empty file.
Result<void> write_pid_file(const std::string& path, pid_t pid);

}  // namespace husk::runtime
