// Scenario "invoke": a small function (busybox `echo`) per invocation through
// `husk serve` (a warm pool, an in-place reset after each), against a
// container per invocation: `docker run --rm` with runc and with husk, and
// `husk run` with the VM booted cold, all in the same run. Latency is the
// client's wall time per invocation; throughput is 4 clients on a pool of 2.
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "bench/common.h"
#include "tests/lib/http_client.h"
#include "tests/lib/subprocess.h"

namespace husk::bench {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

json invoke_scenario(int runs, const std::string& runtime) {
    json out;
    const std::string source = env_or("HUSK_SOURCE_DIR", ".");
    const std::string dir = "/tmp/husk-bench-invoke";
    fs::remove_all(dir);
    fs::create_directories(dir + "/bundle");
    if (husk::test::shell(source + "/tests/guests/rootfs/mkrootfs --dir " + dir + "/bundle/rootfs").exit_status != 0) {
        out["error"] = "mkrootfs failed";
        return out;
    }
    json config = {
        {"ociVersion", "1.0.2"},
        {"root", {{"path", "rootfs"}, {"readonly", true}}},
        {"process",
         {{"args", {"echo", "hi"}}, {"env", {"PATH=/bin"}}, {"cwd", "/"}, {"user", {{"uid", 0}, {"gid", 0}}}}},
        {"linux", {{"namespaces", {{{"type", "pid"}}, {{"type", "mount"}}}}}},
        {"mounts",
         {{{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
          {{"destination", "/dev"}, {"type", "tmpfs"}, {"source", "tmpfs"}},
          {{"destination", "/tmp"}, {"type", "tmpfs"}, {"source", "tmpfs"}}}}};
    std::ofstream(dir + "/bundle/config.json") << config.dump(2);
    const int invocations = std::max(runs, 1) * 20;
    int failures = 0;

    // husk serve: one daemon, one pool of 2.
    const std::string socket = dir + "/serve.sock";
    pid_t daemon = ::fork();
    if (daemon == 0) {
        ::setsid();
        std::string log = dir + "/serve.log";
        FILE* f = std::freopen(log.c_str(), "w", stderr);
        (void)f;
        ::execl(runtime.c_str(), "husk", "serve", "--socket", socket.c_str(), "--state", (dir + "/state").c_str(),
                nullptr);
        ::_exit(127);
    }
    for (int i = 0; i < 500 && !fs::exists(socket); ++i) ::usleep(20000);
    auto made_at = Clock::now();
    auto made = husk::test::http_request(socket, "POST", "/pools",
                                         json{{"name", "echo"}, {"bundle", dir + "/bundle"}, {"size", 2}}.dump());
    double pool_ms = ms_since(made_at);
    if (made.status != 201) {
        out["error"] = "the pool was not made: " + made.raw.substr(0, 400);
        ::kill(daemon, SIGKILL);
        ::waitpid(daemon, nullptr, 0);
        return out;
    }
    out["serve_pool_create_ms"]["husk"] = pool_ms;
    std::vector<double> wall, run, reset;
    const std::string body = json{{"args", {"echo", "hi"}}}.dump();
    for (int i = 0; i < invocations; ++i) {
        auto t = Clock::now();
        auto r = husk::test::http_request(socket, "POST", "/pools/echo/invoke", body);
        double ms = ms_since(t);
        json j = json::parse(r.body, nullptr, false);
        if (r.status != 200 || j.is_discarded() || j.value("stdout", "") != "hi\n") {
            ++failures;
            fmt::print(stderr, "  invoke {} failed: {}\n", i, r.raw.substr(0, 300));
            continue;
        }
        wall.push_back(ms);
        run.push_back(j["timings_us"].value("run", 0.0) / 1000);
        reset.push_back(j["timings_us"].value("reset", 0.0) / 1000);
    }
    out["invoke_ms"]["husk"] = stats(wall);  // paired by report.cpp with the peers below
    out["serve_run_ms"]["husk"] = stats(run);
    out["serve_reset_ms"]["husk"] = stats(reset);
    // Throughput: 4 clients at once on the pool of 2.
    {
        std::mutex lock;
        int done = 0;
        auto t = Clock::now();
        std::vector<std::thread> clients;
        for (int c = 0; c < 4; ++c)
            clients.emplace_back([&] {
                for (int i = 0; i < invocations / 4; ++i) {
                    auto r = husk::test::http_request(socket, "POST", "/pools/echo/invoke", body);
                    std::lock_guard guard(lock);
                    if (r.status == 200)
                        ++done;
                    else
                        ++failures;
                }
            });
        for (auto& c : clients) c.join();
        out["serve_invocations_per_s_4_clients"]["husk"] = done / (ms_since(t) / 1000);
    }
    fmt::print(stderr, "  husk serve: invoke p50 {:.1f} ms (reset p50 {:.1f} ms), {:.1f}/s with 4 clients\n",
               double(out["invoke_ms"]["husk"]["median"]), double(out["serve_reset_ms"]["husk"]["median"]),
               double(out["serve_invocations_per_s_4_clients"]["husk"]));
    // A real function: python3 in a Debian image (bench/make-debian-image), its imports warmed by the startup command.
    const std::string debian = env_or("HUSK_BENCH_DEBIAN_TAR", "");
    const std::string py_args = "python3 -c 'print(1)'";
    if (!debian.empty()) {
        fs::create_directories(dir + "/py/rootfs");
        json py = config;
        py["process"]["args"] = {"python3", "-c", "print(1)"};
        py["process"]["env"] = {"PATH=/usr/local/bin:/usr/bin:/bin"};
        std::ofstream(dir + "/py/config.json") << py.dump(2);
        auto unpacked = husk::test::shell("tar -C " + dir + "/py/rootfs -xf " + debian);
        auto pool =
            unpacked.exit_status != 0
                ? husk::test::HttpReply{0, "", "tar: " + unpacked.err}
                : husk::test::http_request(
                      socket, "POST", "/pools",
                      json{{"name", "py"}, {"bundle", dir + "/py"}, {"startup", {"python3", "-c", "import json, sys"}}}
                          .dump());
        if (pool.status != 201) {
            ++failures;
            fmt::print(stderr, "  the python3 pool was not made: {}\n", pool.raw.substr(0, 400));
        } else {
            std::vector<double> v;
            for (int i = 0; i < invocations / 2; ++i) {
                auto t = Clock::now();
                auto r = husk::test::http_request(socket, "POST", "/pools/py/invoke", "{}");
                json j = json::parse(r.body, nullptr, false);
                if (r.status != 200 || j.is_discarded() || j.value("stdout", "") != "1\n") {
                    ++failures;
                    fmt::print(stderr, "  python3 invoke {} failed: {}\n", i, r.raw.substr(0, 300));
                    continue;
                }
                v.push_back(ms_since(t));
            }
            out["python_invoke_ms"]["husk"] = stats(v);
            fmt::print(stderr, "  husk serve: python3 invoke p50 {:.1f} ms\n",
                       double(out["python_invoke_ms"]["husk"]["median"]));
        }
        husk::test::http_request(socket, "DELETE", "/pools/py");
        fs::remove_all(dir + "/py");
    }
    ::kill(daemon, SIGTERM);
    ::waitpid(daemon, nullptr, 0);

    // Peers, the same function: a container per invocation.
    const int peers = std::max(runs, 1) * 5;
    husk::test::Engines engines;
    if (start_docker_with_busybox(engines, dir + "/engines", runtime, out)) {
        for (const char* side : {"runc", "husk"}) {
            std::vector<double> v;
            for (int i = 0; i < peers; ++i) {
                auto t = Clock::now();
                auto r = husk::test::shell(
                    engines.docker + " run --rm --network none --runtime " + side + " busybox:husk echo hi", "", 300);
                if (r.exit_status != 0 || r.out != "hi\n") {
                    fmt::print(stderr, "  docker run ({}) failed: {}\n", side, (r.out + r.err).substr(0, 300));
                    if (std::string(side) == "husk") ++failures;
                    continue;
                }
                v.push_back(ms_since(t));
            }
            // runc's is the peer of husk serve; both of docker run's, of each other.
            out["docker_run_ms"][side] = stats(v);
            if (std::string(side) == "runc") out["invoke_ms"]["runc"] = out["docker_run_ms"]["runc"];
        }
        if (!debian.empty() &&
            husk::test::shell(engines.docker + " import " + debian + " debian-python3:husk").exit_status == 0) {
            std::vector<double> v;
            for (int i = 0; i < peers; ++i) {
                auto t = Clock::now();
                auto r = husk::test::shell(
                    engines.docker + " run --rm --network none --runtime runc debian-python3:husk " + py_args, "", 300);
                if (r.exit_status == 0 && r.out == "1\n") v.push_back(ms_since(t));
            }
            out["python_invoke_ms"]["runc"] = stats(v);
        }
    }
    // husk run with a cold boot (no template): the VM a platform without pools would start per invocation.
    {
        json cold = config;
        cold["annotations"] = {{"io.husk.template", "false"}};
        cold["linux"]["namespaces"].push_back({{"type", "network"}});
        fs::create_directories(dir + "/cold");
        fs::create_symlink(dir + "/bundle/rootfs", dir + "/cold/rootfs");
        std::ofstream(dir + "/cold/config.json") << cold.dump(2);
        std::vector<double> v;
        for (int i = 0; i < peers; ++i) {
            auto t = Clock::now();
            auto r = husk::test::shell(runtime + " --root " + dir + "/husk-state run --bundle " + dir + "/cold cold" +
                                           std::to_string(i) + " </dev/null",
                                       "", 300);
            if (r.exit_status != 0 || r.out != "hi\n") {
                ++failures;
                fmt::print(stderr, "  husk run (cold) failed: {}\n", (r.out + r.err).substr(0, 300));
                continue;
            }
            v.push_back(ms_since(t));
        }
        out["invoke_ms"]["cold_boot"] = stats(v);
    }
    if (out.contains("python_invoke_ms") && out["python_invoke_ms"].contains("runc") &&
        out["python_invoke_ms"].contains("husk") && out["python_invoke_ms"]["runc"].contains("median"))
        out["ratio_serve_over"]["python_runc"] =
            double(out["python_invoke_ms"]["husk"]["median"]) / double(out["python_invoke_ms"]["runc"]["median"]);
    for (const char* peer : {"runc", "cold_boot"})
        if (out["invoke_ms"].contains(peer) && out["invoke_ms"][peer].contains("median") &&
            out["invoke_ms"].contains("husk") && out["invoke_ms"]["husk"].contains("median"))
            out["ratio_serve_over"][peer] =
                double(out["invoke_ms"]["husk"]["median"]) / double(out["invoke_ms"][peer]["median"]);
    out["goal"] = "husk serve p50 ≤ 0.2× `docker run --rm` with runc (issue 22)";
    out["failures"] = failures;
    out["note"] = fmt::format(
        "busybox `echo hi`: {} sequential invocations through husk serve (a pool of 2 restored from a snapshot, each "
        "VM reset in place after its invocation; client wall time over the Unix socket), then {} from 4 clients at "
        "once; peers {} times each, a container per invocation: docker run --rm --network none with runc and with "
        "husk, and husk run with the VM booted cold (io.husk.template=false). invoke_ms: husk is husk serve, runc is "
        "docker run --rm with runc, cold_boot is husk run booted cold; python_invoke_ms: python3 -c 'print(1)' in a "
        "Debian minbase "
        "(bench/make-debian-image), husk serve (startup: import json, sys) against docker run --rm with runc",
        invocations, invocations / 4 * 4, peers);
    fs::remove_all(dir + "/state");
    return out;
}

}  // namespace husk::bench
