// Rig tier: the husk runtime's lifecycle straight through its CLI, as an
// engine drives it: create (pid file, state "created"), start ("running"),
// kill, state "stopped", delete; and failures that must leave nothing behind.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/lib/subprocess.h"

namespace husk::test {
namespace {

namespace fs = std::filesystem;

std::string env(const char* name) {
    return env_or(name);
}

class RuntimeCli : public ::testing::Test {
protected:
    void SetUp() override {
        m_dir = "/tmp/husk-cli-rig";
        fs::remove_all(m_dir);
        fs::create_directories(m_dir);
        ASSERT_EQ(shell(env("HUSK_SOURCE_DIR") + "/tests/guests/rootfs/mkrootfs --dir " + m_dir + "/bundle/rootfs")
                      .exit_status,
                  0);
    }
    void TearDown() override { fs::remove_all(m_dir); }

    void write_config(std::vector<std::string> args, const std::string& cwd = "/") {
        nlohmann::json c = {
            {"ociVersion", "1.0.2"},
            {"root", {{"path", "rootfs"}}},
            {"process", {{"args", args}, {"env", {"PATH=/bin"}}, {"cwd", cwd}, {"user", {{"uid", 0}, {"gid", 0}}}}},
            {"mounts", {{{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}}}}};
        std::ofstream(m_dir + "/bundle/config.json") << c.dump();
    }
    // Output goes through files: husk-vmm, started by create and run --detach,
    // inherits stdio and outlives the command, so pipes would never end.
    ProcessResult husk(const std::string& args) {
        auto r = shell(env("HUSK_RUNTIME") + " --root " + m_dir + "/state " + args + " </dev/null >" + m_dir +
                       "/out 2>" + m_dir + "/err");
        r.out = shell("cat " + m_dir + "/out").out;
        r.err = shell("cat " + m_dir + "/err").out;
        return r;
    }
    std::string status(const std::string& id) {
        auto r = husk("state " + id);
        if (r.exit_status != 0) return "error: " + r.err;
        return nlohmann::json::parse(r.out).value("status", "");
    }

    std::string m_dir;
};

// In the rig (kvm_amd, a built kernel and agent) the doctor finds nothing to
// fix, and says so in text and JSON.
TEST_F(RuntimeCli, DoctorFindsThisHostReady) {
    auto r = husk("doctor --json");
    EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << r.out;
    EXPECT_EQ(j.value("ready", false), true) << r.out;
    EXPECT_EQ(j.value("kvm_backend", ""), "kvm_amd") << r.out;
    for (const auto& c : j["checks"]) EXPECT_NE(c.value("status", ""), "fail") << c.dump();
    r = husk("doctor");
    EXPECT_EQ(r.exit_status, 0) << r.out;
    EXPECT_NE(r.out.find("verdict: husk runs containers in microVMs on this host (kvm_amd"), std::string::npos)
        << r.out;
}

TEST_F(RuntimeCli, CreateStartKillDelete) {
    write_config({"sleep", "300"});
    auto created = husk("create --bundle " + m_dir + "/bundle --pid-file " + m_dir + "/pid box");
    ASSERT_EQ(created.exit_status, 0) << created.err;
    std::ifstream pf(m_dir + "/pid");
    pid_t pid = 0;
    pf >> pid;
    EXPECT_GT(pid, 0);
    EXPECT_EQ(::kill(pid, 0), 0) << "the pid in --pid-file is alive";
    EXPECT_EQ(status("box"), "created");
    EXPECT_EQ(husk("create --bundle " + m_dir + "/bundle box").exit_status, 1) << "a duplicate id is refused";
    ASSERT_EQ(husk("start box").exit_status, 0);
    EXPECT_EQ(status("box"), "running");
    EXPECT_NE(husk("list").out.find("box"), std::string::npos);
    EXPECT_EQ(husk("ps --format json box").out, "[" + std::to_string(pid) + "]\n");
    auto refused = husk("delete box");
    EXPECT_EQ(refused.exit_status, 1);
    EXPECT_NE(refused.err.find("is running"), std::string::npos) << refused.err;
    ASSERT_EQ(husk("kill box KILL").exit_status, 0);
    EXPECT_TRUE(wait_until([&] { return status("box") == "stopped"; }, 30)) << status("box");
    ASSERT_EQ(husk("delete box").exit_status, 0);
    EXPECT_FALSE(fs::exists(m_dir + "/state/box"));
    EXPECT_NE(::kill(pid, 0), 0) << "husk-vmm is gone";
}

TEST_F(RuntimeCli, AKilledVmmIsStoppedAndDeletesCleanly) {
    write_config({"sleep", "300"});
    ASSERT_EQ(husk("run --detach --bundle " + m_dir + "/bundle --pid-file " + m_dir + "/pid victim").exit_status, 0);
    std::ifstream pf(m_dir + "/pid");
    pid_t pid = 0;
    pf >> pid;
    ASSERT_GT(pid, 0);
    auto state = nlohmann::json::parse(shell("cat " + m_dir + "/state/victim/state.json").out);
    std::string api = state.value("api_socket", "");
    ::kill(pid, SIGKILL);  // not our child: init (or the rig's) reaps it
    EXPECT_TRUE(wait_until([&] { return status("victim") == "stopped"; }, 30)) << status("victim");
    EXPECT_EQ(husk("delete victim").exit_status, 0);
    EXPECT_FALSE(fs::exists(m_dir + "/state/victim"));
    EXPECT_FALSE(fs::exists(api)) << "the API socket is removed";
}

// `husk run` in the foreground whose husk-vmm is killed: its status is 128 + the signal, stderr says what
// happened and shows the end of husk-vmm's log (which goes with the state directory), and nothing is left.
TEST_F(RuntimeCli, RunSaysWhenItsVmmIsKilled) {
    write_config({"sleep", "300"});
    shell("(" + env("HUSK_RUNTIME") + " --root " + m_dir + "/state run --bundle " + m_dir + "/bundle --pid-file " +
          m_dir + "/pid doomed </dev/null >" + m_dir + "/out 2>" + m_dir + "/err; echo $? >" + m_dir + "/rc.tmp; mv " +
          m_dir + "/rc.tmp " + m_dir + "/rc) </dev/null >/dev/null 2>&1 &");
    ASSERT_TRUE(wait_until([&] { return status("doomed") == "running"; }, 60)) << shell("cat " + m_dir + "/err").out;
    std::ifstream pf(m_dir + "/pid");
    pid_t pid = 0;
    pf >> pid;
    ASSERT_GT(pid, 0);
    ::kill(pid, SIGKILL);
    ASSERT_TRUE(wait_until([&] { return fs::exists(m_dir + "/rc"); }, 30));
    EXPECT_EQ(shell("cat " + m_dir + "/rc").out, "137\n");
    std::string err = shell("cat " + m_dir + "/err").out;
    EXPECT_NE(err.find("husk-vmm, the container's VM, was killed by signal 9 (KILL)"), std::string::npos) << err;
    EXPECT_NE(err.find("/state/doomed/vmm.log"), std::string::npos) << err;
    EXPECT_FALSE(fs::exists(m_dir + "/state/doomed"));
}

// A cwd that is a file: the guest's setup fails (a missing one would be made, as runc does).
TEST_F(RuntimeCli, SetupErrorInTheGuestLeavesNothing) {
    write_config({"true"}, "/bin/busybox");
    auto r = husk("create --bundle " + m_dir + "/bundle box");
    EXPECT_EQ(r.exit_status, 1);
    EXPECT_NE(r.err.find("chdir to cwd `/bin/busybox`"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(m_dir + "/state/box"));
    EXPECT_EQ(shell("pgrep -f '[h]usk-vmm.*husk-cli-rig' | wc -l").out, "0\n");
}

// Engines may write the files they bind (/etc/resolv.conf, /etc/hosts,
// /etc/hostname) after create (newer Docker does): the container reads them
// at start, as under runc's bind mounts, since they reach the guest through
// virtio-fs and are not copied at create.
TEST_F(RuntimeCli, BoundFilesWrittenBetweenCreateAndStartAreSeenAtStart) {
    fs::create_directories(m_dir + "/vol");
    std::ofstream(m_dir + "/resolv.conf") << "nameserver 10.0.0.1\n";
    std::ofstream(m_dir + "/hostname") << "at-create\n";
    nlohmann::json c = {
        {"ociVersion", "1.0.2"},
        {"root", {{"path", "rootfs"}}},
        {"process",
         {{"args", {"sh", "-c", "cat /etc/resolv.conf /etc/hostname > /v/seen"}},
          {"env", {"PATH=/bin"}},
          {"cwd", "/"},
          {"user", {{"uid", 0}, {"gid", 0}}}}},
        {"mounts",
         {{{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
          {{"destination", "/etc/resolv.conf"},
           {"type", "bind"},
           {"source", m_dir + "/resolv.conf"},
           {"options", {"rbind", "rprivate"}}},
          {{"destination", "/etc/hostname"},
           {"type", "bind"},
           {"source", m_dir + "/hostname"},
           {"options", {"rbind", "rprivate"}}},
          {{"destination", "/v"}, {"type", "bind"}, {"source", m_dir + "/vol"}, {"options", {"rbind", "rw"}}}}}};
    std::ofstream(m_dir + "/bundle/config.json") << c.dump();
    auto created = husk("create --bundle " + m_dir + "/bundle files");
    ASSERT_EQ(created.exit_status, 0) << created.err;
    // Rewritten in place, as an engine does (a bind mount holds the file, not its name).
    std::ofstream(m_dir + "/resolv.conf", std::ios::trunc) << "nameserver 127.0.0.11\noptions ndots:0\n";
    std::ofstream(m_dir + "/hostname", std::ios::trunc) << "at-start\n";
    ASSERT_EQ(husk("start files").exit_status, 0);
    EXPECT_TRUE(wait_until([&] { return status("files") == "stopped"; }, 30)) << status("files");
    EXPECT_EQ(shell("cat " + m_dir + "/vol/seen").out, "nameserver 127.0.0.11\noptions ndots:0\nat-start\n");
    EXPECT_EQ(husk("delete files").exit_status, 0);
}

TEST_F(RuntimeCli, RunWaitsAndPassesTheStatus) {
    write_config({"sh", "-c", "echo ran; exit 9"});
    auto r = husk("run --bundle " + m_dir + "/bundle once");
    EXPECT_EQ(r.exit_status, 9) << r.err;
    EXPECT_EQ(r.out, "ran\n");
    EXPECT_FALSE(fs::exists(m_dir + "/state/once"));
}

// The first create makes the template (one boot); later ones restore it. Two
// containers restored from one snapshot still draw different random numbers:
// each guest's RNG is reseeded from the host before the process runs.
TEST_F(RuntimeCli, CreateRestoresATemplateAndEachGuestHasItsOwnRandomness) {
    // Each read of this file is a fresh UUID from the kernel's RNG.
    write_config({"cat", "/proc/sys/kernel/random/uuid"});
    std::string templates = m_dir + "/templates";
    // Made open to others (as an older husk did): the runtime closes it to 0700 before use.
    fs::create_directories(templates);
    fs::permissions(templates, fs::perms(0755));
    std::vector<std::string> draws;
    for (const char* id : {"first", "second", "third"}) {
        auto r = shell("HUSK_TEMPLATE_DIR=" + templates + " " + env("HUSK_RUNTIME") + " --root " + m_dir +
                       "/state --log " + m_dir + "/log run --bundle " + m_dir + "/bundle " + id + " </dev/null >" +
                       m_dir + "/out 2>" + m_dir + "/err");
        ASSERT_EQ(r.exit_status, 0) << shell("cat " + m_dir + "/err " + m_dir + "/log").out;
        draws.push_back(shell("cat " + m_dir + "/out").out);
        EXPECT_EQ(draws.back().size(), 37u) << draws.back();
    }
    EXPECT_NE(draws[0], draws[1]);
    EXPECT_NE(draws[1], draws[2]);
    EXPECT_NE(draws[0], draws[2]);
    // One template, and every container came from it.
    auto made = shell("ls " + templates + " | grep -v lock");
    EXPECT_EQ(std::count(made.out.begin(), made.out.end(), '\n'), 1) << made.out;
    EXPECT_EQ(fs::status(templates).permissions() & fs::perms::all, fs::perms::owner_all);
    auto log = shell("grep -c 'restored from " + templates + "' " + m_dir + "/log");
    EXPECT_EQ(log.out, "3\n") << shell("cat " + m_dir + "/log").out;
}

// A template that cannot be made (no agent beside husk-vmm, say) is not an
// error: the container boots the old way.
TEST_F(RuntimeCli, WithoutATemplateTheContainerBoots) {
    write_config({"echo", "booted"});
    nlohmann::json c = nlohmann::json::parse(shell("cat " + m_dir + "/bundle/config.json").out);
    c["annotations"] = {{"io.husk.template", "false"}};
    std::ofstream(m_dir + "/bundle/config.json") << c.dump();
    auto r = shell("HUSK_TEMPLATE_DIR=" + m_dir + "/templates " + env("HUSK_RUNTIME") + " --root " + m_dir +
                   "/state run --bundle " + m_dir + "/bundle cold </dev/null >" + m_dir + "/out 2>" + m_dir + "/err");
    ASSERT_EQ(r.exit_status, 0) << shell("cat " + m_dir + "/err").out;
    EXPECT_EQ(shell("cat " + m_dir + "/out").out, "booted\n");
    EXPECT_FALSE(fs::exists(m_dir + "/templates")) << "io.husk.template=false makes no template";
}

}  // namespace
}  // namespace husk::test
