// Native KVM tier: husk-vmm in its jail (--jail). A running VM is in mount,
// IPC and UTS namespaces of its own, sees a root holding only its sockets'
// directory, has no capabilities, and leaves nothing behind; snapshots and
// restores work from inside; bad jail settings are refused up front.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/lib/console_guest.h"

namespace husk::test {
namespace {

namespace fs = std::filesystem;

std::string read_text(const std::string& path) {
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

std::string status_field(pid_t pid, const std::string& field) {
    std::istringstream in(read_text("/proc/" + std::to_string(pid) + "/status"));
    for (std::string line; std::getline(in, line);)
        if (line.rfind(field + ":", 0) == 0) {
            size_t at = line.find_first_not_of(" \t", field.size() + 1);
            return at == std::string::npos ? "" : line.substr(at);
        }
    return "";
}

class VmmJail : public ConsoleGuestTest {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "the jail needs root";
        if (run_process({vmm(), "--version"}).out.find("sanitizers") != std::string::npos)
            GTEST_SKIP() << "a sanitizer build of husk-vmm: LeakSanitizer needs /proc at exit, which the jail has not";
        ConsoleGuestTest::SetUp();
    }
};

TEST_F(VmmJail, ARunningVmmIsJailedAndLeavesNothing) {
    std::string api = dir + "/api.sock";
    auto p = start({"--kernel", guest("halt"), "--memory", "32", "--vsock", dir + "/v.sock", "--jail"}, api);
    ASSERT_TRUE(p->wait_for_stdout("halting", 30)) << log();
    std::string proc = "/proc/" + std::to_string(p->pid());
    for (const char* ns : {"mnt", "uts", "ipc"})
        EXPECT_NE(fs::read_symlink(proc + "/ns/" + ns), fs::read_symlink(std::string("/proc/self/ns/") + ns)) << ns;
    EXPECT_EQ(status_field(p->pid(), "CapEff"), "0000000000000000");
    EXPECT_EQ(status_field(p->pid(), "CapPrm"), "0000000000000000");
    EXPECT_EQ(status_field(p->pid(), "CapBnd"), "0000000000000000");
    EXPECT_EQ(status_field(p->pid(), "NoNewPrivs"), "1");
    EXPECT_EQ(status_field(p->pid(), "Seccomp"), "2");
    // Its root: the directory chain to its sockets, nothing else.
    std::vector<std::string> top;
    for (const auto& e : fs::directory_iterator(proc + "/root")) top.push_back(e.path().filename());
    EXPECT_EQ(top, std::vector<std::string>{"tmp"});
    EXPECT_FALSE(fs::exists(proc + "/root/dev/kvm"));
    EXPECT_FALSE(fs::exists(proc + "/root/etc"));
    EXPECT_TRUE(fs::exists(proc + "/root" + api)) << "its API socket is there";
    auto stats = api_call(api, {{"cmd", "stats"}}, 10000);
    ASSERT_TRUE(stats) << stats.error().message();
    EXPECT_FALSE(stats.value().contains("error")) << stats.value().dump();
    // Read through /proc/self files opened before the jail (it has no /proc).
    EXPECT_GT(stats.value().value("rss_shmem_kib", int64_t(-1)), 0) << stats.value().dump();

    ::kill(p->pid(), SIGTERM);
    EXPECT_EQ(p->wait_exit(30), 128 + SIGTERM) << log();
    EXPECT_FALSE(fs::exists(api)) << "the API socket is removed";
    EXPECT_FALSE(fs::exists(dir + "/v.sock")) << "the vsock socket is removed";
    EXPECT_EQ(read_text("/proc/self/mountinfo").find("husk-jail"), std::string::npos) << "no mount left on the host";
}

TEST_F(VmmJail, RunsAsAnUnprivilegedUser) {
    // The jail user owns the directory its sockets live in (as a runtime would set it up).
    ASSERT_EQ(::chown(dir.c_str(), 65534, 65534), 0);
    std::string api = dir + "/api.sock";
    auto p = start({"--kernel", guest("halt"), "--memory", "32", "--jail", "--jail-user", "65534:65534"}, api);
    ASSERT_TRUE(p->wait_for_stdout("halting", 30)) << log();
    EXPECT_EQ(status_field(p->pid(), "Uid").substr(0, 5), "65534");
    EXPECT_EQ(status_field(p->pid(), "Gid").substr(0, 5), "65534");
    EXPECT_EQ(status_field(p->pid(), "Groups"), "");
    ::kill(p->pid(), SIGTERM);
    EXPECT_EQ(p->wait_exit(30), 128 + SIGTERM) << log();
    EXPECT_FALSE(fs::exists(api)) << log();
}

TEST_F(VmmJail, SnapshotAndRestoreFromInside) {
    std::string boot_api = dir + "/boot.sock", snap = dir + "/snap";
    {
        auto p = start({"--kernel", guest("snapshot"), "--memory", "32", "--no-rng", "--jail"}, boot_api);
        ASSERT_TRUE(p->wait_for_stdout("ready\n", 30)) << log();
        // Inside the directory the jail keeps (its API socket's): written.
        auto made = api(boot_api, {{"cmd", "snapshot"}, {"path", snap}});
        EXPECT_FALSE(made.contains("error")) << made.dump() << log();
        EXPECT_TRUE(fs::exists(snap + "/vmstate"));
        // Anywhere else on the host: not there to write to.
        auto outside = api(boot_api, {{"cmd", "snapshot"}, {"path", "/var/tmp/husk-jail-escape"}});
        EXPECT_TRUE(outside.contains("error")) << outside.dump();
        EXPECT_FALSE(fs::exists("/var/tmp/husk-jail-escape"));
        ::kill(p->pid(), SIGTERM);
        EXPECT_EQ(p->wait_exit(30), 128 + SIGTERM) << log();
    }
    std::string api_path = dir + "/restored.sock";
    auto p = start({"--restore", snap, "--jail"}, api_path);
    auto reset = api(api_path, {{"cmd", "reset"}});
    EXPECT_FALSE(reset.contains("error")) << reset.dump() << log();
    ::kill(p->pid(), SIGTERM);
    EXPECT_EQ(p->wait_exit(30), 128 + SIGTERM) << log();
}

TEST_F(VmmJail, BadSettingsAreRefusedBeforeAnyVm) {
    auto r = run_process({vmm(), "--kernel", guest("hello"), "--jail", "--jail-user", "nobody"});
    EXPECT_EQ(r.exit_status, 1);
    EXPECT_NE(r.err.find("jail.user: jail user `nobody`: expected UID or UID:GID"), std::string::npos) << r.err;
    r = run_process({vmm(), "--kernel", guest("hello"), "--jail-user", "1000"});
    EXPECT_EQ(r.exit_status, 1);
    EXPECT_NE(r.err.find("need jail.enabled (--jail)"), std::string::npos) << r.err;
    r = run_process({vmm(), "--kernel", guest("hello"), "--jail", "--jail-cgroup", "../../etc"});
    EXPECT_EQ(r.exit_status, 1);
    EXPECT_NE(r.err.find("leaves /sys/fs/cgroup"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace husk::test
