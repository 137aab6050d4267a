#include "vmm/client/vmm_command.h"

namespace husk {

std::vector<std::string> VmmCommand::argv() const {
    std::vector<std::string> a = {vmm};
    auto add = [&](const char* flag, const std::string& value) {
        if (value.empty()) return;
        a.push_back(flag);
        a.push_back(value);
    };
    if (restore.empty()) {
        add("--kernel", kernel);
        add("--initramfs", initramfs);
        if (memory_mib) add("--memory", std::to_string(memory_mib));
        if (vcpus) add("--vcpus", std::to_string(vcpus));
    } else {
        add("--restore", restore);
    }
    for (const auto& d : drives) add("--drive", d);
    add("--vsock", vsock_socket);
    add("--api", api_socket);
    add("--container", container_specs);
    if (wait_for_start) a.push_back("--wait-for-start");
    if (ready_fd) add("--ready-fd", std::to_string(*ready_fd));
    add("--snapshot-on-ready", snapshot_on_ready);
    if (console == Console::None) add("--console", "none");
    add("--log", log);
    if (log_format == LogFormat::Json) add("--log-format", "json");
    if (debug) a.push_back("--debug");
    return a;
}

}  // namespace husk
