// husk-vmm's command line and its vm.toml, built from typed fields: the one
// place the runtime spells husk-vmm's configuration (vmm/config/vm_config.h,
// `husk-vmm --help`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vmm/base/result.h"

namespace husk {

struct VmmCommand {
    enum class LogFormat { Text, Json };
    enum class Console { Default, None };  // Default: husk-vmm's own choice (vm.toml console.output = auto)

    std::string vmm;  // the husk-vmm binary
    // Either a boot (kernel, sizes, initramfs) or a restore from a snapshot directory.
    std::string kernel, initramfs;
    uint32_t memory_mib = 0, vcpus = 0;
    std::string restore;

    std::vector<std::string> drives;  // disk images, in order
    bool drives_read_only = false;    // the guest cannot write to them
    // virtio-fs (tag husk): the device, and the host directories it serves under their names.
    struct Share {
        std::string name, path;
        bool read_only = false;
    };
    bool fs = false;
    std::vector<Share> shares;
    // virtio-net devices (the guest's eth0, eth1, ...): each over its TAP, with
    // its MAC (aa:bb:cc:dd:ee:ff; empty: generated), unplugged until the API's
    // plug_net when asked (vm.toml [[net]]).
    struct Nic {
        std::string tap, mac;
        bool unplugged = false;
    };
    std::vector<Nic> nics;
    std::string vsock_socket, api_socket;
    std::string vsock_dns_forward;  // "A.B.C.D:PORT" for the guest's DNS relay (vm.toml vsock.dns_forward)
    std::string container_specs;    // the container's specs file (agent::encode_specs_file)
    bool wait_for_start = false;    // the container's process waits for the API's `start`
    std::optional<int> ready_fd;    // husk-vmm reports "ok" or "error: ..." there
    std::string snapshot_on_ready;
    Console console = Console::Default;
    std::string log;  // a log file instead of stderr
    LogFormat log_format = LogFormat::Text;
    bool debug = false;

    // The VM's description as vm.toml (what `husk-vmm --config` reads): every
    // field above but the binary, the ready fd and the log. Strings are TOML
    // basic strings, non-ASCII characters escaped (husk reads its TOML files as
    // ASCII); a path that is not UTF-8 cannot be written and is an error.
    Result<std::string> vm_toml() const;
    // husk-vmm's command line for a VM described by the vm.toml at `vm_toml_path`.
    std::vector<std::string> argv(const std::string& vm_toml_path) const;
};

// `text` as a TOML basic string, quotes included; an error if it is not UTF-8.
Result<std::string> toml_string(std::string_view text);

}  // namespace husk
