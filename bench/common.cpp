#include "bench/common.h"

#include <fmt/format.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <thread>

#include "tests/lib/subprocess.h"
#include "vmm/probe/host_probe.h"

namespace husk::bench {

std::optional<double> parse_ms(const std::string& text, const std::string& pattern) {
    std::smatch m;
    if (std::regex_search(text, m, std::regex(pattern))) return std::stod(m[1]);
    return std::nullopt;
}

json stats(std::vector<double> v) {
    if (v.empty()) return nullptr;
    std::sort(v.begin(), v.end());
    auto pct = [&](double p) { return v[std::min(v.size() - 1, size_t(p * double(v.size() - 1) + 0.5))]; };
    return {{"n", v.size()},    {"min", v.front()}, {"median", pct(0.5)}, {"p90", pct(0.9)},
            {"p99", pct(0.99)}, {"max", v.back()},  {"samples", v}};
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
    std::string backend = husk::backend_module(husk::probe_host().backend);
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::time_t now = std::time(nullptr);
    char date[64];
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    return {{"hostname", host},
            {"kernel", std::string(u.release)},
            {"cpu", cpu},
            {"cpus", std::thread::hardware_concurrency()},
            {"kvm_backend", backend},
            {"in_rig", std::getenv("HUSK_RIG") != nullptr},
            {"date", date}};
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
    return {{"rss_kib", status_kib(p.pid(), "VmRSS")},
            {"rss_anon_kib", status_kib(p.pid(), "RssAnon")},
            {"rss_file_kib", status_kib(p.pid(), "RssFile")},
            {"rss_shmem_kib", status_kib(p.pid(), "RssShmem")}};
}

// Writes a scenario's JSON to `out_path`, or to stdout between markers for "-":
// they let a caller cut the result out of a stream that also carries progress
// (inside tests/rig/run, stderr and stdout arrive merged).
void write_result(const json& result, const std::string& out_path) {
    std::string text = result.dump(2) + "\n";
    if (out_path == "-") {
        std::cout << "----- husk-bench result -----\n" << text << "----- end husk-bench result -----\n";
    } else {
        std::ofstream(out_path) << text;
        fmt::print(stderr, "wrote {}\n", out_path);
    }
}

bool start_docker_with_busybox(husk::test::Engines& engines, const std::string& dir, const std::string& runtime,
                               json& out) {
    engines.dir = dir;
    std::filesystem::remove_all(dir);
    if (engines.start_docker(std::filesystem::absolute(runtime).string()) &&
        engines.import_busybox_docker(env_or("HUSK_SOURCE_DIR", ".")))
        return true;
    out["error"] = engines.error;
    out["failures"] = 1;
    return false;
}

}  // namespace husk::bench
