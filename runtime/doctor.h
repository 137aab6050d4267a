// husk doctor: whether this host can run husk's containers, and what to fix.
// The host's virtualization (vmm/probe/host_probe.h, the same probe husk-vmm
// and husk-bench use) and what the runtime itself needs: husk-vmm, the guest
// kernel, the agent's initramfs, the rootfs tools, a writable state root.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "runtime/husk_config.h"
#include "vmm/probe/host_probe.h"

namespace husk::runtime {

struct DoctorReport {
    HostReport host;  // its checks first, then the runtime's
    // Containers run on this host as it is (hardware KVM and all the runtime needs).
    bool ready = false;
    std::string verdict;
};

// `host` is the probe's report; the runtime's checks look at `config`'s paths
// and the state root `root`.
DoctorReport doctor(HostReport host, const RuntimeConfig& config, const std::string& root);
std::string format_doctor(const DoctorReport& report);
nlohmann::json doctor_json(const DoctorReport& report);

}  // namespace husk::runtime
