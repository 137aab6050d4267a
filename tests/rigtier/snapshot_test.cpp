// Rig tier: snapshots of a running Linux guest. The test init's vsock probe
// (tests/guests/linux/init.c, "vsock-probe PORT") answers whether a file in
// its memory-backed root exists, and the guest's wall-clock time.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "agent/client.h"
#include "tests/lib/subprocess.h"
#include "vmm/client/api_client.h"

namespace husk::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kCmdline = "console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd quiet";
constexpr int kPort = 7000;

// One probe command over husk-vmm's vsock socket; the guest's one-line answer.
std::string probe(const std::string& socket, const std::string& command) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval timeout{30, 0};  // a guest that never answers fails the test, not the run
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket.c_str());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return "connect failed";
    }
    std::string hello = "CONNECT " + std::to_string(kPort) + "\n" + command + "\n";
    if (::write(fd, hello.data(), hello.size()) != ssize_t(hello.size())) return "write failed";
    std::string all;
    char buf[256];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) all.append(buf, size_t(n));
    ::close(fd);
    // "OK <port>\n<answer>\n"
    size_t nl = all.find('\n');
    if (all.rfind("OK ", 0) != 0 || nl == std::string::npos) return "no connection: " + all;
    std::string answer = all.substr(nl + 1);
    if (!answer.empty() && answer.back() == '\n') answer.pop_back();
    return answer;
}

struct Probe {
    std::string file;
    long long seconds = 0;
    std::string random;
};
Probe check(const std::string& socket) {
    std::istringstream in(probe(socket, "check"));
    Probe p;
    in >> p.file >> p.seconds >> p.random;
    return p;
}

class LinuxSnapshot : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/husk-rig-snap-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir = tmpl;
    }
    void TearDown() override { fs::remove_all(dir); }
    std::string log() {
        std::ifstream in(dir + "/log");
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
    nlohmann::json api(const std::string& socket, const nlohmann::json& request) {
        auto r = api_call(socket, request, 60000);
        if (!r) return {{"error", r.error().message()}};
        return r.value();
    }
    std::string dir;
};

TEST_F(LinuxSnapshot, RestoredGuestAnswersAndResetForgetsItsFilesWithASaneClock) {
    std::string boot_sock = dir + "/boot.vsock", boot_api = dir + "/boot.api";
    RunningProcess vm({env_or("HUSK_VMM"), "--kernel", env_or("HUSK_VMLINUX"), "--initramfs", env_or("HUSK_INITRAMFS"),
                       "--memory", "256", "--vcpus", "2", "--vsock", boot_sock, "--api", boot_api, "--log",
                       dir + "/log", "--cmdline", std::string(kCmdline) + " -- vsock-probe " + std::to_string(kPort)});
    ASSERT_TRUE(vm.wait_for_stdout("vsock probe listening", 240)) << vm.seen() << log();
    EXPECT_EQ(check(boot_sock).file, "absent");
    auto snap = api(boot_api, {{"cmd", "snapshot"}, {"path", dir + "/snap"}});
    ASSERT_FALSE(snap.contains("error")) << snap.dump() << log();
    long long snapshot_time = std::time(nullptr);
    // The original runs on after its snapshot.
    EXPECT_EQ(probe(boot_sock, "write"), "written");
    EXPECT_EQ(check(boot_sock).file, "present");

    std::string sock = dir + "/r.vsock", api_sock = dir + "/r.api";
    RunningProcess restored(
        {env_or("HUSK_VMM"), "--restore", dir + "/snap", "--vsock", sock, "--api", api_sock, "--log", dir + "/log"});
    ASSERT_TRUE(wait_until([&] { return fs::exists(api_sock); }, 60)) << log();
    // The restored guest has the snapshot's memory: no file, and it answers on vsock.
    Probe first = check(sock);
    EXPECT_EQ(first.file, "absent") << log();
    EXPECT_GE(first.seconds, snapshot_time - 5);
    EXPECT_LE(first.seconds, std::time(nullptr) + 5);
    EXPECT_EQ(probe(sock, "write"), "written");
    EXPECT_EQ(check(sock).file, "present");

    for (int i = 0; i < 3; ++i) {
        auto reset = api(api_sock, {{"cmd", "reset"}});
        ASSERT_FALSE(reset.contains("error")) << reset.dump() << log();
        EXPECT_GT(reset.value("dirty_pages", 0), 0) << reset.dump();
        Probe after = check(sock);
        EXPECT_EQ(after.file, "absent") << "a file written after the snapshot survived reset " << i << "\n" << log();
        // The clock does not go back to the snapshot's moment and does not run ahead.
        EXPECT_GE(after.seconds, snapshot_time - 5);
        EXPECT_LE(after.seconds, std::time(nullptr) + 5);
        EXPECT_EQ(probe(sock, "write"), "written");
    }
    auto stats = api(api_sock, {{"cmd", "stats"}});
    EXPECT_EQ(stats.value("resets", 0), 3) << stats.dump();
}

// The template path without a container: husk-agent booted and snapshotted by
// --snapshot-on-ready, restored in a new process, answers; husk-vmm reseeds
// its RNG after the restore and after every reset.
TEST_F(LinuxSnapshot, RestoredAgentAnswersAndIsReseeded) {
    std::ofstream(dir + "/disk").close();
    auto made = run_process(
        {env_or("HUSK_VMM"), "--kernel", env_or("HUSK_VMLINUX"), "--memory", "256", "--drive", dir + "/disk", "--vsock",
         dir + "/t.vsock", "--console", "none", "--log", dir + "/log", "--snapshot-on-ready", dir + "/template"},
        {.timeout_seconds = 240});
    ASSERT_EQ(made.exit_status, 0) << made.err << log();
    std::string sock = dir + "/r.vsock", api_sock = dir + "/r.api";
    RunningProcess restored({env_or("HUSK_VMM"), "--restore", dir + "/template", "--drive", dir + "/disk", "--vsock",
                             sock, "--api", api_sock, "--log", dir + "/log", "--debug"});
    ASSERT_TRUE(wait_until([&] { return fs::exists(api_sock); }, 60)) << log();
    auto client = agent::AgentClient::connect({sock, true, agent::kPort},
                                              std::chrono::steady_clock::now() + std::chrono::seconds(60));
    ASSERT_TRUE(client) << client.error().message() << log();
    auto version = client.value()->hello();
    EXPECT_TRUE(version) << (version ? "" : version.error().message());
    client.value()->close();
    EXPECT_TRUE(wait_until([&] { return log().find("guest RNG reseeded after restore") != std::string::npos; }, 60))
        << log();
    auto reset = api(api_sock, {{"cmd", "reset"}});
    ASSERT_FALSE(reset.contains("error")) << reset.dump() << log();
    EXPECT_TRUE(reset.value("reseeded", false)) << reset.dump() << log();
}

}  // namespace
}  // namespace husk::test
