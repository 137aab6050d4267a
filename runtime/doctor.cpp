#include "runtime/doctor.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "runtime/command.h"
#include "runtime/template.h"

namespace husk::runtime {

namespace fs = std::filesystem;

DoctorReport doctor(HostReport host, const RuntimeConfig& config, const std::string& root) {
    DoctorReport r{std::move(host), false, {}};
    auto add = [&](std::string name, CheckStatus status, std::string detail, std::string advice = "") {
        r.host.checks.push_back({std::move(name), status, std::move(detail), std::move(advice)});
        return status != CheckStatus::Fail;
    };
    bool ok = true;
    std::string vmm = find_program(config.vmm);
    ok &= vmm.empty() ? add("husk-vmm", CheckStatus::Fail, "`" + config.vmm + "` not found",
                            "install husk-vmm beside husk, or set vm.vmm in " + std::string(kConfigPath))
                      : add("husk-vmm", CheckStatus::Pass, fs::path(vmm).lexically_normal().string());
    if (config.kernel.empty())
        ok &= add("guest kernel", CheckStatus::Fail, "none configured and none in ~/.cache/husk/kernel",
                  "build one with kernel-config/build (it prints its path), or set vm.kernel in " +
                      std::string(kConfigPath) + " or HUSK_KERNEL");
    else if (::access(config.kernel.c_str(), R_OK) != 0)
        ok &= add("guest kernel", CheckStatus::Fail, "`" + config.kernel + "` cannot be read",
                  "build one with kernel-config/build, or point vm.kernel at a readable vmlinux");
    else
        add("guest kernel", CheckStatus::Pass, config.kernel);
    std::string agent = agent_initramfs(config);
    ok &= agent.empty() ? add("agent initramfs", CheckStatus::Fail, "husk-agent.cpio not found beside husk-vmm",
                              "install husk-agent.cpio (agent/ in the build, share/husk when installed), or set "
                              "vm.initramfs in " +
                                  std::string(kConfigPath))
                        : add("agent initramfs", CheckStatus::Pass, fs::path(agent).lexically_normal().string());
    // Only vm.rootfs = "image" copies the rootfs into an ext4 image; a shared rootfs needs neither tool.
    const bool image = config.rootfs == RootfsMode::Image;
    for (const char* tool : {"mkfs.ext4", "debugfs"}) {
        std::string found = find_program(tool);
        if (!found.empty())
            add(tool, CheckStatus::Pass, found);
        else if (image)
            ok &= add(tool, CheckStatus::Fail, "not in PATH",
                      "install e2fsprogs: with vm.rootfs = \"image\" each container's rootfs image is made with it");
        else
            add(tool, CheckStatus::Info, "not in PATH",
                "only needed for vm.rootfs = \"image\" (the rootfs is shared through virtio-fs)");
    }
    std::error_code ec;
    fs::path existing = root;
    while (!existing.empty() && !fs::exists(existing, ec)) existing = existing.parent_path();
    if (existing.empty() || ::access(existing.c_str(), W_OK) != 0)
        ok &= add("state root", CheckStatus::Fail, "`" + root + "` cannot be created or written",
                  "run husk as root, or give it a writable --root");
    else
        add("state root", CheckStatus::Pass, root);

    r.ready = ok && r.host.can_boot_linux;
    if (r.ready)
        r.verdict = "husk runs containers in microVMs on this host (" + std::string(backend_name(r.host.backend)) + ")";
    else if (!ok)
        r.verdict = "husk cannot run containers here yet: fix what is marked FAIL above";
    else if (std::any_of(r.host.checks.begin(), r.host.checks.end(), [](const Check& c) {
                 return c.name == "/dev/kvm" && c.detail.rfind("no ", 0) == 0;  // the probe found none
             }))
        r.verdict = "no /dev/kvm: husk cannot run microVMs on this host (./run runs husk inside a nested VM instead)";
    else if (r.host.can_run_vms)
        r.verdict = "KVM works here but cannot boot a stock Linux guest (" + std::string(backend_name(r.host.backend)) +
                    "): ./run runs husk inside a nested VM instead";
    else
        r.verdict =
            "KVM is not usable here: fix what is marked FAIL above (./run runs husk inside a nested VM instead)";
    return r;
}

std::string format_doctor(const DoctorReport& report) {
    return format_checks(report.host.checks) + "\nverdict: " + report.verdict + "\n";
}

nlohmann::json doctor_json(const DoctorReport& report) {
    nlohmann::json checks = nlohmann::json::array();
    for (const auto& c : report.host.checks) {
        nlohmann::json j{{"name", c.name}, {"status", check_status_name(c.status)}, {"detail", c.detail}};
        if (!c.advice.empty()) j["advice"] = c.advice;
        checks.push_back(j);
    }
    return {{"ready", report.ready},
            {"verdict", report.verdict},
            {"kvm_backend", backend_module(report.host.backend)},
            {"can_run_vms", report.host.can_run_vms},
            {"can_boot_linux", report.host.can_boot_linux},
            {"checks", checks}};
}

}  // namespace husk::runtime
