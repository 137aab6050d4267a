// Scenario "network": TCP between the host and a container on Docker's
// bridge, through a published port, husk against runc in the same rig run:
// the throughput of one 64 MiB HTTP download, the latency of small HTTP
// requests (one connection each), and `docker run --rm` with the network.
// busybox httpd serves in the container, from a tmpfs (--tmpfs /www) under
// both runtimes, so the figures are the network's and not the rootfs's
// (virtio-fs against overlayfs is file-io's); the client is here,
// in-process, so its own cost is a few system calls.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "bench/common.h"
#include "vmm/base/unique_fd.h"

namespace husk::bench {
namespace {

using Clock = std::chrono::steady_clock;

// GET `path` from 127.0.0.1:`port` over HTTP/1.0; the bytes of the reply, or -1.
long long http_get(int port, const std::string& path) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_port = htons(uint16_t(port));
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) < 0) return -1;
    std::string request = "GET " + path + " HTTP/1.0\r\n\r\n";
    if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) < 0) return -1;
    static char buffer[1 << 16];
    long long total = 0;
    for (;;) {
        ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) return total;
        total += n;
    }
}

}  // namespace

json network_scenario(int runs, const std::string& runtime_path) {
    namespace fs = std::filesystem;
    json out;
    husk::test::Engines engines;
    if (!start_docker_with_busybox(engines, "/tmp/husk-bench-network", runtime_path, out)) return out;
    const std::string docker = engines.docker;
    struct Side {
        std::string runtime;
        int port;
    };
    const Side sides[] = {{"husk", 18181}, {"runc", 18182}};
    constexpr long long kBig = 64ll << 20;
    int failures = 0;
    for (const auto& side : sides) {
        std::string name = "bench-net-" + side.runtime;
        husk::test::shell(docker + " rm -f " + name);
        auto r = husk::test::shell(
            docker + " run -d --runtime " + side.runtime + " --name " + name + " -p " + std::to_string(side.port) +
            ":80 --tmpfs /www busybox:husk sh -c 'echo ok > /www/small && "
            "dd if=/dev/zero of=/www/big bs=1M count=64 2>/dev/null && exec httpd -f -p 80 -h /www'");
        bool up = r.exit_status == 0 && husk::test::wait_until([&] { return http_get(side.port, "/small") > 0; }, 120);
        if (!up) {
            out["error"] = side.runtime + "'s container does not serve: " + r.err.substr(0, 300);
            out["failures"] = 1;
            return out;
        }
    }
    // The guest's interrupt counts (its /proc/interrupts) and CPU time (/proc/stat, in 1/100 s: user, nice,
    // system, idle, ...) around the downloads: how many interrupts the transfers took, and whether the guest's
    // one vCPU was busy throughout (the guest's own work then bounds husk's figure in the rig).
    auto guest_interrupts = [&] {
        return husk::test::shell(
                   docker +
                   " exec bench-net-husk sh -c \"grep -E 'virtio|LOC|RES|CAL' /proc/interrupts; head -1 /proc/stat\"")
            .out;
    };
    const std::string interrupts_before = guest_interrupts();
    std::map<std::string, std::vector<double>> samples;
    for (int i = 0; i < runs; ++i) {
        for (const auto& side : sides) {
            auto t0 = Clock::now();
            long long got = http_get(side.port, "/big");
            double s = std::chrono::duration<double>(Clock::now() - t0).count();
            if (got < kBig) {
                ++failures;
                fmt::print(stderr, "  [{}/{}] {} download failed ({} bytes)\n", i + 1, runs, side.runtime, got);
                continue;
            }
            samples[side.runtime + "_mib_per_s"].push_back(double(kBig >> 20) / s);
            std::vector<double> latency;
            for (int k = 0; k < 50; ++k) {
                auto q0 = Clock::now();
                if (http_get(side.port, "/small") <= 0) {
                    ++failures;
                    continue;
                }
                latency.push_back(std::chrono::duration<double, std::milli>(Clock::now() - q0).count());
            }
            for (double ms : latency) samples[side.runtime + "_request_ms"].push_back(ms);
            fmt::print(stderr, "  [{}/{}] {}: {:.0f} MiB/s, request median {:.2f} ms\n", i + 1, runs, side.runtime,
                       samples[side.runtime + "_mib_per_s"].back(), double(stats(latency)["median"]));
        }
    }
    // The container's side of eth0 (its /proc/net/dev line): bytes over packets sent shows whether large
    // segments (TSO) left it.
    for (const auto& side : sides)
        fmt::print(stderr, "  {} eth0: {}\n", side.runtime,
                   husk::test::shell(docker + " exec bench-net-" + side.runtime + " grep eth0: /proc/net/dev").out);
    fmt::print(stderr, "  husk guest interrupts before the downloads:\n{}  and after them (and the requests):\n{}",
               interrupts_before, guest_interrupts());
    for (const auto& side : sides) husk::test::shell(docker + " rm -f bench-net-" + side.runtime);
    // docker run --rm with the bridge network (husk restores its NIC template).
    for (int i = 0; i < runs; ++i)
        for (const auto& side : sides) {
            auto t0 = Clock::now();
            auto r = husk::test::shell(docker + " run --rm --runtime " + side.runtime + " busybox:husk true");
            double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
            if (r.exit_status != 0) {
                ++failures;
                continue;
            }
            samples[side.runtime + "_run_with_network_ms"].push_back(ms);
        }
    for (auto& [name, v] : samples) out[name] = stats(v);
    auto ratio = [&](const std::string& a, const std::string& b) -> json {
        if (!samples.count(a) || !samples.count(b)) return nullptr;
        return double(out[a]["median"]) / double(out[b]["median"]);
    };
    out["ratio_husk_over_runc"] = {{"throughput", ratio("husk_mib_per_s", "runc_mib_per_s")},
                                   {"request_latency", ratio("husk_request_ms", "runc_request_ms")},
                                   {"run_with_network", ratio("husk_run_with_network_ms", "runc_run_with_network_ms")}};
    out["failures"] = failures;
    out["note"] =
        "host to container over Docker's bridge and a published port (docker-proxy on 127.0.0.1): one 64 MiB HTTP "
        "download from a tmpfs per run, 50 small requests per run; goal throughput >= 0.5x runc, latency <= 2x runc";
    fmt::print(stderr, "network: throughput husk/runc {}, request latency husk/runc {}, run --rm husk/runc {}\n",
               out["ratio_husk_over_runc"]["throughput"].dump(), out["ratio_husk_over_runc"]["request_latency"].dump(),
               out["ratio_husk_over_runc"]["run_with_network"].dump());
    return out;
}

}  // namespace husk::bench
