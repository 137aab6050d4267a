// /etc/husk/config.toml: where husk finds its guest kernel and husk-vmm, and the
// VM size a container gets when its config does not say. Annotations
// io.husk.* in a container's config.json override it per container.
//
//   [vm]
//   kernel = "/var/lib/husk/vmlinux"   # default: HUSK_KERNEL, else the newest ~/.cache/husk/kernel/*/vmlinux
//   vmm = "/usr/local/bin/husk-vmm"    # default: beside husk, else PATH
//   initramfs = ".../husk-agent.cpio"  # default: husk-vmm finds its own
//   memory_mib = 256
//   vcpus = 1
//   rootfs = "share"                   # or "image": an ext4 copy of the rootfs on virtio-blk
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "vmm/base/result.h"

namespace husk::runtime {

// How the container's root reaches the guest (vm.rootfs, annotation io.husk.rootfs).
enum class RootfsMode {
    Share,  // the bundle's root.path itself, through virtio-fs: nothing copied, writes land in it
    Image,  // an ext4 copy on virtio-blk (mkfs.ext4 -d): the guest's writes stay in the copy
};

struct RuntimeConfig {
    std::string kernel;
    std::string vmm;
    std::string initramfs;
    uint32_t memory_mib = 256;
    uint32_t vcpus = 1;
    // Restore containers from a template VM instead of booting (vm.template,
    // annotation io.husk.template).
    bool use_template = true;
    RootfsMode rootfs = RootfsMode::Share;
};

inline constexpr const char* kConfigPath = "/etc/husk/config.toml";

// Reads `path` (missing is fine: defaults), then fills what is still empty.
Result<RuntimeConfig> load_runtime_config(const std::string& path = kConfigPath);
// io.husk.kernel, io.husk.memory_mib, io.husk.vcpus, io.husk.template, io.husk.rootfs.
Result<void> apply_annotations(RuntimeConfig& config, const std::map<std::string, std::string>& annotations);

}  // namespace husk::runtime
