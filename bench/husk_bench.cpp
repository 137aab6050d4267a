// husk-bench: runs named scenarios against husk and a peer side by side,
// interleaved and repeated, and writes JSON results.
//
//   husk-bench tiny  [--runs N] [--out FILE]   native: tiny PVH guest, husk-vmm vs QEMU microvm
//   husk-bench boot  [--runs N] [--out FILE]   Linux guest boot to init, husk-vmm vs QEMU microvm
//
// Paths come from flags or HUSK_* variables (see --help). Results go to
// --out (default: stdout as one JSON document).
#include <boost/program_options.hpp>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/lib/subprocess.h"

namespace po = boost::program_options;
using json = nlohmann::json;

namespace {

std::optional<double> parse_ms(const std::string& text, const std::string& pattern) {
    std::smatch m;
    if (std::regex_search(text, m, std::regex(pattern))) return std::stod(m[1]);
    return std::nullopt;
}

json stats(std::vector<double> v) {
    if (v.empty()) return nullptr;
    std::sort(v.begin(), v.end());
    auto pct = [&](double p) { return v[std::min(v.size() - 1, size_t(p * double(v.size() - 1) + 0.5))]; };
    return {{"n", v.size()}, {"min", v.front()}, {"median", pct(0.5)}, {"p90", pct(0.9)}, {"p99", pct(0.99)},
            {"max", v.back()}, {"samples", v}};
}

json machine() {
    utsname u{};
    uname(&u);
    std::string cpu;
    std::ifstream f("/proc/cpuinfo");
    for (std::string line; std::getline(f, line);)
        if (line.rfind("model name", 0) == 0) {
            cpu = line.substr(line.find(':') + 2);
            break;
        }
    std::string backend = access("/sys/module/kvm_intel", F_OK) == 0 ? "kvm_intel"
                          : access("/sys/module/kvm_amd", F_OK) == 0 ? "kvm_amd"
                          : access("/sys/module/kvm_pvm", F_OK) == 0 ? "kvm_pvm"
                                                                      : "none";
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::time_t now = std::time(nullptr);
    char date[64];
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    return {{"hostname", host}, {"kernel", std::string(u.release)}, {"cpu", cpu},
            {"cpus", std::thread::hardware_concurrency()}, {"kvm_backend", backend},
            {"in_rig", std::getenv("HUSK_RIG") != nullptr}, {"date", date}};
}

std::string env_or(const char* name, const std::string& fallback) {
    const char* v = std::getenv(name);
    return v && *v ? v : fallback;
}

long status_kib(pid_t pid, const std::string& field) {
    std::ifstream f(fmt::format("/proc/{}/status", pid));
    for (std::string line; std::getline(f, line);)
        if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
    return -1;
}

// Starts argv, waits until stdout shows `marker`, reads the memory counters, kills it.
json memory_of(const std::vector<std::string>& argv, const std::string& marker) {
    husk::test::RunningProcess p(argv);
    if (!p.wait_for_stdout(marker, 30)) return nullptr;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let it settle after the guest halts
    return {{"rss_kib", status_kib(p.pid(), "VmRSS")}, {"rss_anon_kib", status_kib(p.pid(), "RssAnon")},
            {"rss_file_kib", status_kib(p.pid(), "RssFile")}, {"rss_shmem_kib", status_kib(p.pid(), "RssShmem")}};
}

int scenario(const std::string& name, int runs, const std::string& out_path, const po::variables_map& vm) {
    const std::string build = env_or("HUSK_BUILD_DIR", "build");
    const std::string vmm = env_or("HUSK_VMM", build + "/vmm/husk-vmm");
    const std::string qemu = env_or("HUSK_QEMU", "qemu-system-x86_64");
    json result = {{"scenario", name}, {"machine", machine()}, {"runs", runs}};
    std::vector<std::string> husk_cmd, qemu_cmd;
    std::string marker;
    const std::string microvm = "microvm,x-option-roms=off,isa-serial=on,rtc=off";

    if (name == "tiny") {
        std::string guests = env_or("HUSK_GUESTS", build + "/tests/guests");
        std::string guest = guests + "/pvh.elf";
        marker = "Hello from a PVH guest";
        husk_cmd = {vmm, "--kernel", guest, "--memory", "32"};
        // PVM needs a CPU model without ARCH_CAPABILITIES; hardware KVM takes host.
        std::string cpu = access("/sys/module/kvm_pvm", F_OK) == 0 ? "qemu64" : "host";
        qemu_cmd = {qemu, "-M", microvm, "-accel", "kvm", "-cpu", cpu, "-m", "32", "-nodefaults", "-nographic",
                    "-serial", "stdio", "-device", "isa-debug-exit,iobase=0x501,iosize=2", "-kernel", guest,
                    "-no-reboot"};
        result["guest"] = "tests/guests/pvh.S: PVH entry, prints a line, resets";
        // Memory: the same guest, halted, measured while alive.
        auto halt = guests + "/pvh_halt.elf";
        auto hm = memory_of({vmm, "--kernel", halt, "--memory", "32"}, marker);
        auto qm = memory_of({qemu, "-M", microvm, "-accel", "kvm", "-cpu", cpu, "-m", "32", "-nodefaults",
                             "-nographic", "-serial", "stdio", "-kernel", halt},
                            marker);
        result["memory"] = {{"husk", hm}, {"qemu", qm},
                            {"note", "husk guest RAM is a memfd (RssShmem); VMM overhead = RssAnon + RssFile. "
                                     "QEMU's guest RAM is anonymous and counted in its RssAnon."}};
    } else if (name == "boot") {
        std::string kernel = vm.count("kernel") ? vm["kernel"].as<std::string>() : env_or("HUSK_VMLINUX", "");
        std::string initrd = env_or("HUSK_INITRAMFS", build + "/tests/guests/linux/test-initramfs.cpio.gz");
        if (kernel.empty()) {
            std::cerr << "husk-bench: boot needs --kernel or HUSK_VMLINUX (kernel-config/build prints it)\n";
            return 2;
        }
        std::string cmdline = "console=ttyS0 reboot=t panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd quiet -- reboot";
        marker = "husk-test-init: init reached";
        husk_cmd = {vmm, "--kernel", kernel, "--initramfs", initrd, "--memory", "256", "--cmdline", cmdline};
        qemu_cmd = {qemu, "-M", microvm, "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1", "-nodefaults",
                    "-nographic", "-serial", "stdio", "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
                    "-no-reboot"};
        result["guest"] = "kernel-config/ vmlinux (PVH) + tests/guests/linux/init.c initramfs, 256 MiB, 1 vCPU";
    } else {
        std::cerr << "husk-bench: unknown scenario `" << name << "` (tiny, boot)\n";
        return 2;
    }
    result["commands"] = {{"husk", husk_cmd}, {"qemu", qemu_cmd}};

    std::vector<double> h_exit, h_marker, h_first_run, h_init, q_exit, q_marker;
    int failures = 0;
    for (int i = 0; i < runs; ++i) {
        for (int side = 0; side < 2; ++side) {  // interleaved: husk, qemu, husk, qemu, ...
            husk::test::RunOptions o;
            o.timeout_seconds = 300;
            o.stdout_marker = marker;
            auto s = husk::test::run_process(side == 0 ? husk_cmd : qemu_cmd, o);
            bool ok = s.marker_ms >= 0;
            fmt::print(stderr, "  [{}/{}] {:5} exit {:8.1f} ms  console marker {:8.1f} ms  status {}\n", i + 1, runs,
                       side == 0 ? "husk" : "qemu", s.exit_ms, s.marker_ms, s.exit_status);
            if (!ok) {
                ++failures;
                fmt::print(stderr, "    marker not seen; stderr: {}\n", s.err.substr(0, 400));
                continue;
            }
            if (side == 0) {
                h_exit.push_back(s.exit_ms);
                h_marker.push_back(s.marker_ms);
                if (auto v = parse_ms(s.err, R"(first KVM_RUN at ([0-9.]+) ms)")) h_first_run.push_back(*v);
                if (auto v = parse_ms(s.err, R"(guest init reached ([0-9.]+) ms)")) h_init.push_back(*v);
            } else {
                q_exit.push_back(s.exit_ms);
                q_marker.push_back(s.marker_ms);
            }
        }
    }
    result["husk"] = {{"launch_to_exit_ms", stats(h_exit)}, {"launch_to_console_marker_ms", stats(h_marker)},
                      {"vmm_start_to_first_kvm_run_ms", stats(h_first_run)},
                      {"vmm_start_to_boot_timer_ms", stats(h_init)}};
    result["qemu"] = {{"launch_to_exit_ms", stats(q_exit)}, {"launch_to_console_marker_ms", stats(q_marker)}};
    result["failures"] = failures;
    if (!h_marker.empty() && !q_marker.empty()) {
        double hm = result["husk"]["launch_to_console_marker_ms"]["median"];
        double qm = result["qemu"]["launch_to_console_marker_ms"]["median"];
        double he = result["husk"]["launch_to_exit_ms"]["median"];
        double qe = result["qemu"]["launch_to_exit_ms"]["median"];
        result["ratio_husk_over_qemu"] = {{"launch_to_console_marker", hm / qm}, {"launch_to_exit", he / qe}};
        fmt::print(stderr, "{}: median launch->marker husk {:.1f} ms, qemu {:.1f} ms, ratio {:.3f}; "
                           "launch->exit husk {:.1f} ms, qemu {:.1f} ms, ratio {:.3f}\n",
                   name, hm, qm, hm / qm, he, qe, he / qe);
    }
    std::string text = result.dump(2) + "\n";
    if (out_path == "-") {
        // Markers let a caller cut the result out of a stream that also carries
        // progress (inside tests/rig/run, stderr and stdout arrive merged).
        std::cout << "----- husk-bench result -----\n" << text << "----- end husk-bench result -----\n";
    } else {
        std::ofstream(out_path) << text;
        fmt::print(stderr, "wrote {}\n", out_path);
    }
    return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    po::options_description opts("Options");
    opts.add_options()("help,h", "show this help")("runs,n", po::value<int>()->default_value(10), "runs per side")(
        "out,o", po::value<std::string>()->default_value("-"), "result JSON file (- for stdout)")(
        "kernel", po::value<std::string>(), "guest vmlinux for `boot` (default $HUSK_VMLINUX)")(
        "scenario", po::value<std::string>(), "tiny | boot");
    po::positional_options_description pos;
    pos.add("scenario", 1);
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(argc, argv).options(opts).positional(pos).run(), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "husk-bench: " << e.what() << "\n";
        return 2;
    }
    if (vm.count("help") || !vm.count("scenario")) {
        std::cout << "Usage: husk-bench SCENARIO [options]\n\n"
                     "Scenarios (husk and its peer run interleaved, --runs times each):\n"
                     "  tiny   native: a tiny PVH guest (tests/guests/pvh.S) under husk-vmm and QEMU microvm:\n"
                     "         launch to console line, launch to exit, husk's VMM start to first KVM_RUN,\n"
                     "         and resident memory of each VMM\n"
                     "  boot   Linux guest (kernel-config/ vmlinux + test initramfs) boot to init, husk-vmm vs\n"
                     "         QEMU microvm; needs hardware KVM (run it inside tests/rig/run on PVM hosts)\n\n"
                  << opts
                  << "\nEnvironment: HUSK_BUILD_DIR (default build), HUSK_VMM, HUSK_QEMU, HUSK_GUESTS, HUSK_VMLINUX,\n"
                     "HUSK_INITRAMFS. bench/run-issue3 records both scenarios in bench/results/.\n";
        return vm.count("help") ? 0 : 2;
    }
    return scenario(vm["scenario"].as<std::string>(), vm["runs"].as<int>(), vm["out"].as<std::string>(), vm);
}
