// Scenario "agent": one container process (`true`) from a busybox rootfs, step
// by step, husk (husk-vmm --container + husk-agent), booted cold and restored
// from a template snapshot, against runc, interleaved.
//
// husk steps come from husk-vmm's debug log ("container: <phase> at <ms> ms"):
//   agent ready   launch → the agent answered Hello (the guest booted)
//   create        agent ready → process created (rootfs mounted, process set up)
//   start         created → started
//   exit          started → Exit reported (the process ran and its output drained)
//   teardown      Exit → husk-vmm gone (power-off, VM teardown)
// runc steps are its commands: `runc create`, `runc start`, start → the
// process reaped (we are its subreaper), `runc delete`.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "bench/common.h"
#include "tests/lib/container_specs.h"
#include "tests/lib/subprocess.h"
#include "vmm/base/subprocess.h"

namespace husk::bench {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

// Runs a command with stdio on /dev/null: `runc create` leaves the container's
// init holding whatever stdio it had, so pipes would never reach end of file.
int run(const std::vector<std::string>& argv) {
    auto pid = husk::sys::spawn(argv);  // stdio on /dev/null
    if (pid.is_error()) {
        fmt::print(stderr, "    {}\n", pid.error().message());
        return 127;
    }
    int code = husk::sys::wait_exit_status(pid.value());
    if (code != 0) fmt::print(stderr, "    {} {} failed ({})\n", argv[0], argv.size() > 1 ? argv[1] : "", code);
    return code;
}

}  // namespace

json agent_scenario(int runs, const std::string& kernel, const std::string& vmm) {
    json out;
    const std::string source = env_or("HUSK_SOURCE_DIR", ".");
    const std::string build = env_or("HUSK_BUILD_DIR", "build");
    const std::string image = env_or("HUSK_ROOTFS", build + "/tests/guests/rootfs/busybox-rootfs.ext4");
    const std::string runc = env_or("HUSK_RUNC", "runc");
    char tmpl[] = "/tmp/husk-bench-agent.XXXXXX";
    const std::string dir = ::mkdtemp(tmpl);

    // runc's bundle: the same busybox tree, unpacked, and `runc spec`'s defaults running `true`.
    const std::string bundle = dir + "/bundle";
    fs::create_directories(bundle);
    bool have_runc = run({source + "/tests/guests/rootfs/mkrootfs", "--dir", bundle + "/rootfs"}) == 0 &&
                     run({runc, "spec", "--bundle", bundle}) == 0;
    if (have_runc) {
        std::ifstream in(bundle + "/config.json");
        json spec = json::parse(in);
        spec["process"]["args"] = {"true"};
        spec["process"]["terminal"] = false;
        std::ofstream(bundle + "/config.json") << spec.dump(2);
    } else {
        out["runc_note"] = "runc is not usable here; the runc side was skipped";
    }
    // husk's config: the same process, the same mounts a minimal container gets.
    json config = {
        {"ociVersion", "1.0.2"},
        {"root", {{"path", "rootfs"}}},
        {"process", {{"args", {"true"}}, {"env", {"PATH=/bin"}}, {"cwd", "/"}, {"user", {{"uid", 0}, {"gid", 0}}}}},
        {"mounts",
         {{{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
          {{"destination", "/dev"}, {"type", "tmpfs"}, {"source", "tmpfs"}}}}};
    husk::test::write_container_specs(config.dump(), dir + "/container.specs");

    // The runc container's init is reparented to us once `runc create` exits: reap it ourselves.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);

    // The template: the same kernel and agent booted once and snapshotted
    // once the agent listens; the husk_template side restores it each run.
    const std::string template_dir = dir + "/template";
    fs::create_directories(dir + "/template-work");
    std::ofstream(dir + "/template-work/disk").close();
    auto made = husk::test::run_process(
        {vmm, "--kernel", kernel, "--memory", "256", "--drive", dir + "/template-work/disk", "--vsock",
         dir + "/template-work/vsock", "--console", "none", "--snapshot-on-ready", template_dir},
        {.timeout_seconds = 300});
    bool have_template = made.exit_status == 0;
    if (!have_template) {
        out["template_note"] = "the template could not be made: " + made.err.substr(0, 400);
        fmt::print(stderr, "  template failed: {}\n", made.err);
    }

    // husk: restored from the template (what `husk create` does); cold_boot: booted each run.
    std::map<std::string, std::vector<double>> husk, cold, peer;
    int failures = 0;
    auto husk_run = [&](std::map<std::string, std::vector<double>>& into, const char* label, int i,
                        std::vector<std::string> machine) {
        std::string disk = dir + "/disk.ext4";
        fs::copy_file(image, disk, fs::copy_options::overwrite_existing);
        std::string log = dir + "/vmm.log";
        fs::remove(log);
        husk::test::RunOptions o;
        o.timeout_seconds = 300;
        std::vector<std::string> argv = {vmm};
        argv.insert(argv.end(), machine.begin(), machine.end());
        argv.insert(argv.end(), {"--drive", disk, "--vsock", dir + "/vsock", "--container", dir + "/container.specs",
                                 "--debug", "--log", log});
        auto r = husk::test::run_process(argv, o);
        std::ifstream lf(log);
        std::string text((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
        auto ready = parse_ms(text, R"(container: agent ready at ([0-9.]+) ms)");
        auto created = parse_ms(text, R"(container: process created at ([0-9.]+) ms)");
        auto started = parse_ms(text, R"(container: process started at ([0-9.]+) ms)");
        auto exited = parse_ms(text, R"(container: exit reported at ([0-9.]+) ms)");
        if (r.exit_status != 0 || !ready || !created || !started || !exited) {
            ++failures;
            fmt::print(stderr, "  [{}/{}] {} failed (status {}): {}\n", i + 1, runs, label, r.exit_status,
                       text.substr(0, 600));
            return;
        }
        into["agent_ready_ms"].push_back(*ready);
        into["create_ms"].push_back(*created - *ready);
        into["start_ms"].push_back(*started - *created);
        into["exit_ms"].push_back(*exited - *started);
        into["teardown_ms"].push_back(r.exit_ms - *exited);
        into["create_start_exit_ms"].push_back(*exited - *ready);
        into["launch_to_exit_reported_ms"].push_back(*exited);
        into["total_ms"].push_back(r.exit_ms);
        fmt::print(stderr,
                   "  [{}/{}] {:5} ready {:7.1f}  create {:6.1f}  start {:6.1f}  exit {:6.1f}  total {:7.1f} ms\n",
                   i + 1, runs, label, *ready, *created - *ready, *started - *created, *exited - *started, r.exit_ms);
    };
    for (int i = 0; i < runs; ++i) {
        husk_run(cold, "cold", i, {"--kernel", kernel, "--memory", "256"});
        if (have_template) husk_run(husk, "husk", i, {"--restore", template_dir});
        if (!have_runc) continue;
        // runc
        std::string id = fmt::format("husk-bench-{}-{}", ::getpid(), i);
        std::string pidfile = dir + "/runc.pid";
        auto t0 = Clock::now();
        bool ok = run({runc, "create", "--bundle", bundle, "--pid-file", pidfile, id}) == 0;
        auto t1 = Clock::now();
        ok = ok && run({runc, "start", id}) == 0;
        auto t2 = Clock::now();
        if (ok) {
            std::ifstream pf(pidfile);
            pid_t pid = 0;
            pf >> pid;
            ok = pid > 0 && ::waitpid(pid, nullptr, 0) == pid;
        }
        auto t3 = Clock::now();
        run({runc, "delete", "--force", id});
        auto t4 = Clock::now();
        if (!ok) {
            ++failures;
            continue;
        }
        peer["create_ms"].push_back(ms_between(t0, t1));
        peer["start_ms"].push_back(ms_between(t1, t2));
        peer["exit_ms"].push_back(ms_between(t2, t3));
        peer["teardown_ms"].push_back(ms_between(t3, t4));
        peer["create_start_exit_ms"].push_back(ms_between(t0, t3));
        peer["total_ms"].push_back(ms_between(t0, t4));
        fmt::print(stderr,
                   "  [{}/{}] runc  create {:6.1f}  start {:6.1f}  exit {:6.1f}  delete {:6.1f}  total {:7.1f} ms\n",
                   i + 1, runs, ms_between(t0, t1), ms_between(t1, t2), ms_between(t2, t3), ms_between(t3, t4),
                   ms_between(t0, t4));
    }
    for (auto& [k, v] : husk) out["husk"][k] = stats(v);
    for (auto& [k, v] : cold) out["cold_boot"][k] = stats(v);
    for (auto& [k, v] : peer) out["runc"][k] = stats(v);
    out["failures"] = failures;
    if (!husk.empty() && !cold.empty()) {
        for (const char* k : {"agent_ready_ms", "launch_to_exit_reported_ms", "total_ms"})
            out["ratio_template_over_cold_boot"][k] =
                double(out["husk"][k]["median"]) / double(out["cold_boot"][k]["median"]);
        if (!peer.empty()) {
            // The whole container start, launch → the process's exit reported, against runc's create+start+exit.
            peer["launch_to_exit_reported_ms"] = peer["create_start_exit_ms"];
            out["runc"]["launch_to_exit_reported_ms"] = stats(peer["launch_to_exit_reported_ms"]);
            out["ratio_husk_over_runc"]["launch_to_exit_reported_ms"] =
                double(out["husk"]["launch_to_exit_reported_ms"]["median"]) /
                double(out["runc"]["launch_to_exit_reported_ms"]["median"]);
        }
        fmt::print(stderr,
                   "agent: median launch to exit reported: template {:.1f} ms, cold boot {:.1f} ms; runc "
                   "create+start+exit {:.1f} ms\n",
                   double(out["husk"]["launch_to_exit_reported_ms"]["median"]),
                   double(out["cold_boot"]["launch_to_exit_reported_ms"]["median"]),
                   peer.empty() ? 0.0 : double(out["runc"]["create_start_exit_ms"]["median"]));
    }
    if (!husk.empty() && !peer.empty()) {
        for (const char* k : {"create_ms", "start_ms", "exit_ms", "create_start_exit_ms", "total_ms"}) {
            double h = out["husk"][k]["median"], p = out["runc"][k]["median"];
            out["ratio_husk_over_runc"][k] = h / p;
        }
        fmt::print(stderr,
                   "agent: median create+start+exit husk {:.1f} ms, runc {:.1f} ms (ratio {:.2f}); total {:.1f} vs "
                   "{:.1f} ms\n",
                   double(out["husk"]["create_start_exit_ms"]["median"]),
                   double(out["runc"]["create_start_exit_ms"]["median"]),
                   double(out["ratio_husk_over_runc"]["create_start_exit_ms"]),
                   double(out["husk"]["total_ms"]["median"]), double(out["runc"]["total_ms"]["median"]));
    }
    out["note"] =
        "husk: husk-vmm --restore of a template snapshot made once before the runs (kernel + agent booted to a "
        "listening agent), rootfs disk attached after "
        "restore (what `husk create` does); cold_boot: the same, booting kernel + agent each run. agent ready = launch "
        "to the agent's Hello (guest boot or restore); create = rootfs mount + process setup; "
        "total = launch to husk-vmm exit. runc: its create/start/delete commands; exit = start to the process reaped. "
        "Same busybox tree (ext4 image for husk, a directory for runc), process `true`.";
    fs::remove_all(dir);
    return out;
}

}  // namespace husk::bench
