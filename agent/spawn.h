// spawn: forks a container process and sets it up up to the point of exec —
// stdio, namespaces and root, sysctls, limits, user and capabilities, seccomp —
// then leaves it waiting for start() (the OCI create/start split: everything
// that can fail fails at create).
#pragma once

#include <sys/types.h>

#include <string>

#include "agent/protocol.h"
#include "agent/seccomp_filter.h"
#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk::agent {

struct SpawnedProcess {
    pid_t pid = -1;
    // The agent's ends of stdio. With a terminal, `terminal` is the pty
    // master and the pipes are empty; unattached channels are empty too.
    UniqueFd stdin_pipe;
    UniqueFd stdout_pipe;
    UniqueFd stderr_pipe;
    UniqueFd terminal;
    UniqueFd start;  // one byte written here lets the process exec
};

struct SpawnContext {
    // The container's rootfs, mounted by the agent; the first process pivots into it.
    std::string rootfs;
    // The container setup the first process applies (mounts, masked paths).
    const ContainerSpec* container = nullptr;
    // For processes after the first: the container's init, whose namespaces they join.
    pid_t join = -1;
    // A serverless container's later `init`: the mount namespace its first
    // `init` built (held by the agent), copied instead of built again, so what
    // the startup command left in the container's mounts is there; /proc is
    // mounted afresh for the new PID namespace.
    int mounts = -1;
    // The container's seccomp filter, compiled once; each process loads it.
    const SeccompProgram* seccomp = nullptr;
    // The container's cgroup in the guest, which every process joins; empty: none.
    std::string cgroup;
};

// Forks, sets up, and returns once the child is ready to exec (or failed, with its reason).
Result<SpawnedProcess> spawn(const ProcessSpec& spec, const SpawnContext& context);

// The host's shared directories (virtio-fs tag "husk", its root listing each
// share by name) mounted at kSharesMount in the caller's mount namespace,
// unless they already are there, reading ahead kSharesReadAheadKib.
inline constexpr const char* kSharesMount = "/run/husk/fs";
inline constexpr unsigned kSharesReadAheadKib = 1024;  // the device's largest READ (max_pages: 256)
Result<void> mount_shares();

// Lets a spawned process exec.
Result<void> start(SpawnedProcess& process);

// OCI mount options → mount(2) flags, propagation flags and the data string.
struct MountOptions {
    unsigned long flags = 0;
    unsigned long clear = 0;        // flags the options turn off ("rw", "suid", ...)
    unsigned long propagation = 0;  // MS_PRIVATE, MS_SLAVE, ... applied by a second mount(2)
    std::string data;
};
MountOptions parse_mount_options(const std::vector<std::string>& options);

// The rlimit resource for an OCI name ("RLIMIT_NOFILE"), or -1.
int rlimit_resource(std::string_view name);

}  // namespace husk::agent
