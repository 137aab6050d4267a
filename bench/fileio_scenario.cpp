// Scenario "file-io": file system work inside a container, husk (the rootfs
// and volumes served by virtio-fs) against runc (overlayfs, a bind mount),
// through a private dockerd. One busybox script per container times, from
// the container's own /proc/uptime: a 200 MiB sequential write (fsynced),
// reading it back, and a metadata loop (create, stat, unlink 10,000 files),
// once in the rootfs and once in a volume (a host directory bound with -v).
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "bench/common.h"
#include "tests/lib/subprocess.h"

namespace husk::bench {

namespace {

// Prints the container's uptime (10 ms resolution) before and after each
// step, in DIR: "t0 t1 t2 t3". MIB and FILES size the steps.
std::string script(const std::string& dir, int mib, int files) {
    return "t() { read u _ </proc/uptime; echo $u; }; a=$(t); dd if=/dev/zero of=" + dir +
           "/big bs=1M count=" + std::to_string(mib) + " conv=fsync 2>/dev/null || exit 3; b=$(t); dd if=" + dir +
           "/big of=/dev/null bs=1M 2>/dev/null || exit 4; c=$(t); mkdir " + dir + "/m && cd " + dir + "/m && seq " +
           std::to_string(files) + " | xargs touch && ls -l | wc -l >/dev/null && cd / && rm -rf " + dir +
           "/m || exit 5; d=$(t); rm -f " + dir + "/big; echo $a $b $c $d";
}

int env_count(const char* name, int fallback) {
    std::string v = env_or(name, "");
    int n = v.empty() ? fallback : std::atoi(v.c_str());
    return n > 0 ? n : fallback;
}

}  // namespace

json fileio_scenario(int runs, const std::string& runtime_path) {
    namespace fs = std::filesystem;
    json out;
    husk::test::Engines engines;
    if (!start_docker_with_busybox(engines, "/tmp/husk-bench-fileio", runtime_path, out)) return out;
    // The sizes by default; HUSK_BENCH_FILEIO_MIB and HUSK_BENCH_FILEIO_FILES scale them.
    const int mib = env_count("HUSK_BENCH_FILEIO_MIB", 200), files = env_count("HUSK_BENCH_FILEIO_FILES", 10000);
    out["mib"] = mib;
    out["files"] = files;
    const std::string volume = engines.dir + "/volume";
    fs::create_directories(volume);
    struct Side {
        std::string name, runtime, where;
    };
    const std::vector<Side> sides = {
        {"husk_rootfs", "husk", "/tmp"},
        {"runc_rootfs", "runc", "/tmp"},
        {"husk_volume", "husk", "/data"},
        {"runc_volume", "runc", "/data"},
    };
    std::map<std::string, std::map<std::string, std::vector<double>>> samples;  // side -> step -> seconds
    std::map<std::string, int> failed;
    for (int i = 0; i < runs; ++i) {
        for (const auto& side : sides) {
            auto r = husk::test::shell(engines.docker + " run --rm --network none --runtime " + side.runtime + " -v " +
                                           volume + ":/data busybox:husk sh -c " +
                                           husk::test::single_quoted(script(side.where, mib, files)),
                                       "", 900);
            double t[4];
            std::istringstream in(r.out);
            if (r.exit_status != 0 || !(in >> t[0] >> t[1] >> t[2] >> t[3])) {
                ++failed[side.name];
                fmt::print(stderr, "  [{}/{}] {:12} failed ({}): {}\n", i + 1, runs, side.name, r.exit_status,
                           (r.out + r.err).substr(0, 300));
                continue;
            }
            samples[side.name]["write_s"].push_back(t[1] - t[0]);
            samples[side.name]["read_s"].push_back(t[2] - t[1]);
            samples[side.name]["metadata_s"].push_back(t[3] - t[2]);
            fmt::print(stderr, "  [{}/{}] {:12} write {:6.2f} s  read {:6.2f} s  {} files {:6.2f} s\n", i + 1, runs,
                       side.name, t[1] - t[0], t[2] - t[1], files, t[3] - t[2]);
        }
    }
    for (auto& [side, steps] : samples)
        for (auto& [step, v] : steps) out[side][step] = stats(v);
    for (auto& [name, n] : failed) out["failed_runs"][name] = n;
    for (const char* where : {"rootfs", "volume"})
        for (const char* step : {"write_s", "read_s", "metadata_s"}) {
            std::string h = std::string("husk_") + where, r = std::string("runc_") + where;
            if (!out.contains(h) || !out.contains(r)) continue;
            double runc = out[r][step]["median"];
            out["ratio_husk_over_runc"][where][step] =
                runc > 0 ? json(double(out[h][step]["median"]) / runc) : json(nullptr);
        }
    out["failures"] = failed.count("husk_rootfs") + failed.count("husk_volume");
    out["note"] =
        "seconds from the container's /proc/uptime (10 ms resolution): dd of `mib` MiB with conv=fsync, dd reading "
        "it back (from whatever cache holds it, as a program would), then `files` files made with touch, listed with "
        "ls -l and removed with rm -rf; rootfs: /tmp in the image (runc: overlayfs; husk: the rootfs shared by "
        "virtio-fs); volume: a host directory bound with -v (runc: a bind mount; husk: virtio-fs). Ratios are "
        "husk over runc (lower is better for husk)";
    return out;
}

}  // namespace husk::bench
