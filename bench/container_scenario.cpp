// Scenario "container-start": end-to-end `docker run --rm IMAGE true` and
// `ctr run --rm IMAGE true`, husk against runc (and crun, when installed and
// working), interleaved, through private dockerd and containerd instances.
// With a real image too, when bench/make-debian-image has made one (Debian
// minbase with python3): `docker run --rm IMAGE python3 -c ...`.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "bench/common.h"
#include "tests/lib/subprocess.h"

namespace husk::bench {

json container_scenario(int runs, const std::string& runtime_path) {
    namespace fs = std::filesystem;
    // The engines run it from their own directories: the path must be absolute.
    const std::string runtime = fs::absolute(runtime_path).string();
    using Clock = std::chrono::steady_clock;
    json out;
    const std::string source = env_or("HUSK_SOURCE_DIR", ".");
    husk::test::Engines engines;
    engines.dir = "/tmp/husk-bench-engines";
    fs::remove_all(engines.dir);
    if (!engines.start_docker(runtime) || !engines.import_busybox_docker(source) || !engines.start_containerd() ||
        !engines.import_busybox_containerd(source)) {
        out["error"] = engines.error;
        out["failures"] = 1;
        return out;
    }
    struct Side {
        std::string name, command;
    };
    std::vector<Side> sides = {
        {"docker_husk", engines.docker + " run --rm --network none --runtime husk busybox:husk true"},
        {"docker_runc", engines.docker + " run --rm --network none --runtime runc busybox:husk true"},
        {"ctr_husk",
         engines.ctr + " run --rm --runc-binary " + runtime + " docker.io/library/busybox:husk husk-bench-{} true"},
        {"ctr_runc", engines.ctr + " run --rm docker.io/library/busybox:husk husk-bench-{} true"},
    };
    // A real image: 250 MB of Debian with python3, its interpreter started.
    const std::string debian = env_or("HUSK_BENCH_DEBIAN_TAR", "");
    if (!debian.empty()) {
        auto r = husk::test::shell(engines.docker + " import " + debian + " debian-python3:husk");
        if (r.exit_status == 0) {
            const std::string py = " debian-python3:husk python3 -c 'import json, sys; print(json.dumps(sys.path))'";
            sides.push_back({"docker_husk_python", engines.docker + " run --rm --network none --runtime husk" + py});
            sides.push_back({"docker_runc_python", engines.docker + " run --rm --network none --runtime runc" + py});
        } else {
            fmt::print(stderr, "  docker import of {} failed: {}\n", debian, r.err.substr(0, 300));
        }
    }
    // Any other runtime on the host gets the ctr side (crun refuses this host's hybrid cgroups: it is tried, and
    // dropped if it fails).
    if (::access("/usr/bin/crun", X_OK) == 0)
        sides.push_back(
            {"ctr_crun",
             engines.ctr + " run --rm --runc-binary /usr/bin/crun docker.io/library/busybox:husk husk-bench-{} true"});
    std::map<std::string, std::vector<double>> samples;
    std::map<std::string, int> failed;
    int counter = 0;
    for (int i = 0; i < runs; ++i) {
        for (const auto& side : sides) {
            std::string cmd = fmt::format(fmt::runtime(side.command), counter++);
            auto t0 = Clock::now();
            auto r = husk::test::shell(cmd);
            double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
            if (r.exit_status != 0) {
                ++failed[side.name];
                fmt::print(stderr, "  [{}/{}] {:12} failed ({}): {}\n", i + 1, runs, side.name, r.exit_status,
                           r.err.substr(0, 300));
                continue;
            }
            samples[side.name].push_back(ms);
            fmt::print(stderr, "  [{}/{}] {:12} {:8.1f} ms\n", i + 1, runs, side.name, ms);
        }
    }
    for (auto& [name, v] : samples) out[name] = stats(v);
    for (auto& [name, n] : failed) out["failed_runs"][name] = n;
    auto ratio = [&](const std::string& a, const std::string& b) -> json {
        if (!samples.count(a) || !samples.count(b)) return nullptr;
        return double(out[a]["median"]) / double(out[b]["median"]);
    };
    out["ratio_husk_over_runc"] = {{"docker_run", ratio("docker_husk", "docker_runc")},
                                   {"ctr_run", ratio("ctr_husk", "ctr_runc")},
                                   {"docker_run_python", ratio("docker_husk_python", "docker_runc_python")}};
    out["failures"] = failed.count("docker_husk") + failed.count("ctr_husk");
    out["note"] =
        "wall time of the client command, busybox image, process `true`, --network none for docker; "
        "docker_*_python: a Debian minbase image with python3 (bench/make-debian-image) printing sys.path; "
        "goal husk <= 1.3x runc";
    fmt::print(
        stderr,
        "container-start: docker run median husk {:.0f} ms / runc {:.0f} ms; ctr run husk {:.0f} / runc {:.0f}\n",
        samples.count("docker_husk") ? double(out["docker_husk"]["median"]) : -1.0,
        samples.count("docker_runc") ? double(out["docker_runc"]["median"]) : -1.0,
        samples.count("ctr_husk") ? double(out["ctr_husk"]["median"]) : -1.0,
        samples.count("ctr_runc") ? double(out["ctr_runc"]["median"]) : -1.0);
    return out;
}

}  // namespace husk::bench
