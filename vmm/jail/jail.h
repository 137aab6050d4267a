// The jail husk-vmm enters once the VM is built and before any guest code
// runs: new mount, IPC and UTS namespaces; a fresh tmpfs as the root
// (pivot_root) holding only the directories the running VM still uses (its
// sockets', a snapshot's); no capabilities, no_new_privs, an unprivileged
// uid/gid when asked; rlimits; the container's cgroup.
//
// Everything else the VM needs (KVM, guest memory, disks, the TAP, the
// kernel) was opened before, so the jail holds no device node and no image.
// Nothing is created on the host: the new root is a tmpfs mounted in the
// jail's own mount namespace, and the namespaces go with the process. No PID
// namespace: a process that unshares one can start no more threads, and
// husk-vmm starts no processes (seccomp forbids fork and exec) and has no
// /proc in the jail. A cgroup it created is left for whoever reaps it (the
// runtime's delete): a cgroup cannot be removed while the process is in it.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "vmm/base/result.h"

namespace husk::jail {

struct Options {
    // Directories bound read-write at the same path inside the jail.
    std::vector<std::string> writable_dirs;
    std::optional<uid_t> uid;
    std::optional<gid_t> gid;
    // cgroup v2 path under /sys/fs/cgroup (an OCI linux.cgroupsPath); created if missing.
    std::string cgroup;
    // RLIMIT_NOFILE inside (0: leave it).
    uint64_t max_files = 0;
    // Capabilities kept (a mask of CAP_* bits), when the jailed process must
    // still act on files for someone else: virtio-fs serving the guest's root.
    uint64_t keep_capabilities = 0;
};

// Enters the jail. Call with one thread in the process (mount namespaces cannot
// be unshared by a multithreaded process); needs CAP_SYS_ADMIN.
Result<void> enter(const Options& options);

// "UID[:GID]" as --jail-user takes it.
Result<std::pair<uid_t, gid_t>> parse_user(const std::string& text);

}  // namespace husk::jail
