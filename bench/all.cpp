// husk-bench all: every scenario, each where this host can run it — natively,
// or through the nested rig (tests/rig/run) when it needs hardware KVM that
// this host lacks — written to the results directory, then the report.
// Each scenario runs as its own husk-bench process, so one that fails or
// crashes costs only its own figures; its progress streams to stderr.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "bench/common.h"
#include "vmm/base/subprocess.h"
#include "vmm/probe/host_probe.h"

namespace husk::bench {
namespace {

namespace fs = std::filesystem;

struct Plan {
    const char* name;
    bool needs_hardware_kvm;  // a Linux guest: PVM cannot boot it
};

const Plan kScenarios[] = {
    {"tiny", false},           {"blk-device", false}, {"restore", false},        {"reset", false},  {"boot", true},
    {"blk-iops", true},        {"agent", true},       {"container-start", true}, {"network", true}, {"density", true},
    {"balloon-reclaim", true}, {"file-io", true},     {"invoke", true},
};

// Runs argv with stdout on a pipe, copying each chunk to stderr as it comes
// (progress) and returning all of it; the exit status in `status`.
std::string run_streamed(const std::vector<std::string>& argv, int& status) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        status = 127;
        return {};
    }
    husk::sys::SpawnOptions o;
    o.stdin_fd = STDIN_FILENO;
    o.stdout_fd = fds[1];
    o.stderr_fd = STDERR_FILENO;
    auto pid = husk::sys::spawn(argv, o);
    if (pid.is_error()) {
        ::close(fds[0]);
        ::close(fds[1]);
        fmt::print(stderr, "{}\n", pid.error().message());
        status = 127;
        return {};
    }
    ::close(fds[1]);
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        out.append(buf, size_t(n));
        (void)!::write(STDERR_FILENO, buf, size_t(n));
    }
    ::close(fds[0]);
    status = husk::sys::wait_exit_status(pid.value());
    return out;
}

std::optional<json> between_markers(const std::string& out) {
    const std::string begin = "----- husk-bench result -----\n", end = "----- end husk-bench result -----";
    size_t b = out.rfind(begin);
    if (b == std::string::npos) return std::nullopt;
    b += begin.size();
    size_t e = out.find(end, b);
    if (e == std::string::npos) return std::nullopt;
    // Inside the rig, the console may turn "\n" into "\r\n".
    std::string text = out.substr(b, e - b);
    std::erase(text, '\r');
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) return std::nullopt;
    return j;
}

std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

}  // namespace

int run_all(int runs, const std::string& results_dir, const std::string& kernel_flag,
            const std::vector<std::string>& only) {
    auto wanted = [&](const char* name) {
        return only.empty() || std::find(only.begin(), only.end(), name) != only.end();
    };
    for (const auto& name : only)
        if (std::none_of(std::begin(kScenarios), std::end(kScenarios), [&](const Plan& p) { return name == p.name; })) {
            fmt::print(stderr, "husk-bench all: unknown scenario `{}`\n", name);
            return 2;
        }
    std::string self = fs::read_symlink("/proc/self/exe").string();
    std::string source = env_or("HUSK_SOURCE_DIR", fs::current_path().string());
    // The host probe `husk doctor` reports (vmm/probe/host_probe.h): Linux
    // guests need hardware KVM with its capabilities, tiny guests any working /dev/kvm.
    const husk::HostReport probe = husk::probe_host();
    bool hardware_kvm = probe.can_boot_linux;
    bool kvm_here = probe.can_run_vms;
    std::string rig = source + "/tests/rig/run";
    bool have_rig = ::access(rig.c_str(), X_OK) == 0;
    std::error_code ec;
    fs::create_directories(results_dir, ec);

    // The guest kernel for the Linux scenarios: given, or built (and cached) by kernel-config/build.
    std::string kernel = kernel_flag.empty() ? env_or("HUSK_VMLINUX", env_or("HUSK_KERNEL")) : kernel_flag;
    if (kernel.empty()) {
        auto r = husk::test::run_process({source + "/kernel-config/build"}, {.timeout_seconds = 7200});
        if (r.exit_status == 0) kernel = trimmed(r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1));
        if (kernel.empty() || !fs::exists(kernel)) fmt::print(stderr, "husk-bench all: no guest kernel: {}\n", r.err);
    }
    ::setenv("HUSK_KERNEL", kernel.c_str(), 1);
    ::setenv("HUSK_VMLINUX", kernel.c_str(), 1);
    ::setenv("HUSK_SOURCE_DIR", source.c_str(), 1);
    // container-start's real image (Debian with python3), made once into the cache.
    if ((wanted("container-start") || wanted("invoke")) && env_or("HUSK_BENCH_DEBIAN_TAR").empty()) {
        auto r = husk::test::run_process({source + "/bench/make-debian-image"}, {.timeout_seconds = 3600});
        std::string tar = r.exit_status == 0 ? trimmed(r.out) : "";
        if (tar.empty()) fmt::print(stderr, "husk-bench all: no Debian image for container-start: {}\n", r.err);
        ::setenv("HUSK_BENCH_DEBIAN_TAR", tar.c_str(), 1);
    }

    char stamp[32];
    std::time_t now = std::time(nullptr);
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H%M%SZ", std::gmtime(&now));
    char host[64] = {};
    ::gethostname(host, sizeof host - 1);
    std::string short_host = std::string(host).substr(0, std::string(host).find('.'));

    json summary = json::array();
    int failed = 0;
    for (const auto& s : kScenarios) {
        if (!wanted(s.name)) continue;
        int n = runs;
        if (std::string(s.name) == "density") n = 8;                          // VMs at once, not repetitions
        if (std::string(s.name) == "balloon-reclaim") n = std::min(runs, 3);  // minutes per run in the rig
        std::vector<std::string> argv = {self, s.name, "--runs", std::to_string(n), "-o", "-"};
        std::string where = "native";
        if (s.needs_hardware_kvm) {
            if (kernel.empty()) {
                summary.push_back({{"scenario", s.name}, {"skipped", "no guest kernel"}});
                continue;
            }
            argv.insert(argv.end(), {"--kernel", kernel});
        }
        // A tiny-guest scenario needs only a working /dev/kvm; a host with
        // none (itself a PVM guest, say) runs it in the rig like the rest.
        if ((s.needs_hardware_kvm && !hardware_kvm) || !kvm_here) {
            if (!have_rig) {
                summary.push_back(
                    {{"scenario", s.name},
                     {"skipped",
                      std::string(s.needs_hardware_kvm ? "needs hardware KVM" : "needs /dev/kvm") + " or " + rig}});
                continue;
            }
            where = "rig";
            // The engines (and every runtime, shim and VM they start, runc's or husk's) on one rig CPU, as the
            // rig tests run them: a VM whose vCPU thread moves between the rig's CPUs is lost now and then
            // (tests/rig/signatures, svm-triple-fault).
            argv.insert(argv.begin(), {rig, "--env", "HUSK_KERNEL", "--env", "HUSK_VMLINUX", "--env", "HUSK_SOURCE_DIR",
                                       "--env", "HUSK_BENCH_DEBIAN_TAR", "--env", "HUSK_ENGINE_CPU=1", "--env",
                                       "HUSK_BENCH_FILEIO_MIB", "--env", "HUSK_BENCH_FILEIO_FILES", "--"});
        }
        fmt::print(stderr, "\n=== husk-bench all: {} ({}, {} runs) ===\n", s.name, where, n);
        int status = 0;
        std::string out = run_streamed(argv, status);
        auto result = between_markers(out);
        if (!result) {
            ++failed;
            summary.push_back({{"scenario", s.name}, {"where", where}, {"failed", status}});
            fmt::print(stderr, "husk-bench all: {} gave no result (exit {})\n", s.name, status);
            continue;
        }
        std::string path = fmt::format("{}/{}-{}-{}.json", results_dir, s.name, stamp, short_host);
        std::ofstream(path) << result->dump(2) << "\n";
        summary.push_back({{"scenario", s.name}, {"where", where}, {"exit", status}, {"file", path}});
        fmt::print(stderr, "husk-bench all: wrote {}\n", path);
    }
    int report_status = report(results_dir, results_dir);
    fmt::print(stderr, "\nhusk-bench all:\n");
    for (const auto& e : summary) fmt::print(stderr, "  {}\n", e.dump());
    fmt::print(stderr, "report: {}/report.html, {}/summary.md\n", results_dir, results_dir);
    return failed || report_status ? 1 : 0;
}

}  // namespace husk::bench
