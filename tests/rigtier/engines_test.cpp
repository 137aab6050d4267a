// Rig tier: the husk runtime under the real engines — a private dockerd with
// `"runtimes": {"husk": ...}` and a private containerd driven by ctr through
// its runc shim (io.containerd.runc.v2 with --runc-binary husk). Each suite
// starts its own daemon once (TESTING.md "Real clients that run here").
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/lib/output_burst.h"
#include "tests/lib/subprocess.h"
#include "tests/rigtier/parity_cases.h"
#include "vmm/client/api_client.h"
#include "vmm/config/vm_config.h"

namespace husk::test {
namespace {

namespace fs = std::filesystem;

std::string env(const char* name) {
    return env_or(name);
}

std::string source_dir() {
    return env("HUSK_SOURCE_DIR").empty() ? "." : env("HUSK_SOURCE_DIR");
}

ProcessResult sh(const std::string& command, const std::string& input = "") {
    return shell(command, input);
}

// How often the output tests repeat each case (HUSK_OUTPUT_REPEATS, default
// 10; the soak runs 50, README "Test tiers").
int output_repeats() {
    std::string n = env("HUSK_OUTPUT_REPEATS");
    return n.empty() ? 10 : std::max(1, std::atoi(n.c_str()));
}

// Runs `command(i)` output_repeats() times, one after the other; each run
// must exit 0 with exactly the burst's output. Returns how many runs came up
// short (each also a failure). (Two `docker exec` bursts at a time hung in
// the rig, with the old husk as with this one: not understood yet.)
template <typename Command>
int repeat_burst(const Engines& engines, const OutputBurst& burst, Command command) {
    int bad = 0;
    for (int i = 0; i < output_repeats(); ++i) {
        ProcessResult r = command(i);
        std::string why = burst.compare(r.out, r.err);
        if (r.exit_status != 0 || !why.empty()) {
            ++bad;
            ADD_FAILURE() << "run " << i << ": exit " << r.exit_status << "; " << why
                          << (r.exit_status != 0 ? r.err.substr(0, 500) : "")
                          << newest_vmm_log_tail(engines.vmm_logs());
        }
    }
    std::printf("output burst (%zu+%zu MiB, %d interleaved lines): %d of %d runs whole\n", burst.first_mib,
                burst.second_mib, burst.lines, output_repeats() - bad, output_repeats());
    return bad;
}

// 2 MiB, interleaved stdout and stderr, 20 MiB, and a last word right
// before exit: the command of the lost-output report, and more.
OutputBurst engine_burst() {
    OutputBurst b;
    b.first_mib = 2;
    b.second_mib = 20;
    return b;
}

class Docker : public ::testing::Test {
protected:
    static inline Engines* s_engines = nullptr;
    static inline std::string s_docker;
    static inline bool s_ready = false;

    static void SetUpTestSuite() {
        s_engines = new Engines;
        s_engines->dir = "/tmp/husk-docker";
        fs::remove_all(s_engines->dir);
        s_ready = s_engines->start_docker(env("HUSK_RUNTIME")) && s_engines->import_busybox_docker(source_dir());
        s_docker = s_engines->docker;
    }
    static void TearDownTestSuite() {
        delete s_engines;
        s_engines = nullptr;
    }

    void SetUp() override {
        m_started = std::filesystem::file_time_type::clock::now();
        if (!s_ready) GTEST_FAIL() << s_engines->error;
    }
    void TearDown() override {
        if (HasFailure() && s_engines) std::printf("%s", vmm_errors_since(s_engines->vmm_logs(), m_started).c_str());
    }
    std::filesystem::file_time_type m_started;
    ProcessResult docker(const std::string& args, const std::string& input = "") {
        return sh(s_docker + " " + args, input);
    }
    static std::string run() { return "run --runtime husk --network none "; }
};

TEST_F(Docker, OutputAndExitCodes) {
    auto r = docker(run() + "--rm busybox:husk sh -c 'echo out; echo err >&2; exit 3'");
    EXPECT_EQ(r.exit_status, 3) << r.err;
    EXPECT_EQ(r.out, "out\n");
    EXPECT_EQ(r.err, "err\n");
    EXPECT_EQ(docker(run() + "--rm busybox:husk true").exit_status, 0);
}

// No byte lost under the shim's pipes, for the first process and for exec.
TEST_F(Docker, OutputArrivesWholeEveryTime) {
    OutputBurst burst = engine_burst();
    EXPECT_EQ(repeat_burst(*s_engines, burst,
                           [&](int) { return docker(run() + "--rm busybox:husk sh -c '" + burst.script() + "'"); }),
              0);
    ASSERT_EQ(docker(run() + "-d --name burst busybox:husk sleep 900").exit_status, 0);
    EXPECT_EQ(repeat_burst(*s_engines, burst, [&](int) { return docker("exec burst sh -c '" + burst.script() + "'"); }),
              0);
    EXPECT_EQ(docker("rm -f burst").exit_status, 0);
}

TEST_F(Docker, EnvWorkdirUserReadOnly) {
    auto r = docker(run() +
                    "--rm -e GREETING=hi -w /tmp -u 1000:1001 --read-only busybox:husk "
                    "sh -c 'echo $GREETING; pwd; id -u; id -g; touch /x 2>/dev/null || echo ro'");
    EXPECT_EQ(r.exit_status, 0) << r.err;
    EXPECT_EQ(r.out, "hi\n/tmp\n1000\n1001\nro\n");
}

TEST_F(Docker, StdinWithDashI) {
    std::string input(200000, 'z');
    auto r = docker(run() + "--rm -i busybox:husk wc -c", input);
    EXPECT_EQ(r.exit_status, 0) << r.err;
    EXPECT_NE(r.out.find("200000"), std::string::npos) << r.out;
}

TEST_F(Docker, TtyWithDashT) {
    // docker -t needs a terminal of its own: script(1) gives it one.
    auto r = sh("script -qec \"" + s_docker + " " + run() +
                "--rm -t busybox:husk sh -c '[ -t 1 ] && echo on-a-tty; exit 6'\" /dev/null");
    EXPECT_EQ(r.exit_status, 6) << r.out << r.err;
    EXPECT_NE(r.out.find("on-a-tty"), std::string::npos) << r.out;
}

TEST_F(Docker, ExecTopPauseKillAndRemove) {
    auto started = docker(run() + "-d --name busy busybox:husk sleep 300");
    ASSERT_EQ(started.exit_status, 0) << started.err;
    auto e = docker("exec busy sh -c 'echo in-exec; exit 4'");
    EXPECT_EQ(e.exit_status, 4) << e.err;
    EXPECT_EQ(e.out, "in-exec\n");
    // A documented difference (README): top lists the host processes of the container's cgroup, husk-vmm.
    auto top = docker("top busy");
    EXPECT_EQ(top.exit_status, 0) << top.err;
    EXPECT_NE(top.out.find("husk-vmm"), std::string::npos) << top.out;
    EXPECT_EQ(docker("pause busy").exit_status, 0);
    EXPECT_NE(docker("inspect -f '{{.State.Status}}' busy").out.find("paused"), std::string::npos);
    EXPECT_EQ(docker("unpause busy").exit_status, 0);
    EXPECT_EQ(docker("kill busy").exit_status, 0);
    auto waited = docker("wait busy");
    EXPECT_EQ(waited.out, "137\n") << waited.err;
    EXPECT_EQ(docker("rm -f busy").exit_status, 0);
}

// stop sends SIGTERM: a PID 1 with a handler exits by it; one without
// ignores it (as under runc) and stop's SIGKILL ends it after the timeout.
TEST_F(Docker, StopSendsTermAndRmForce) {
    ASSERT_EQ(
        docker(run() + "-d --name stopme busybox:husk sh -c 'trap \"exit 143\" TERM; sleep 300 & wait'").exit_status,
        0);
    EXPECT_EQ(docker("stop -t 20 stopme").exit_status, 0);
    EXPECT_EQ(docker("inspect -f '{{.State.ExitCode}}' stopme").out, "143\n");
    ASSERT_EQ(docker(run() + "-d --name deaf busybox:husk sleep 300").exit_status, 0);
    EXPECT_EQ(docker("stop -t 1 deaf").exit_status, 0);
    EXPECT_EQ(docker("inspect -f '{{.State.ExitCode}}' deaf").out, "137\n");
    EXPECT_EQ(docker("rm -f deaf").exit_status, 0);
    ASSERT_EQ(docker(run() + "-d --name rmme busybox:husk sleep 300").exit_status, 0);
    EXPECT_EQ(docker("rm -f rmme").exit_status, 0);
    EXPECT_EQ(docker("rm -f stopme").exit_status, 0);
    // Nothing of either container is left in husk's state.
    EXPECT_EQ(sh("ls -d " + s_engines->dir + "/docker-exec/runtime-*/moby/* 2>/dev/null | wc -l").out, "0\n");
}

// What a container sees of its network, compared between runc and husk
// (sh -c, single-quoted): eth0's address and routes, the last byte of its own
// address left out (each container gets the next one), eth0's MTU, and
// whether the default gateway answers a ping.
const std::string kNetworkSeen = single_quoted(
    "ip -o -4 addr show eth0 | while read n i f a r; do echo $i ${a%.*}; done; "
    "ip route | sed -E 's/(src [0-9.]+)\\.[0-9]+/\\1/'; cat /sys/class/net/eth0/mtu; "
    "set -- $(ip route | grep ^default); ping -c1 -W5 $3 >/dev/null && echo gateway reached");

// `seen` under runc and under husk: the same, and runc's own reached its gateway.
void expect_network_as_under_runc(const std::function<std::string(const std::string&)>& seen,
                                  const std::string& vmm_logs) {
    std::string runc = seen("runc"), husk = seen("husk");
    std::printf("network under runc:\n%s\nnetwork under husk:\n%s\n", runc.c_str(), husk.c_str());
    EXPECT_NE(runc.find("gateway reached"), std::string::npos) << "runc itself has no network here: " << runc;
    EXPECT_EQ(husk, runc) << newest_vmm_log_tail(vmm_logs, 80);
}

// Runs each parity case (parity_cases.h) under runc and under husk through
// one engine, `run(case, runtime)` with runtime "runc" or "husk", and compares
// stdout, stderr and exit status; a documented difference is checked against
// husk's expected output instead. Prints one line per case.
void compare_with_runc(const std::string& engine, const std::vector<ParityCase>& cases,
                       const std::function<ProcessResult(const ParityCase&, const std::string&)>& run,
                       const std::string& vmm_logs) {
    int differing = 0;
    for (const auto& c : cases) {
        SCOPED_TRACE(engine + ": " + c.name);
        ProcessResult runc = run(c, "runc"), husk = run(c, "husk");
        EXPECT_FALSE(runc.out.empty()) << "the case shows nothing under runc: " << runc.err;
        // A case the engine refuses (an option it does not have) would be the same under both, and test nothing.
        for (const char* usage : {"flag provided but not defined", "Incorrect Usage", "unknown flag"})
            EXPECT_EQ((runc.out + runc.err).find(usage), std::string::npos)
                << "the engine refused the case: " << runc.err;
        // An engine's message may name the container: its id differs from run to run.
        for (ProcessResult* r : {&runc, &husk})
            for (std::string* text : {&r->out, &r->err})
                *text = std::regex_replace(*text, std::regex("[0-9a-f]{64}"), "ID");
        bool same = runc.out == husk.out && runc.err == husk.err && runc.exit_status == husk.exit_status;
        // HUSK_PARITY_VERBOSE=1 shows what each case printed, to read a case's meaning.
        if (const char* v = std::getenv("HUSK_PARITY_VERBOSE"); v && std::string(v) == "1")
            for (const auto& [rt, r] : {std::pair<const char*, ProcessResult*>{"runc", &runc}, {"husk", &husk}})
                std::printf("--- %s under %s:\n%s--- stderr:\n%s", c.name.c_str(), rt, r->out.c_str(), r->err.c_str());
        std::printf("parity (%s): %-45s runc %d, husk %d%s\n", engine.c_str(), c.name.c_str(), runc.exit_status,
                    husk.exit_status,
                    same ? "" : (c.differs_because.empty() ? "  DIFFERENT" : "  different, as documented"));
        if (!c.differs_because.empty()) {
            EXPECT_EQ(husk.out, c.husk_out) << c.differs_because;
            continue;
        }
        differing += !same;
        EXPECT_EQ(husk.out, runc.out);
        EXPECT_EQ(husk.err, runc.err);
        // The VM's log says why a guest went away (a rig signature, tests/rig/signatures, say).
        EXPECT_EQ(husk.exit_status, runc.exit_status) << newest_vmm_log_tail(vmm_logs);
    }
    std::printf("parity (%s): %zu cases, %d differing from runc without a documented reason\n", engine.c_str(),
                cases.size(), differing);
}

// The parity suite (parity_cases.h): every case under runc and under husk,
// through this dockerd, and their stdout, stderr and exit status compared.
TEST_F(Docker, ContainersBehaveAsUnderRunc) {
    const std::string profile = s_engines->dir + "/no-mkdir.json";
    std::ofstream(profile) << R"({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]})";
    std::vector<ParityCase> cases = parity_cases();
    // Docker's own: Podman refuses a missing workdir itself.
    cases.push_back({"a missing cwd is made", "-w /made/for/you", "pwd; ls -ld . | cut -c1-10", "", "", ""});
    cases.push_back({"a custom seccomp profile", "--security-opt seccomp=" + profile,
                     "mkdir /tmp/d 2>&1; echo $?; " + kStatusFields, "", "", ""});
    compare_with_runc(
        "docker", cases,
        [&](const ParityCase& c, const std::string& runtime) {
            return docker("run --rm --network none --runtime " + runtime + " " + c.options + " busybox:husk sh -c " +
                              single_quoted(c.script),
                          c.input);
        },
        s_engines->vmm_logs());
}

// How the lifecycle flow drives an engine whose CLI is Docker's (Docker, Podman).
struct LifecycleEngine {
    std::function<ProcessResult(const std::string&)> cli;  // the engine with these arguments
    std::function<std::string(const std::string&)> run;    // its `run`, with runtime runc or husk
    std::string image;
    std::string command;  // the engine's command line, for script(1)
    std::string update;   // what `update` changes (Podman 4.3's has no --pids-limit)
};

// The parity suite's lifecycle half: the same engine commands against a
// container under runtime `rt` — exec with -u/-w/-e, kill with each common
// signal, logs, stop, wait, pause/unpause, a restart policy, -t — and what
// each shows, to compare with runc's.
std::string lifecycle_flow(const LifecycleEngine& e, const std::string& rt) {
    const std::string trap_all =
        "for s in HUP INT USR1 USR2 QUIT; do trap \"echo $s\" $s; done; trap \"echo TERM; exit 7\" TERM; echo ready; "
        "while :; do sleep 0.1; done";
    std::string name = "life", out;  // one name: the flows run one after the other
    auto step = [&](const std::string& what, const ProcessResult& r) {
        out += what + ": " + std::to_string(r.exit_status) + " " + r.out + (r.err.empty() ? "" : " err: " + r.err);
    };
    e.cli("rm -f " + name);
    out += "run: " +
           std::to_string(e.cli(e.run(rt) + " -d --network none --name " + name + " " + e.image + " sh -c " +
                                single_quoted(trap_all))
                              .exit_status) +
           "\n";  // not its output: the container's id
    // A container that never gets ready ends the flow at once (its steps would each wait in vain,
    // past the test's deadline), with what the engine says of it; the comparison then fails with
    // husk-vmm's log, where tests/run finds a rig fault by its signature.
    if (!wait_until([&] { return e.cli("logs " + name).out.find("ready") != std::string::npos; }, 60))
        return out + "never ready: " +
               e.cli("inspect -f '{{.State.Status}} {{.State.ExitCode}} {{.State.Error}}' " + name).out;
    step("exec", e.cli("exec -u 1000:1000 -w /tmp -e X=y " + name +
                       " sh -c 'id -u; id -g; pwd; echo $X; [ $$ != 1 ] && echo not-pid-1'"));
    step("update " + e.update, e.cli("update " + e.update + " " + name));
    // Its effect is seen in TheVmIsInTheContainersCgroup: in the rig, runc's exec finds /sys/fs/cgroup empty.
    // The runtimes word the error their own way; the status is the engine's.
    out += "exec missing cwd: " + std::to_string(e.cli("exec -w /nonexistent " + name + " true").exit_status) + "\n";
    // A wait that runs out says so in the flow, where the comparison shows which one it was.
    for (const char* sig : {"HUP", "INT", "USR1", "USR2", "QUIT"}) {
        e.cli("kill -s " + std::string(sig) + " " + name);
        if (!wait_until([&] { return e.cli("logs " + name).out.find(sig) != std::string::npos; }, 30))
            out += "no trap for " + std::string(sig) + " within 30 s\n";
    }
    step("pause", e.cli("pause " + name));
    step("paused", e.cli("inspect -f '{{.State.Status}}' " + name));
    step("unpause", e.cli("unpause " + name));
    step("stop", e.cli("stop -t 20 " + name));
    step("wait", e.cli("wait " + name));
    step("logs", e.cli("logs " + name));
    e.cli("rm -f " + name);
    // A restart policy: the engine restarts the failing container twice, then gives up.
    e.cli("rm -f " + name + "-restart");
    e.cli(e.run(rt) + " -d --network none --restart on-failure:2 --name " + name + "-restart " + e.image +
          " sh -c 'exit 3'");
    if (!wait_until(
            [&] {
                return e.cli("inspect -f '{{.RestartCount}} {{.State.Status}}' " + name + "-restart").out ==
                       "2 exited\n";
            },
            120))
        out += "not restarted twice and exited within 120 s\n";
    step("restarts",
         e.cli("inspect -f '{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}' " + name + "-restart"));
    e.cli("rm -f " + name + "-restart");
    // -t: a terminal of the engine's own (script(1) gives the engine one).
    step("tty", sh("script -qec \"" + e.command + " " + e.run(rt) + " --rm --network none -t " + e.image +
                   " sh -c '[ -t 0 ] && [ -t 1 ] && echo on-a-tty; stty size'\" /dev/null"));
    return out;
}

// The flows under runc and husk, the same; and runc's took every option (an
// option the engine lacks would fail alike under both, and test nothing).
void expect_lifecycle_as_under_runc(const LifecycleEngine& e, const std::string& vmm_logs) {
    std::string runc = lifecycle_flow(e, "runc"), husk = lifecycle_flow(e, "husk");
    // Podman's update answers with the container's id, which differs from run to run.
    for (std::string* text : {&runc, &husk}) *text = std::regex_replace(*text, std::regex("[0-9a-f]{64}"), "ID");
    std::printf("lifecycle under runc:\n%s\nlifecycle under husk:\n%s\n", runc.c_str(), husk.c_str());
    for (const char* usage : {"flag provided but not defined", "unknown flag"})
        EXPECT_EQ(runc.find(usage), std::string::npos) << runc;
    EXPECT_EQ(husk, runc) << newest_vmm_log_tail(vmm_logs);
}

TEST_F(Docker, LifecyclesBehaveAsUnderRunc) {
    LifecycleEngine e{[&](const std::string& args) { return docker(args); },
                      [](const std::string& rt) { return "run --runtime " + rt; }, "busybox:husk", s_docker,
                      "--pids-limit 50"};
    expect_lifecycle_as_under_runc(e, s_engines->vmm_logs());
}

// husk-vmm is the container's cgroup: docker stats sees the VM's memory, and
// --cpus (at run and by update) throttles it; rm leaves no cgroup behind.
// update --pids-limit reaches the container's cgroup in the guest.
TEST_F(Docker, TheVmIsInTheContainersCgroup) {
    ASSERT_EQ(docker(run() + "-d --name cg --cpus 0.5 busybox:husk sleep 300").exit_status, 0);
    pid_t pid = std::atoi(docker("inspect -f '{{.State.Pid}}' cg").out.c_str());
    std::string id = docker("inspect -f '{{.Id}}' cg").out;
    id = id.substr(0, id.find('\n'));
    std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
    std::string cgroup, line;
    while (std::getline(in, line))
        if (line.rfind("0::", 0) == 0) cgroup = line.substr(3);
    ASSERT_NE(cgroup.find(id), std::string::npos) << "husk-vmm (pid " << pid << ") is in `" << cgroup << "`";
    auto cpu_max = [&] { return sh("cat /sys/fs/cgroup" + cgroup + "/cpu.max").out; };
    EXPECT_EQ(cpu_max(), "50000 100000\n");
    auto stats = docker("stats --no-stream --format '{{.MemUsage}}' cg");
    EXPECT_EQ(stats.exit_status, 0) << stats.err;
    EXPECT_EQ(stats.out.rfind("0B ", 0), std::string::npos) << stats.out;
    auto u = docker("update --cpus 1 cg");
    EXPECT_EQ(u.exit_status, 0) << u.err;
    EXPECT_EQ(cpu_max(), "100000 100000\n");
    // The pids limit is the guest's: the container's own cgroup there, as its cgroup namespace shows it.
    auto pids_max = [&] { return docker("exec cg cat /sys/fs/cgroup/pids.max").out; };
    EXPECT_EQ(pids_max(), "max\n");
    auto p = docker("update --pids-limit 50 cg");
    EXPECT_EQ(p.exit_status, 0) << p.err;
    EXPECT_EQ(pids_max(), "50\n");
    EXPECT_EQ(docker("rm -f cg").exit_status, 0);
    EXPECT_FALSE(fs::exists("/sys/fs/cgroup" + cgroup)) << cgroup;
}

// Docker's default bridge, as with runc: eth0 with the bridge's address and
// route, a published port served to the host, the host reached from inside.
TEST_F(Docker, TheBridgeNetworkWorksAsUnderRunc) {
    expect_network_as_under_runc(
        [&](const std::string& rt) {
            auto r = docker("run --rm --runtime " + rt + " busybox:husk sh -c " + kNetworkSeen);
            return std::to_string(r.exit_status) + "\n" + r.out + r.err;
        },
        s_engines->vmm_logs());
    // --network none: the loopback, up, and no other interface (the VM's NIC is set aside in the guest).
    auto none = [&](const std::string& rt) {
        auto r =
            docker("run --rm --network none --runtime " + rt +
                   " busybox:husk sh -c 'ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags'");
        return std::to_string(r.exit_status) + "\n" + r.out + r.err;
    };
    EXPECT_EQ(none("husk"), none("runc"));
    // A published port: the host's request reaches httpd in the VM, and its answer comes back.
    docker("rm -f web");
    ASSERT_EQ(docker("run -d --runtime husk --name web -p 18080:80 busybox:husk httpd -f -p 80 -h /etc").exit_status,
              0);
    std::string hostname = docker("inspect -f '{{.Config.Hostname}}' web").out;
    std::string got;
    wait_until(
        [&] {
            got = sh("wget -q -T 5 -O- http://127.0.0.1:18080/hostname").out;
            return !got.empty();
        },
        60);
    EXPECT_EQ(got, hostname) << newest_vmm_log_tail(s_engines->vmm_logs());
    // What cannot work is refused at create, by name: the host's network, and another VM's.
    auto host = docker("run --rm --runtime husk --network host busybox:husk true");
    EXPECT_NE(host.exit_status, 0);
    EXPECT_NE(host.err.find("would share the host's network"), std::string::npos) << host.err;
    auto shared = docker("run --rm --runtime husk --network container:web busybox:husk true");
    EXPECT_NE(shared.exit_status, 0);
    EXPECT_NE(shared.err.find("another husk container's"), std::string::npos) << shared.err;
    // Nothing of either is left: no state directory, no husk-vmm beyond web's.
    EXPECT_EQ(sh("find " + s_engines->dir + "/docker-exec -name vm.toml | wc -l").out, "1\n")
        << sh("find /run /tmp -name vm.toml 2>/dev/null").out;
    EXPECT_EQ(sh("pgrep -c -x husk-vmm").out, "1\n");
    EXPECT_EQ(docker("rm -f web").exit_status, 0);
}

// A container on two networks (Compose connects each of a service's
// networks before it starts): eth0 and eth1, each with its address, MTU and
// routes, and the second network's gateway reached, as under runc. The VM
// gets a NIC for each, wired to a TAP of its own.
TEST_F(Docker, TwoNetworksAreWiredAsUnderRunc) {
    docker("network rm husk-second");
    auto made = docker("network create --subnet 172.31.78.0/24 husk-second");
    ASSERT_EQ(made.exit_status, 0) << made.err;
    const std::string seen = single_quoted(
        "for d in eth0 eth1; do ip -o -4 addr show $d | while read n i f a r; do echo $i ${a%.*}; done; "
        "cat /sys/class/net/$d/mtu; done; ip route | sed -E 's/(src [0-9.]+)\\.[0-9]+/\\1/'; "
        "ping -c1 -W5 172.31.78.1 >/dev/null && echo second gateway reached");
    expect_network_as_under_runc(
        [&](const std::string& rt) {
            const std::string name = "two-" + rt;
            docker("rm -f " + name);
            auto created = docker("create --runtime " + rt + " --name " + name + " busybox:husk sh -c " + seen);
            auto connected = docker("network connect husk-second " + name);
            auto r = docker("start -a " + name);
            docker("rm -f " + name);
            return std::to_string(created.exit_status) + std::to_string(connected.exit_status) + " " +
                   std::to_string(r.exit_status) + "\n" + r.out + r.err;
        },
        s_engines->vmm_logs());
    // Connected while it runs: not wired (the VM's NICs are made at create), and husk-vmm's log says so.
    docker("rm -f late");
    ASSERT_EQ(docker("run -d --runtime husk --name late busybox:husk sleep 300").exit_status, 0);
    EXPECT_EQ(docker("network connect husk-second late").exit_status, 0);
    const std::string log =
        s_engines->vmm_logs() + "/" + docker("inspect -f '{{.Id}}' late").out.substr(0, 64) + ".log";
    EXPECT_TRUE(wait_until(
        [&] { return sh("grep -c 'was added to the container.s namespace while it runs' " + log).out == "1\n"; }, 30))
        << sh("tail -20 " + log).out;
    docker("rm -f late");
    docker("network rm husk-second");
}

// A user-defined network, dual-stack: a container finds another by name
// through Docker's embedded DNS (127.0.0.11 in its resolv.conf), over UDP and
// over TCP, a husk container's name from a runc container and from a husk one
// alike; and it has its IPv6 address and default route, and reaches the
// other over IPv6. The client is husk-dns-query (beside rig_tests, bound in):
// busybox's resolver is glibc's, which its static build cannot use, under
// either runtime (its wget fails even on an address: nc fetches).
TEST_F(Docker, AUserNetworkResolvesNamesAsUnderRunc) {
    std::string query = fs::canonical("/proc/self/exe").parent_path().string() + "/husk-dns-query";
    ASSERT_TRUE(fs::exists(query)) << query;
    docker("rm -f named-web");
    docker("network rm husk-named");
    auto made = docker("network create --ipv6 --subnet 172.31.77.0/24 --subnet fd00:4b::/64 husk-named");
    ASSERT_EQ(made.exit_status, 0) << made.err;
    auto web = docker(
        "run -d --runtime husk --network husk-named --ip6 fd00:4b::80 --name named-web busybox:husk httpd -f -p 80 -h "
        "/etc");
    ASSERT_EQ(web.exit_status, 0) << web.err;
    std::string hostname = docker("inspect -f '{{.Config.Hostname}}' named-web").out;
    auto seen = [&](const std::string& rt) {
        auto r =
            docker("run --rm --network husk-named --runtime " + rt + " -v " + query +
                   ":/dnsq:ro busybox:husk sh -c 'grep ^nameserver /etc/resolv.conf; "
                   "/dnsq named-web tcp | grep -c \"^[0-9.]*$\"; "
                   "for i in $(seq 15); do ip=$(/dnsq named-web) && h=$(printf \"GET /hostname HTTP/1.0\\r\\n\\r\\n\" "
                   "| nc $ip 80 | tail -1) && [ -n \"$h\" ] && echo $h && break; sleep 2; done; "
                   "ip -o -6 addr show dev eth0 scope global | while read n i f a r; do echo $i ${a%::*}; done; "
                   "ip -6 route | grep ^default | cut -d\" \" -f1-3; ping -c1 -W5 fd00:4b::80 >/dev/null && "
                   "echo v6 reached; printf \"GET /hostname HTTP/1.0\\r\\n\\r\\n\" | nc fd00:4b::80 80 | tail -1'");
        return std::to_string(r.exit_status) + "\n" + r.out + r.err;
    };
    std::string runc = seen("runc");
    EXPECT_EQ(runc, "0\nnameserver 127.0.0.11\n1\n" + hostname + "eth0 fd00:4b\ndefault via fd00:4b::1\nv6 reached\n" +
                        hostname);
    EXPECT_EQ(seen("husk"), runc) << newest_vmm_log_tail(s_engines->vmm_logs());
    EXPECT_EQ(docker("rm -f named-web").exit_status, 0);
    EXPECT_EQ(docker("network rm husk-named").exit_status, 0);
}

// What a container sees of two bind-mounted host directories (one `:ro`)
// and what the host sees after: `run(options, script)` runs the busybox
// script with those options through one engine and runtime `rt`, as user
// 1000:1001. The same under runc and husk is the test.
std::string volumes_seen(const std::string& rt,
                         const std::function<ProcessResult(const std::string&, const std::string&)>& run) {
    std::string dir = "/tmp/husk-volume-" + rt;
    fs::remove_all(dir);
    fs::create_directories(dir + "/sub");
    std::ofstream(dir + "/sub/from-host") << "host says hi\n";
    // Made by root and given to the container's user, so that user may write in it under both runtimes.
    sh("chown -R 1000:1001 " + dir);
    // Set-id files the container's user may write: a write, an open with O_TRUNC and a truncate(2) each
    // clear both bits (the user has no CAP_FSETID; set-group-ID goes as the group may execute).
    for (const char* name : {"setid", "setid-otrunc", "setid-truncate"}) {
        std::ofstream(dir + "/" + name) << "x\n";
        sh("chown 1000:1001 " + dir + "/" + name + " && chmod 6775 " + dir + "/" + name);
    }
    std::string script =
        "cat /v/sub/from-host; echo guest >/v/from-guest; mkdir /v/made; ln -s from-guest /v/link; "
        "mv /v/made /v/moved; ls /v; readlink /v/link; rm /v/sub/from-host; ls /v/sub | wc -l; "
        "touch /r/x 2>&1 | sed s/^.*x/touch-x/; stat -c \"%u %g %a\" /v/from-guest; "
        "mkdir /v/many && cd /v/many && seq 600 | xargs touch && cd / && rm -rf /v/many && echo removed 600 files; "
        "echo y >>/v/setid; stat -c \"setid %a\" /v/setid; "
        ": >/v/setid-otrunc; stat -c \"O_TRUNC %a %s\" /v/setid-otrunc; "
        "truncate -s 1 /v/setid-truncate; stat -c \"truncate %a %s\" /v/setid-truncate";
    auto r = run("-u 1000:1001 -v " + dir + ":/v -v " + dir + "/sub:/r:ro", script);
    std::string host;
    struct stat st {};
    if (::stat((dir + "/from-guest").c_str(), &st) == 0)
        host = std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid) + " " + sh("cat " + dir + "/from-guest").out;
    host += fs::is_directory(dir + "/moved") ? "moved dir\n" : "no moved dir\n";
    host += fs::exists(dir + "/sub/from-host") ? "host file kept\n" : "host file removed\n";
    fs::remove_all(dir);
    return std::to_string(r.exit_status) + "\n" + r.out + r.err + "-- host:\n" + host;
}

// 200 MiB written through a volume (an 8 MiB random block, 25 times) and
// read back: the md5 the container printed as it wrote, then as it read.
const std::string kBigWrite =
    "dd if=/dev/urandom of=/tmp/block bs=1M count=8 2>/dev/null && "
    "for i in $(seq 25); do cat /tmp/block; done >/data/blob && md5sum /data/blob | cut -d\" \" -f1";
const std::string kBigRead = "md5sum /data/blob | cut -d\" \" -f1";

// Host directories bound with -v, read and written both ways (the owner the
// host sees is the container's user), `:ro` refusing writes with runc's
// message; a named volume outlives its container and 200 MiB go through it
// whole.
TEST_F(Docker, VolumesAreSharedBothWaysAsUnderRunc) {
    auto seen = [&](const std::string& rt) {
        return volumes_seen(rt, [&](const std::string& options, const std::string& script) {
            return docker("run --rm --network none --runtime " + rt + " " + options + " busybox:husk sh -c '" + script +
                          "'");
        });
    };
    std::string husk = seen("husk"), runc = seen("runc");
    EXPECT_EQ(husk, runc) << newest_vmm_log_tail(s_engines->vmm_logs());

    docker("volume rm -f husk-data");
    auto w = docker(run() + "--rm -v husk-data:/data busybox:husk sh -c '" + kBigWrite + "'");
    ASSERT_EQ(w.exit_status, 0) << w.err << newest_vmm_log_tail(s_engines->vmm_logs());
    auto r = docker(run() + "--rm -v husk-data:/data:ro busybox:husk sh -c '" + kBigRead + "'");
    EXPECT_EQ(r.exit_status, 0) << r.err;
    EXPECT_EQ(r.out, w.out);
    // The guest reads ahead a MiB on the shares (agent/spawn.h), so a large file costs a READ per MiB, not per
    // 128 KiB.
    auto ahead =
        docker(run() +
               "--rm -v husk-data:/data:ro busybox:husk sh -c "
               "'cat /sys/class/bdi/$(grep \" /data \" /proc/self/mountinfo | cut -d\" \" -f3)/read_ahead_kb'");
    EXPECT_EQ(ahead.out, "1024\n") << ahead.err;
    std::string where = docker("volume inspect -f '{{.Mountpoint}}' husk-data").out;
    if (!where.empty() && where.back() == '\n') where.pop_back();
    std::error_code ec;
    EXPECT_EQ(fs::file_size(where + "/blob", ec), 200u << 20) << ec.message();
    EXPECT_EQ(sh("md5sum " + where + "/blob | cut -d' ' -f1").out, w.out);
    EXPECT_EQ(docker("volume rm husk-data").exit_status, 0);
}

// The rootfs is the engine's own tree, shared: what the container writes is
// what `docker diff`, `docker cp` and `docker export` see, as under runc.
// (`docker cp` into and `docker exec` in a running runc container hung in
// the rig for the container's life, so they are not compared here.)
TEST_F(Docker, TheRootfsIsSharedSoDiffAndCpSeeWrites) {
    auto timed = [&](const std::string& args) {
        auto t0 = std::chrono::steady_clock::now();
        auto r = docker(args);
        std::printf("%6.1f s  docker %s\n",
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                    args.substr(0, 60).c_str());
        return r;
    };
    auto seen = [&](const std::string& rt) {
        std::string name = "rootfs-" + rt;
        docker("rm -f " + name);
        auto r = docker("run -d --network none --runtime " + rt + " --name " + name +
                        " busybox:husk sh -c 'echo written-inside >/made; mkdir -p /var/data; "
                        "echo more >/var/data/f; rm /bin/ls; touch /ready; sleep 600'");
        if (r.exit_status != 0) return "run: " + r.err;
        // Waited for through the engine's view, as the test reads it (a `docker exec` into a running runc
        // container hung in the rig until the container ended).
        wait_until([&] { return docker("diff " + name).out.find("A /ready") != std::string::npos; }, 60);
        // Under HUSK_JAIL=1 (tests/run's jailed rig), the VM serving that rootfs is jailed.
        if (rt == "husk" && env("HUSK_JAIL") == "1") {
            std::istringstream lines(sh("readlink /proc/self/ns/mnt; for p in $(pgrep -x husk-vmm); do "
                                        "readlink /proc/$p/ns/mnt; done")
                                         .out);
            std::string ours, theirs;
            std::getline(lines, ours);
            int vmms = 0;
            while (std::getline(lines, theirs)) {
                ++vmms;
                EXPECT_NE(theirs, ours) << "a husk-vmm shares the host's mount namespace: not jailed";
            }
            EXPECT_GE(vmms, 1) << "no husk-vmm running";
        }
        std::string out = timed("diff " + name + " | sort").out;
        out += timed("cp " + name + ":/made - | tar -xO").out;
        out += timed("export " + name + " | tar -t | grep -E '^(made|var/data/f|bin/ls)$' | sort").out;
        timed("rm -f " + name);
        return out;
    };
    std::string husk = seen("husk"), runc = seen("runc");
    EXPECT_EQ(husk, runc) << newest_vmm_log_tail(s_engines->vmm_logs());
    EXPECT_NE(husk.find("A /made"), std::string::npos) << husk;
}

TEST_F(Docker, MemoryLimitSizesTheGuest) {
    auto r = docker(run() + "--rm --memory 256m busybox:husk sh -c \"grep MemTotal /proc/meminfo\"");
    ASSERT_EQ(r.exit_status, 0) << r.err;
    long kib = std::stol(r.out.substr(r.out.find(':') + 1));
    EXPECT_GT(kib, 200 * 1024);
    EXPECT_LE(kib, 256 * 1024);
}

// husk-vmm's control socket, from its command line (the container's pid is husk-vmm's).
std::string api_socket_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), {});
    std::vector<std::string> argv;
    for (size_t at = 0; at < all.size();) {
        size_t end = all.find('\0', at);
        if (end == std::string::npos) end = all.size();
        argv.push_back(all.substr(at, end - at));
        at = end + 1;
    }
    // The runtime describes the VM in a vm.toml (husk-vmm --config FILE).
    for (size_t i = 0; i + 1 < argv.size(); ++i)
        if (argv[i] == "--config") {
            std::ifstream f(argv[i + 1]);
            std::string text((std::istreambuf_iterator<char>(f)), {});
            auto config = parse_vm_toml(text, argv[i + 1]);
            return config ? config.value().api_socket : std::string();
        }
    return {};
}

// docker update --memory moves the microVM's balloon: the guest gives back
// what lies above the new limit, and takes it again when the limit rises.
TEST_F(Docker, UpdateMemoryMovesTheBalloon) {
    auto started = docker(run() + "-d --name upd --memory 512m busybox:husk sleep 300");
    // What went wrong, for tests/run to tell a rig fault (tests/rig/signatures) from husk's.
    ASSERT_EQ(started.exit_status, 0) << started.err << newest_vmm_log_tail(s_engines->vmm_logs());
    pid_t pid = std::atoi(docker("inspect -f '{{.State.Pid}}' upd").out.c_str());
    std::string sock = api_socket_of(pid);
    ASSERT_FALSE(sock.empty()) << "no api.socket in husk-vmm's vm.toml (pid " << pid << ")";
    auto balloon = [&] {
        auto r = api_call(sock, {{"cmd", "balloon"}, {"stats", false}});
        return r ? r.value() : nlohmann::json{{"error", r.error().message()}};
    };
    EXPECT_EQ(balloon().value("target_mib", -1.0), 0.0) << balloon().dump();
    auto u = docker("update --memory 256m --memory-swap 512m upd");
    EXPECT_EQ(u.exit_status, 0) << u.err;
    EXPECT_EQ(balloon().value("target_mib", -1.0), 256.0) << balloon().dump();
    EXPECT_TRUE(wait_until([&] { return balloon().value("actual_mib", 0.0) >= 256; }, 240)) << balloon().dump();
    // The container runs on inside its smaller share.
    EXPECT_EQ(docker("exec upd true").exit_status, 0);
    // Growing beyond the microVM's size is refused and says why.
    u = docker("update --memory 1g --memory-swap 2g upd");
    EXPECT_NE(u.exit_status, 0);
    EXPECT_NE(u.err.find("not beyond"), std::string::npos) << u.err;
    EXPECT_EQ(balloon().value("target_mib", -1.0), 256.0) << balloon().dump();
    u = docker("update --memory 512m upd");
    EXPECT_EQ(u.exit_status, 0) << u.err;
    EXPECT_EQ(balloon().value("target_mib", -1.0), 0.0) << balloon().dump();
    EXPECT_EQ(docker("rm -f upd").exit_status, 0);
}

class Containerd : public ::testing::Test {
protected:
    static inline Engines* s_engines = nullptr;
    static inline std::string s_ctr;
    static inline bool s_ready = false;

    static void SetUpTestSuite() {
        s_engines = new Engines;
        s_engines->dir = "/tmp/husk-containerd";
        fs::remove_all(s_engines->dir);
        s_ready = s_engines->start_containerd() && s_engines->import_busybox_containerd(source_dir());
        s_ctr = s_engines->ctr;
    }
    static void TearDownTestSuite() {
        delete s_engines;
        s_engines = nullptr;
    }

    void SetUp() override {
        m_started = std::filesystem::file_time_type::clock::now();
        if (!s_ready) GTEST_FAIL() << s_engines->error;
    }
    void TearDown() override {
        if (HasFailure() && s_engines) std::printf("%s", vmm_errors_since(s_engines->vmm_logs(), m_started).c_str());
    }
    std::filesystem::file_time_type m_started;
    ProcessResult ctr(const std::string& args, const std::string& input = "") { return sh(s_ctr + " " + args, input); }
    static std::string run(const std::string& id) {
        return "run --rm --runc-binary " + env("HUSK_RUNTIME") + " docker.io/library/busybox:husk " + id + " ";
    }
};

TEST_F(Containerd, RunWithAndWithoutTty) {
    auto r = ctr(run("plain") + "sh -c 'echo via-shim; exit 7'");
    EXPECT_EQ(r.exit_status, 7) << r.err;
    EXPECT_EQ(r.out, "via-shim\n");
    auto t = sh("script -qec \"" + s_ctr + " run -t --rm --runc-binary " + env("HUSK_RUNTIME") +
                " docker.io/library/busybox:husk tty1 sh -c '[ -t 0 ] && echo tty-ok'\" /dev/null");
    EXPECT_EQ(t.exit_status, 0) << t.out << t.err;
    EXPECT_NE(t.out.find("tty-ok"), std::string::npos) << t.out;
}

TEST_F(Containerd, OutputArrivesWholeEveryTime) {
    OutputBurst burst = engine_burst();
    EXPECT_EQ(
        repeat_burst(*s_engines, burst,
                     [&](int i) { return ctr(run("burst" + std::to_string(i)) + "sh -c '" + burst.script() + "'"); }),
        0);
    auto started =
        ctr("run -d --runc-binary " + env("HUSK_RUNTIME") + " docker.io/library/busybox:husk bursts sleep 900");
    ASSERT_EQ(started.exit_status, 0) << started.err;
    EXPECT_EQ(repeat_burst(*s_engines, burst,
                           [&](int i) {
                               return ctr("task exec --exec-id b" + std::to_string(i) + " bursts sh -c '" +
                                          burst.script() + "'");
                           }),
              0);
    EXPECT_EQ(ctr("task kill -s SIGKILL bursts").exit_status, 0);
    EXPECT_TRUE(wait_until([&] { return ctr("task ls").out.find("STOPPED") != std::string::npos; }, 30));
    EXPECT_EQ(ctr("task rm bursts").exit_status, 0);
    EXPECT_EQ(ctr("container rm bursts").exit_status, 0);
}

// The parity suite through containerd: each case under runc and under husk.
// After the bursts: runc enables the cpu controller down the containers'
// cgroup path, and a VM in a cpu group of its own shares one weight on the
// rig's one engine CPU (runtime/cgroup.h).
TEST_F(Containerd, ContainersBehaveAsUnderRunc) {
    int n = 0;
    compare_with_runc(
        "containerd", containerd_parity_cases(),
        [&](const ParityCase& c, const std::string& runtime) {
            return ctr("run --rm --runc-binary " + (runtime == "runc" ? runtime : env("HUSK_RUNTIME")) + " " +
                           c.options + " docker.io/library/busybox:husk parity-" + std::to_string(++n) + " sh -c " +
                           single_quoted(c.script),
                       c.input);
        },
        s_engines->vmm_logs());
}

// `ctr run --cni` puts the network into the container's namespace between
// create and start (the task's pid is husk-vmm, in that namespace): the VM's
// NIC, unplugged at create, is plugged and wired at start, and the container
// sees what it sees under runc. Without --cni no network comes, and the
// unplugged NIC stays out of the guest's sight: only the loopback, as under runc.
TEST_F(Containerd, ACniNetworkAddedAfterCreateIsWiredAtStart) {
    // A bridge network of the test's own, with Debian's plugins where ctr looks for them.
    sh("mkdir -p /etc/cni/net.d /opt/cni && { [ -e /opt/cni/bin ] || ln -s /usr/lib/cni /opt/cni/bin; }");
    std::ofstream("/etc/cni/net.d/10-husk-test.conflist") << R"({
  "cniVersion": "0.4.0", "name": "husk-test",
  "plugins": [{"type": "bridge", "bridge": "huskcni0", "isGateway": true,
               "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/24"}]],
                        "routes": [{"dst": "0.0.0.0/0"}]}}]
})";
    int n = 0;
    auto runtime = [](const std::string& rt) { return rt == "runc" ? rt : env("HUSK_RUNTIME"); };
    expect_network_as_under_runc(
        [&](const std::string& rt) {
            auto r = ctr("run --rm --cni --runc-binary " + runtime(rt) + " docker.io/library/busybox:husk cni-" +
                         std::to_string(++n) + " sh -c " + kNetworkSeen);
            return std::to_string(r.exit_status) + "\n" + r.out + r.err;
        },
        s_engines->vmm_logs());
    std::remove("/etc/cni/net.d/10-husk-test.conflist");
    std::string links[2];
    for (int i = 0; i < 2; ++i) {
        auto r =
            ctr("run --rm --runc-binary " + runtime(i ? "husk" : "runc") + " docker.io/library/busybox:husk no-cni-" +
                std::to_string(i) + " sh -c 'ip -o link | cut -d: -f2 | tr -d \" \"'");
        links[i] = std::to_string(r.exit_status) + "\n" + r.out + r.err;
    }
    EXPECT_EQ(links[0], "0\nlo\n");
    EXPECT_EQ(links[1], links[0]) << newest_vmm_log_tail(s_engines->vmm_logs(), 80);
}

TEST_F(Containerd, TaskExecAndKill) {
    auto started =
        ctr("run -d --runc-binary " + env("HUSK_RUNTIME") + " docker.io/library/busybox:husk long sleep 300");
    ASSERT_EQ(started.exit_status, 0) << started.err;
    auto e = ctr("task exec --exec-id e1 long sh -c 'echo exec-out; exit 2'");
    EXPECT_EQ(e.exit_status, 2) << e.err;
    EXPECT_EQ(e.out, "exec-out\n");
    EXPECT_EQ(ctr("task kill -s SIGKILL long").exit_status, 0);
    EXPECT_TRUE(wait_until([&] { return ctr("task ls").out.find("STOPPED") != std::string::npos; }, 30))
        << ctr("task ls").out;
    EXPECT_EQ(ctr("task rm long").exit_status, 0);
    EXPECT_EQ(ctr("container rm long").exit_status, 0);
}

// Podman (no daemon): the Docker parity cases through `podman run`, with
// runc and with husk, each in its own container.
class Podman : public ::testing::Test {
protected:
    static inline Engines* s_engines = nullptr;
    static inline bool s_ready = false;

    static void SetUpTestSuite() {
        s_engines = new Engines;
        s_engines->dir = "/tmp/husk-podman";
        fs::remove_all(s_engines->dir);
        s_ready = s_engines->start_podman(env("HUSK_RUNTIME")) && s_engines->import_busybox_podman(source_dir());
    }
    static void TearDownTestSuite() {
        sh(s_engines->podman + " rm -af >/dev/null 2>&1");
        delete s_engines;
        s_engines = nullptr;
    }
    void SetUp() override {
        m_started = std::filesystem::file_time_type::clock::now();
        if (!s_ready) GTEST_FAIL() << s_engines->error;
    }
    void TearDown() override {
        if (HasFailure() && s_engines) std::printf("%s", vmm_errors_since(s_engines->vmm_logs(), m_started).c_str());
    }
    std::filesystem::file_time_type m_started;
    ProcessResult podman(const std::string& args, const std::string& input = "") {
        return sh(s_engines->podman + " " + args, input);
    }
    // Podman's options for runtime `rt` (runc, or husk by the name `husk install --podman` gave it).
    // Podman passes the runtime no environment of its own, so husk is told where to keep its VMs' logs
    // (for a failure's report) by a runtime flag.
    static std::string runtime_option(const std::string& rt) {
        if (rt == "runc") return "--runtime runc";
        return "--runtime husk --runtime-flag vmm-log-dir=" + s_engines->vmm_logs();
    }
};

// The lifecycle half of the parity suite through Podman (its CLI is Docker's).
TEST_F(Podman, LifecyclesBehaveAsUnderRunc) {
    LifecycleEngine e{[&](const std::string& args) { return podman(args); },
                      [](const std::string& rt) { return runtime_option(rt) + " run"; }, "localhost/busybox:husk",
                      s_engines->podman, "--cpus 1"};
    expect_lifecycle_as_under_runc(e, s_engines->vmm_logs());
}

TEST_F(Podman, ContainersBehaveAsUnderRunc) {
    compare_with_runc(
        "podman", parity_cases(),
        [&](const ParityCase& c, const std::string& runtime) {
            return podman(runtime_option(runtime) + " run --rm --network none " + c.options +
                              " localhost/busybox:husk sh -c " + single_quoted(c.script),
                          c.input);
        },
        s_engines->vmm_logs());
}

// The volume cases under Podman: bound host directories both ways and
// `:ro`, and a named volume.
TEST_F(Podman, VolumesAreSharedBothWaysAsUnderRunc) {
    auto runtime = [&](const std::string& rt) { return runtime_option(rt); };
    auto seen = [&](const std::string& rt) {
        return volumes_seen(rt, [&](const std::string& options, const std::string& script) {
            return podman(runtime(rt) + " run --rm --network none " + options + " localhost/busybox:husk sh -c " +
                          single_quoted(script));
        });
    };
    std::string husk = seen("husk"), runc = seen("runc");
    EXPECT_EQ(husk, runc) << newest_vmm_log_tail(s_engines->vmm_logs());

    podman("volume rm -f husk-data");
    auto w = podman(runtime("husk") +
                    " run --rm --network none -v husk-data:/data "
                    "localhost/busybox:husk sh -c " +
                    single_quoted(kBigWrite));
    ASSERT_EQ(w.exit_status, 0) << w.err << newest_vmm_log_tail(s_engines->vmm_logs());
    auto r = podman(runtime("husk") +
                    " run --rm --network none -v husk-data:/data:ro "
                    "localhost/busybox:husk sh -c " +
                    single_quoted(kBigRead));
    EXPECT_EQ(r.exit_status, 0) << r.err;
    EXPECT_EQ(r.out, w.out);
    EXPECT_EQ(podman("volume rm husk-data").exit_status, 0);
}

// Podman's default network (its bridge over CNI): Podman makes the namespace
// and fills it before create, and names it in config.json. (Podman drops
// NET_RAW, which busybox ping needs.)
TEST_F(Podman, TheDefaultNetworkWorksAsUnderRunc) {
    expect_network_as_under_runc(
        [&](const std::string& rt) {
            auto r =
                podman(runtime_option(rt) + " run --rm --cap-add NET_RAW localhost/busybox:husk sh -c " + kNetworkSeen);
            return std::to_string(r.exit_status) + "\n" + r.out + r.err;
        },
        s_engines->vmm_logs());
}

}  // namespace
}  // namespace husk::test
