// Rig tier: `husk serve` end to end. A real daemon on a Unix socket, pools of
// VMs restored from a snapshot taken after the startup command, invocations
// from several clients at once, isolation between invocations, failures
// answered clearly while the pool goes on serving, and a shutdown (or a
// crash and a restart) that leaves nothing behind.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "tests/lib/http_client.h"
#include "tests/lib/subprocess.h"

namespace husk::test {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// Where the daemon also listens (--listen): loopback TCP.
constexpr const char* kTcp = "tcp:127.0.0.1:18471";

struct Reply {
    int status = 0;
    Json body;
    std::string raw;
};

// Whether the writable memory of husk-vmm `pid` (guest RAM, split into many
// mappings by resets and discards, and its own), read through /proc/PID/mem,
// holds `marker`.
bool guest_memory_holds(pid_t pid, const std::string& marker) {
    std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
    int mem = ::open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
    if (mem < 0) return false;
    std::vector<char> buf((1 << 20) + marker.size());
    bool found = false;
    for (std::string line; !found && std::getline(maps, line);) {
        unsigned long start = 0, end = 0;
        char perms[5] = {};
        if (std::sscanf(line.c_str(), "%lx-%lx %4s", &start, &end, perms) != 3 || perms[0] != 'r' || perms[1] != 'w')
            continue;
        size_t carry = 0;  // the end of the last chunk, for a marker split between two
        for (unsigned long at = start; !found && at < end; at += 1 << 20) {
            ssize_t n = ::pread(mem, buf.data() + carry, std::min<unsigned long>(1 << 20, end - at), off_t(at));
            if (n <= 0) break;
            std::string_view view(buf.data(), carry + size_t(n));
            found = view.find(marker) != std::string_view::npos;
            carry = std::min(view.size(), marker.size() - 1);
            std::memmove(buf.data(), view.data() + view.size() - carry, carry);
        }
    }
    ::close(mem);
    return found;
}

Reply http(const std::string& socket, const std::string& method, const std::string& path, const std::string& body) {
    HttpReply r = http_request(socket, method, path, body);
    return {r.status, Json::parse(r.body, nullptr, false), r.raw};
}

class Serve : public ::testing::Test {
protected:
    void SetUp() override {
        m_dir = "/tmp/husk-serve-rig";
        fs::remove_all(m_dir);
        fs::create_directories(m_dir);
        m_socket = m_dir + "/serve.sock";
        m_state = m_dir + "/state";
        ASSERT_EQ(shell(env_or("HUSK_SOURCE_DIR") + "/tests/guests/rootfs/mkrootfs --dir " + m_dir + "/bundle/rootfs")
                      .exit_status,
                  0);
        write_config(true);
        start_daemon();
    }
    // runc's default: a read-only root; what an invocation writes goes to /tmp, a tmpfs in the guest's memory.
    void write_config(bool pid_namespace) {
        Json namespaces = {{{"type", "mount"}}};
        if (pid_namespace) namespaces.push_back({{"type", "pid"}});
        Json c = {{"ociVersion", "1.0.2"},
                  {"root", {{"path", "rootfs"}, {"readonly", true}}},
                  {"process",
                   {{"args", {"sh", "-c", "echo default"}},
                    {"env", {"PATH=/bin:/sbin:/usr/bin", "FROM_BUNDLE=yes"}},
                    {"cwd", "/"},
                    {"user", {{"uid", 0}, {"gid", 0}}}}},
                  {"linux", {{"namespaces", namespaces}}},
                  {"mounts",
                   {{{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
                    {{"destination", "/dev"}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", {"mode=755"}}},
                    {{"destination", "/tmp"}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", {"mode=1777"}}}}}};
        std::ofstream(m_dir + "/bundle/config.json") << c.dump();
    }
    void TearDown() override {
        if (HasFailure()) std::fprintf(stderr, "husk serve's log:\n%s\n", log().c_str());
        stop_daemon(SIGKILL);
        // Whatever a failed test left: its VMs go with the state directory's next cleaning.
        shell("pkill -9 -f '[h]usk-vmm.*" + m_state + "' || true");
        fs::remove_all(m_dir);
    }

    void start_daemon() {
        m_daemon = ::fork();
        if (m_daemon == 0) {
            int log = ::open((m_dir + "/serve.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            ::dup2(log, 1);
            ::dup2(log, 2);
            std::string runtime = env_or("HUSK_RUNTIME");
            // HUSK_ENGINE_CPU=N: the daemon and its VMs on one rig CPU, as the engines' (tests/rig/signatures).
            if (std::string cpu = env_or("HUSK_ENGINE_CPU"); !cpu.empty()) {
                cpu_set_t one;
                CPU_ZERO(&one);
                CPU_SET(std::atoi(cpu.c_str()), &one);
                ::sched_setaffinity(0, sizeof one, &one);
            }
            ::execl(runtime.c_str(), "husk", "serve", "--socket", m_socket.c_str(), "--listen", kTcp + 4, "--state",
                    m_state.c_str(), "--drain", "20", nullptr);
            ::_exit(127);
        }
        for (int i = 0; i < 500 && !fs::exists(m_socket); ++i) ::usleep(20000);
        ASSERT_TRUE(fs::exists(m_socket)) << log();
    }
    int stop_daemon(int signal) {
        if (m_daemon <= 0) return -1;
        ::kill(m_daemon, signal);
        int status = 0;
        ::waitpid(m_daemon, &status, 0);
        m_daemon = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::string log() { return shell("grep -v ' 200 in ' " + m_dir + "/serve.log | tail -c 6000").out; }
    Reply call(const std::string& method, const std::string& path, const Json& body = nullptr) {
        return http(m_socket, method, path, body.is_null() ? std::string() : body.dump());
    }
    Reply make_pool(Json config) {
        config["bundle"] = m_dir + "/bundle";
        return call("POST", "/pools", config);
    }
    // husk-vmm processes serving from this test's state directory.
    int vmms() {
        auto r = shell("pgrep -f '[h]usk-vmm.*" + m_state + "' | wc -l");
        return std::atoi(r.out.c_str());
    }

    std::string m_dir, m_socket, m_state;
    pid_t m_daemon = -1;
};

// A pool of 2 serving 50 invocations from 4 clients at once: every output is
// the right one, and nothing one invocation leaves (a file, an environment
// change, a background process) is there for the next; no two see the same
// random numbers. The startup command's work (a file in /tmp) is in every VM.
TEST_F(Serve, APoolOfTwoServesFourClientsInCleanVms) {
    auto made = make_pool({{"name", "fn"},
                           {"size", 2},
                           {"env", {"FROM_POOL=yes"}},
                           {"startup", {"sh", "-c", "echo warmed > /tmp/warm"}}});
    ASSERT_EQ(made.status, 201) << made.raw << log();
    EXPECT_EQ(made.body["vms"]["idle"], 2) << made.raw;
    const std::string script =
        "cat /tmp/warm; [ -e /tmp/left ] && echo LEFT; touch /tmp/left; pidof sleep >/dev/null && echo SLEEPER; "
        "sleep 1000 >/dev/null 2>&1 & "
        "[ -n \"$EXPORTED\" ] && echo EXPORTED; export EXPORTED=1; "
        "echo \"n=$N $FROM_BUNDLE $FROM_POOL\"; cat; echo to-stderr >&2; "
        "echo \"pid=$$\"; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; exit $((N % 7))";
    std::mutex lock;
    std::set<std::string> randoms, vms;
    auto client = [&](int first) {
        for (int n = first; n < 50; n += 4) {
            auto r = call("POST", "/pools/fn/invoke",
                          {{"args", {"sh", "-c", script}},
                           {"env", {"N=" + std::to_string(n)}},
                           {"stdin", "in-" + std::to_string(n) + "\n"}});
            std::string want = "warmed\nn=" + std::to_string(n) + " yes yes\nin-" + std::to_string(n) + "\npid=1\n";
            EXPECT_EQ(r.status, 200) << r.raw;
            std::string out = r.body.value("stdout", "");
            EXPECT_EQ(out.substr(0, want.size()), want) << "invocation " << n << ": " << r.raw;
            EXPECT_EQ(r.body.value("stderr", ""), "to-stderr\n") << r.raw;
            EXPECT_EQ(r.body.value("exit_status", -1), n % 7) << r.raw;
            std::lock_guard guard(lock);
            std::string random = out.size() > want.size() ? out.substr(want.size()) : "";
            EXPECT_EQ(random.size(), 33u) << out;
            EXPECT_TRUE(randoms.insert(random).second) << "the same random numbers twice: " << random;
            vms.insert(std::to_string(r.body.value("vm", -1)));
        }
    };
    std::vector<std::thread> clients;
    for (int i = 0; i < 4; ++i) clients.emplace_back(client, i);
    for (auto& t : clients) t.join();
    EXPECT_EQ(randoms.size(), 50u);
    EXPECT_EQ(vms, (std::set<std::string>{"0", "1"}));
    auto status = call("GET", "/pools/fn");
    EXPECT_EQ(status.body.value("invocations", 0), 50) << status.raw;
    EXPECT_EQ(status.body.value("resets", 0), 50) << status.raw;
    EXPECT_EQ(status.body.value("failures", -1), 0) << status.raw;
    auto metrics = http(m_socket, "GET", "/metrics", "");
    EXPECT_NE(metrics.raw.find("husk_serve_invocations_total{pool=\"fn\"} 50"), std::string::npos) << metrics.raw;
    EXPECT_NE(metrics.raw.find("husk_serve_resets_total{pool=\"fn\"} 50"), std::string::npos) << metrics.raw;
    // Streamed: NDJSON lines as output comes, past the 1 MiB cap of a kept reply, the result last.
    HttpReply lines = http_request(
        m_socket, "POST", "/pools/fn/invoke",
        Json{{"args", {"sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' a; echo é >&2"}}, {"stream", true}}.dump());
    EXPECT_EQ(lines.status, 200) << lines.raw.substr(0, 300);
    size_t out_bytes = 0;
    std::string err_text;
    Json last;
    std::istringstream in(lines.body);
    for (std::string line; std::getline(in, line);) {
        Json j = Json::parse(line, nullptr, false);
        ASSERT_FALSE(j.is_discarded()) << line.substr(0, 200);
        if (j.contains("stdout")) out_bytes += j["stdout"].get<std::string>().size();
        if (j.contains("stderr")) err_text += j["stderr"].get<std::string>();
        last = j;
    }
    EXPECT_EQ(out_bytes, 3000000u);
    EXPECT_EQ(err_text, "é\n");
    EXPECT_EQ(last.value("exit_status", -1), 0) << last.dump();
    // The bundle's own args when none are given.
    auto plain = call("POST", "/pools/fn/invoke", Json::object());
    EXPECT_EQ(plain.body.value("stdout", ""), "default\n") << plain.raw;

    // A graceful stop: exit 0, and no VM, socket or state left.
    EXPECT_EQ(stop_daemon(SIGTERM), 0) << log();
    EXPECT_EQ(vmms(), 0);
    EXPECT_FALSE(fs::exists(m_socket));
    EXPECT_FALSE(fs::exists(m_state));
}

// A timeout, an oversized output and a guest that goes down each get a clear error;
// the VM is replaced and the pool serves on. Malformed requests get 400.
TEST_F(Serve, FailuresAreAnsweredAndThePoolServesOn) {
    // No PID namespace: the invocation that reboots the guest reboots the VM, as a crash would end it.
    write_config(false);
    auto made = make_pool({{"name", "f"},
                           {"size", 1},
                           {"queue", 0},
                           {"timeout_ms", 4000},
                           {"max_output_bytes", 100000},
                           {"memory_limit_mib", 16}});
    ASSERT_EQ(made.status, 201) << made.raw << log();
    auto ok = [&] {
        auto r = call("POST", "/pools/f/invoke", {{"args", {"echo", "ok"}}});
        EXPECT_EQ(r.status, 200) << r.raw << log();
        EXPECT_EQ(r.body.value("stdout", ""), "ok\n") << r.raw;
    };
    ok();
    // Past the queue (none here) a caller is refused at once, not kept waiting.
    auto busy = std::async(std::launch::async, [&] {
        return call("POST", "/pools/f/invoke", {{"args", {"sleep", "2"}}});
    });
    for (int i = 0; i < 200 && call("GET", "/pools/f").body["vms"].value("busy", 0) == 0; ++i) ::usleep(10000);
    auto refused = call("POST", "/pools/f/invoke", {{"args", {"true"}}});
    EXPECT_EQ(refused.status, 429) << refused.raw;
    EXPECT_NE(refused.body.value("error", "").find("busy"), std::string::npos) << refused.raw;
    EXPECT_EQ(busy.get().status, 200);
    auto slow = call("POST", "/pools/f/invoke", {{"args", {"sleep", "60"}}});
    EXPECT_EQ(slow.status, 504) << slow.raw;
    EXPECT_NE(slow.body.value("error", "").find("did not finish in 4000 ms"), std::string::npos) << slow.raw;
    ok();
    auto big = call("POST", "/pools/f/invoke", {{"args", {"head", "-c", "300000", "/dev/zero"}}});
    EXPECT_EQ(big.status, 502) << big.raw;
    EXPECT_NE(big.body.value("error", "").find("more than 100000 bytes"), std::string::npos) << big.raw;
    ok();
    // Past its memory limit: the guest's OOM killer stops it, and the caller is told so.
    auto hungry = call(
        "POST", "/pools/f/invoke",
        // At its limit the guest may reclaim busybox's own pages again and again before the OOM killer
        // comes (over 30 s under the rig's TCG): either way the answer names the memory limit.
        {{"args", {"sh", "-c", "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo ${#x}"}}, {"timeout_ms", 30000}});
    EXPECT_EQ(hungry.status, 502) << hungry.raw;
    EXPECT_NE(hungry.body.value("error", "").find("ran out of memory: it needed more than its memory limit of 16 MiB"),
              std::string::npos)
        << hungry.raw;
    ok();
    // Below it, the same kind of work runs.
    auto modest = call(
        "POST", "/pools/f/invoke",
        {{"args", {"sh", "-c", "x=$(head -c 2097152 /dev/zero | tr '\\0' a); echo ${#x}"}}, {"timeout_ms", 30000}});
    EXPECT_EQ(modest.body.value("stdout", ""), "2097152\n") << modest.raw;
    auto crash = call("POST", "/pools/f/invoke", {{"args", {"sh", "-c", "reboot -f; sleep 10"}}});
    EXPECT_EQ(crash.status, 502) << crash.raw;
    EXPECT_NE(crash.body.value("error", "").find("VM"), std::string::npos) << crash.raw;
    ok();
    auto missing = call("POST", "/pools/f/invoke", {{"args", {"/no/such/binary"}}});
    EXPECT_TRUE(missing.status == 400 || (missing.status == 200 && missing.body.value("exit_status", 0) == 127))
        << missing.raw;
    ok();

    EXPECT_EQ(http(m_socket, "POST", "/pools/f/invoke", "{not json").status, 400);
    EXPECT_EQ(call("POST", "/pools/f/invoke", {{"argz", {"x"}}}).status, 400);
    EXPECT_EQ(call("POST", "/pools/f/invoke", {{"args", "echo"}}).status, 400);
    EXPECT_EQ(call("POST", "/pools/nope/invoke", Json::object()).status, 404);
    EXPECT_EQ(call("PUT", "/pools/f").status, 405);
    EXPECT_EQ(make_pool({{"name", "f"}}).status, 409);
    EXPECT_EQ(make_pool({{"name", "../x"}}).status, 400);
    auto nobundle = call("POST", "/pools", {{"name", "nobundle"}, {"bundle", "/nonexistent"}});
    EXPECT_EQ(nobundle.status, 400) << nobundle.raw;
    EXPECT_NE(nobundle.body.value("error", "").find("/nonexistent/config.json"), std::string::npos) << nobundle.raw;
    EXPECT_EQ(http(m_socket, "GARBAGE", "", "").status, 400);
    ok();
    auto status = call("GET", "/pools/f");
    EXPECT_EQ(status.body.value("timeouts", 0), 1) << status.raw;
    EXPECT_EQ(status.body.value("output_overflows", 0), 1) << status.raw;
    EXPECT_EQ(status.body.value("memory_kills", 0), 1) << status.raw;
    EXPECT_EQ(status.body.value("refused", 0), 1) << status.raw;
    EXPECT_GE(status.body.value("replaced", 0), 4) << status.raw;
    EXPECT_EQ(call("DELETE", "/pools/f").status, 200);
    EXPECT_EQ(vmms(), 0);

    // A pool from a root filesystem directory: husk spec's config, its args,
    // a PID namespace, and a /tmp to write to.
    auto dir_pool = call("POST", "/pools",
                         {{"name", "d"},
                          {"rootfs", m_dir + "/bundle/rootfs"},
                          {"args", {"sh", "-c", "echo x > /tmp/f && cat /tmp/f && echo pid=$$ && hostname"}}});
    ASSERT_EQ(dir_pool.status, 201) << dir_pool.raw << log();
    auto from_dir = call("POST", "/pools/d/invoke", Json::object());
    EXPECT_EQ(from_dir.body.value("stdout", ""), "x\npid=1\nhusk\n") << from_dir.raw;
    EXPECT_EQ(call("DELETE", "/pools/d").status, 200);
    EXPECT_EQ(vmms(), 0);
}

// A daemon killed outright leaves its VMs; the next one on the same state
// directory stops them and starts clean. A SIGTERM lets what runs finish.
TEST_F(Serve, ARestartAfterACrashLeavesNothingBehind) {
    ASSERT_EQ(make_pool({{"name", "c"}, {"size", 2}}).status, 201) << log();
    EXPECT_EQ(vmms(), 2);
    stop_daemon(SIGKILL);
    EXPECT_EQ(vmms(), 2) << "VMs outlive a killed daemon";
    start_daemon();
    for (int i = 0; i < 100 && vmms() > 0; ++i) ::usleep(50000);
    EXPECT_EQ(vmms(), 0) << log();
    EXPECT_EQ(call("GET", "/pools").body, (Json{{"pools", Json::array()}}));
    ASSERT_EQ(make_pool({{"name", "c"}, {"size", 1}, {"max_size", 2}, {"scale_down_ms", 1500}}).status, 201) << log();
    EXPECT_EQ(call("POST", "/pools/c/invoke", {{"args", {"echo", "again"}}}).body.value("stdout", ""), "again\n");
    // The same API on TCP (--listen, loopback).
    auto tcp = http(kTcp, "POST", "/pools/c/invoke", Json{{"args", {"echo", "tcp"}}}.dump());
    EXPECT_EQ(tcp.status, 200) << tcp.raw;
    EXPECT_EQ(tcp.body.value("stdout", ""), "tcp\n") << tcp.raw;
    // Two at once in a pool of size 1 (max_size 2): a second VM is restored
    // for the second, then stopped once it has been idle for scale_down_ms.
    auto two = [&](const char* word) {
        return std::async(std::launch::async, [&, word] {
            return call("POST", "/pools/c/invoke", {{"args", {"sh", "-c", std::string("sleep 1; echo ") + word}}});
        });
    };
    auto a = two("a"), b = two("b");
    EXPECT_EQ(a.get().body.value("stdout", ""), "a\n");
    EXPECT_EQ(b.get().body.value("stdout", ""), "b\n");
    EXPECT_EQ(call("GET", "/pools/c").body.value("scaled_up", 0), 1);
    for (int i = 0; i < 300 && call("GET", "/pools/c").body.value("scaled_down", 0) == 0; ++i) ::usleep(100000);
    EXPECT_EQ(call("GET", "/pools/c").body.value("scaled_down", 0), 1) << log();
    EXPECT_EQ(vmms(), 1);
    // A memory pattern one invocation leaves is gone for the next: the VM's
    // RAM holds it while the invocation runs, and no more after the reset.
    // (The marker is made in the guest: the request never carries it whole.)
    pid_t vmm = pid_t(std::atoi(shell("pgrep -f '[h]usk-vmm.*" + m_state + "' | head -1").out.c_str()));
    ASSERT_GT(vmm, 0);
    const std::string marker = "ISOLATIONTEST";
    auto holding = std::async(std::launch::async, [&] {
        return call("POST", "/pools/c/invoke",
                    {{"args",
                      {"sh", "-c",
                       "m=$(printf 'ISO%sTEST' LATION); x=$(yes \"$m\" | head -c 1048576); "
                       "sleep 12; echo ${#x}"}}});
    });
    bool held = false;
    while (!held && holding.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready)
        held = guest_memory_holds(vmm, marker);
    EXPECT_TRUE(held) << "the running invocation's pattern was not found in the VM's RAM";
    EXPECT_EQ(holding.get().body.value("stdout", ""), "1048576\n");
    EXPECT_FALSE(guest_memory_holds(vmm, marker)) << "the pattern outlived the reset";
    // SIGTERM drains: the invocation running then finishes and is answered.
    auto running = std::async(std::launch::async, [&] {
        return call("POST", "/pools/c/invoke", {{"args", {"sh", "-c", "sleep 2; echo drained"}}});
    });
    for (int i = 0; i < 200 && call("GET", "/pools/c").body["vms"].value("busy", 0) == 0; ++i) ::usleep(10000);
    EXPECT_EQ(stop_daemon(SIGTERM), 0) << log();
    auto drained = running.get();
    EXPECT_EQ(drained.status, 200) << drained.raw;
    EXPECT_EQ(drained.body.value("stdout", ""), "drained\n") << drained.raw;
    EXPECT_EQ(vmms(), 0);
    EXPECT_FALSE(fs::exists(m_state));
}

}  // namespace
}  // namespace husk::test
