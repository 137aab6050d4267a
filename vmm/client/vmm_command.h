// husk-vmm's command line, built from typed fields: the one place the
// runtime spells husk-vmm's flags (vmm/main.cpp, `husk-vmm --help`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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
    std::string vsock_socket, api_socket;
    std::string container_specs;  // the container's specs file (agent::encode_specs_file)
    bool wait_for_start = false;  // the container's process waits for the API's `start`
    std::optional<int> ready_fd;  // husk-vmm reports "ok" or "error: ..." there
    std::string snapshot_on_ready;
    Console console = Console::Default;
    std::string log;  // a log file instead of stderr
    LogFormat log_format = LogFormat::Text;
    bool debug = false;

    std::vector<std::string> argv() const;
};

}  // namespace husk
