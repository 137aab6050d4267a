// Templates: a VM booted until its husk-agent waits for the host, then
// snapshotted; one per (husk-vmm, kernel, agent, vCPUs, memory). `husk create`
// restores the template instead of booting a kernel, and attaches the
// container's rootfs disk after the restore.
#pragma once

#include <string>

#include "runtime/husk_config.h"
#include "vmm/base/result.h"

namespace husk::runtime {

// Where templates live: $HUSK_TEMPLATE_DIR, else /run/husk/templates (a tmpfs:
// the memory files stay in the page cache that every restored VM shares).
std::string template_root();

// The agent's initramfs husk-vmm would use: `config.initramfs`, else the one
// shipped beside husk-vmm; empty when it cannot be found.
std::string agent_initramfs(const RuntimeConfig& config);

// The template's snapshot directory, made now (under a lock) when missing.
// Making one boots the guest once; a failure says why, and callers boot instead.
Result<std::string> ensure_template(const RuntimeConfig& config);

}  // namespace husk::runtime
