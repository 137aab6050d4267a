#include "vmm/probe/host_probe.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "vmm/kvm/kvm.h"

namespace husk {
namespace {

bool exists(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
}

std::string read_trimmed(const std::string& path) {
    std::ifstream f(path);
    std::string s;
    std::getline(f, s);
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

bool param_on(const std::string& v) {
    return v == "Y" || v == "y" || v == "1";
}

bool cpu_flag(const std::string& cpuinfo, const std::string& flag) {
    std::istringstream in(cpuinfo);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("flags", 0) != 0) continue;
        std::istringstream words(line.substr(line.find(':') + 1));
        std::string w;
        while (words >> w)
            if (w == flag) return true;
        return false;
    }
    return false;
}

}  // namespace

namespace {

struct BackendNames {
    const char* module;  // for machine records
    const char* name;    // for people
};

BackendNames names_of(KvmBackend b) {
    switch (b) {
        case KvmBackend::Intel:
            return {"kvm_intel", "kvm_intel (VT-x)"};
        case KvmBackend::Amd:
            return {"kvm_amd", "kvm_amd (AMD-V)"};
        case KvmBackend::Pvm:
            return {"kvm_pvm", "kvm_pvm (PVM, software)"};
        case KvmBackend::None:
            return {"none", "none"};
        case KvmBackend::Unknown:
            break;
    }
    return {"unknown", "unknown"};
}

}  // namespace

const char* backend_module(KvmBackend b) {
    return names_of(b).module;
}

const char* backend_name(KvmBackend b) {
    return names_of(b).name;
}

const char* check_status_name(CheckStatus s) {
    switch (s) {
        case CheckStatus::Pass:
            return "pass";
        case CheckStatus::Fail:
            return "fail";
        case CheckStatus::Warn:
            return "warn";
        case CheckStatus::Info:
            break;
    }
    return "info";
}

std::string format_checks(const std::vector<Check>& checks) {
    std::string text;
    for (const auto& c : checks) {
        std::string tag = check_status_name(c.status);
        for (auto& ch : tag) ch = char(std::toupper(static_cast<unsigned char>(ch)));
        text += tag + "  " + c.name + ": " + c.detail + "\n";
        if (!c.advice.empty()) text += "      -> " + c.advice + "\n";
    }
    return text;
}

HostReport probe_host(const std::string& sys, const std::string& cpuinfo_path, const std::string& kvm_path) {
    HostReport r;
    std::string cpuinfo;
    {
        std::ifstream f(cpuinfo_path);
        std::stringstream ss;
        ss << f.rdbuf();
        cpuinfo = ss.str();
    }
    auto add = [&](std::string name, CheckStatus st, std::string detail, std::string advice = "") {
        r.checks.push_back({std::move(name), st, std::move(detail), std::move(advice)});
    };

    bool vmx = cpu_flag(cpuinfo, "vmx"), svm = cpu_flag(cpuinfo, "svm");
    if (vmx)
        add("cpu virtualization", CheckStatus::Pass, "Intel VT-x (vmx flag)");
    else if (svm)
        add("cpu virtualization", CheckStatus::Pass, "AMD-V (svm flag)");
    else
        add("cpu virtualization", CheckStatus::Fail, "no vmx or svm flag in /proc/cpuinfo",
            cpu_flag(cpuinfo, "hypervisor") ? "this host is a VM without nested virtualization: enable nested "
                                              "virtualization on its hypervisor, or use tests/rig/run"
                                            : "enable VT-x/AMD-V (SVM) in the firmware settings");

    const std::string mod = sys + "/module/";
    if (exists(mod + "kvm_intel"))
        r.backend = KvmBackend::Intel;
    else if (exists(mod + "kvm_amd"))
        r.backend = KvmBackend::Amd;
    else if (exists(mod + "kvm_pvm"))
        r.backend = KvmBackend::Pvm;
    else if (exists(kvm_path))
        r.backend = KvmBackend::Unknown;

    switch (r.backend) {
        case KvmBackend::Intel:
        case KvmBackend::Amd:
            add("kvm backend", CheckStatus::Pass, backend_name(r.backend));
            break;
        case KvmBackend::Pvm:
            // The module alone is no KVM: without /dev/kvm nothing runs, and the /dev/kvm check says so.
            if (!exists(kvm_path))
                add("kvm backend", CheckStatus::Info,
                    std::string(backend_name(r.backend)) + " module loaded, but there is no /dev/kvm");
            else
                add("kvm backend", CheckStatus::Warn, backend_name(r.backend),
                    "PVM runs only PVM-aware guest kernels: tiny guests work, a stock Linux guest does not; "
                    "husk runs Linux guests here inside tests/rig/run");
            break;
        case KvmBackend::Unknown:
            add("kvm backend", CheckStatus::Warn, "/dev/kvm exists but no known KVM module is loaded");
            break;
        case KvmBackend::None:
            add("kvm backend", CheckStatus::Fail, "no KVM module loaded",
                vmx   ? "modprobe kvm_intel"
                : svm ? "modprobe kvm_amd"
                      : "this host cannot run KVM; use tests/rig/run");
            break;
    }

    auto param = [&](const char* module, const char* name) {
        return read_trimmed(mod + module + "/parameters/" + name);
    };
    auto feature = [&](const std::string& label, const char* module, const char* name, const std::string& advice,
                       CheckStatus if_off = CheckStatus::Fail) {
        std::string v = param(module, name);
        if (v.empty())
            add(label, CheckStatus::Info, std::string(module) + "." + name + " not reported");
        else if (param_on(v))
            add(label, CheckStatus::Pass, std::string(module) + "." + name + "=" + v);
        else
            add(label, if_off, std::string(module) + "." + name + "=" + v, advice);
    };
    if (r.backend == KvmBackend::Intel) {
        feature("EPT (nested paging)", "kvm_intel", "ept", "load kvm_intel with ept=1: shadow paging is much slower");
        feature("VPID (tagged TLB)", "kvm_intel", "vpid",
                "load kvm_intel with vpid=1: every VM exit flushes the TLB without it", CheckStatus::Warn);
        feature("unrestricted guest", "kvm_intel", "unrestricted_guest",
                "load kvm_intel with unrestricted_guest=1 (needs EPT)", CheckStatus::Warn);
        feature("APICv", "kvm_intel", "enable_apicv", "load kvm_intel with enable_apicv=1 for fewer interrupt exits",
                CheckStatus::Warn);
        feature("FlexPriority (TPR shadow)", "kvm_intel", "flexpriority", "load kvm_intel with flexpriority=1",
                CheckStatus::Warn);
        feature("nested virtualization", "kvm_intel", "nested", "", CheckStatus::Info);
    } else if (r.backend == KvmBackend::Amd) {
        feature("NPT (nested paging)", "kvm_amd", "npt", "load kvm_amd with npt=1: shadow paging is much slower");
        add("ASID (tagged TLB)", CheckStatus::Pass, "always on with AMD-V");
        feature("AVIC", "kvm_amd", "avic", "load kvm_amd with avic=1 for fewer interrupt exits", CheckStatus::Info);
        feature("nested virtualization", "kvm_amd", "nested", "", CheckStatus::Info);
    }

    auto kvm = Kvm::open(kvm_path);
    if (!exists(kvm_path)) {
        add("/dev/kvm", CheckStatus::Fail, "no " + kvm_path + " on this host",
            "load the KVM module for this CPU (kvm_intel or kvm_amd); on a VM, enable nested virtualization");
    } else if (kvm.is_error()) {
        add("/dev/kvm", CheckStatus::Fail, kvm.error().message(),
            "load the KVM module and give this user read/write access to /dev/kvm (group kvm)");
    } else {
        add("/dev/kvm", CheckStatus::Pass, "opened, KVM API 12");
        bool all = true;
        for (const auto& c : Kvm::required_capabilities()) {
            bool ok = kvm.value().check_extension(c.cap) > 0;
            all = all && ok;
            add(c.name, ok ? CheckStatus::Pass : CheckStatus::Fail, c.why, ok ? "" : "upgrade the host kernel");
        }
        int xsave2 = kvm.value().check_extension(KVM_CAP_XSAVE2);
        add("KVM_CAP_XSAVE2", xsave2 > 0 ? CheckStatus::Pass : CheckStatus::Info,
            xsave2 > 0 ? "snapshots save " + std::to_string(xsave2) + " bytes of XSAVE state"
                       : "snapshots use the 4 KiB XSAVE area");
        int tsc = kvm.value().check_extension(KVM_CAP_TSC_CONTROL);
        add("KVM_CAP_TSC_CONTROL", tsc > 0 ? CheckStatus::Pass : CheckStatus::Info,
            tsc > 0 ? "TSC frequency can follow a snapshot across hosts"
                    : "no KVM_SET_TSC_KHZ: snapshots restore only on hosts with the same TSC frequency");
        r.can_run_vms = all;
    }
    r.can_boot_linux = r.can_run_vms && (r.backend == KvmBackend::Intel || r.backend == KvmBackend::Amd);
    return r;
}

std::string format_report(const HostReport& r) {
    std::ostringstream out;
    out << format_checks(r.checks) << "\nverdict: ";
    if (r.can_boot_linux)
        out << "husk runs Linux microVMs natively on this host (" << backend_name(r.backend) << ")\n";
    else if (r.can_run_vms)
        out << "KVM works here but cannot boot a stock Linux guest (" << backend_name(r.backend)
            << "); husk runs Linux guests inside the nested rig (tests/rig/run)\n";
    else if (!r.checks.empty() && std::any_of(r.checks.begin(), r.checks.end(), [](const Check& c) {
                 return c.name == "/dev/kvm" && c.detail.rfind("no ", 0) == 0;
             }))
        out << "no /dev/kvm: husk cannot run microVMs on this host\n";
    else
        out << "husk cannot run microVMs on this host\n";
    return out.str();
}

}  // namespace husk
