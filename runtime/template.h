// Templates: a VM booted until its husk-agent waits for the host, then
// snapshotted; one per (husk-vmm, kernel, agent, vCPUs, memory, NIC or not).
// `husk create` restores the template instead of booting a kernel, and
// attaches the container's rootfs disk (and its TAP) after the restore.
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

// A template VM's NICs: their TAPs (husk0, husk1, ... in a network namespace
// of the maker's own, gone with it) and their MACs (02:68:75:73:6b:0N). A
// restored VM's NIC keeps its MAC until the agent gives it the engine
// interface's (agent/network.h).
inline constexpr const char* kTemplateMac = "02:68:75:73:6b:0";

// A template's NICs: how many (virtio-net devices, restored onto the
// container's TAPs in order), and whether they are unplugged (the guest has
// not probed them; vm.toml net.unplugged).
struct TemplateNics {
    size_t count = 0;
    bool unplugged = false;
};

// The template's snapshot directory, made now (under a lock) when missing.
// Making one boots the guest once; a failure says why, and callers boot
// instead.
Result<std::string> ensure_template(const RuntimeConfig& config, TemplateNics nics);

}  // namespace husk::runtime
