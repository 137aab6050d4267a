// Rig tier: containers through husk-vmm + husk-agent, from an OCI config.json
// and a busybox ext4 rootfs. Needs hardware KVM (run inside tests/rig/run here).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <string_view>

#include "agent/client.h"
#include "tests/lib/container_specs.h"
#include "tests/lib/output_burst.h"
#include "tests/lib/subprocess.h"
#include "vmm/base/system.h"

namespace husk::test {
namespace {

namespace fs = std::filesystem;

std::string env(const char* name) {
    return env_or(name);
}

class ContainerTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/husk-container-test.XXXXXX";
        m_dir = ::mkdtemp(tmpl);
        // Each test writes its own copy of the image; sparse, so the copy is cheap.
        m_rootfs = m_dir + "/rootfs.ext4";
        fs::copy_file(env("HUSK_ROOTFS"), m_rootfs);
        m_vsock = m_dir + "/vsock";
    }
    void TearDown() override { fs::remove_all(m_dir); }

    nlohmann::json config(std::vector<std::string> args) {
        return {
            {"ociVersion", "1.0.2"},
            {"root", {{"path", "rootfs"}, {"readonly", false}}},
            {"hostname", "husk-test"},
            {"process",
             {{"args", args}, {"env", {"PATH=/bin", "HOME=/root"}}, {"cwd", "/"}, {"user", {{"uid", 0}, {"gid", 0}}}}},
            {"mounts",
             {{{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
              {{"destination", "/dev"}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", {"nosuid", "mode=755"}}},
              {{"destination", "/tmp"}, {"type", "tmpfs"}, {"source", "tmpfs"}}}},
        };
    }

    std::vector<std::string> argv(const nlohmann::json& spec, bool readonly_drive = false) {
        std::string path = m_dir + "/container.specs";
        write_container_specs(spec.dump(), path);
        return {env("HUSK_VMM"),
                "--kernel",
                env("HUSK_VMLINUX"),
                "--memory",
                "256",
                "--drive",
                m_rootfs + (readonly_drive ? ",ro" : ""),
                "--vsock",
                m_vsock,
                "--container",
                path};
    }

    ProcessResult run(const nlohmann::json& spec, const std::string& input = "") {
        RunOptions o;
        o.timeout_seconds = 180;
        o.stdin_data = input;
        return run_process(argv(spec), o);
    }

    // Every thread of a running husk-vmm is under a seccomp filter; with
    // HUSK_JAIL=1 (the rig tier's jailed run) it is also in mount, IPC and
    // UTS namespaces of its own, so that run cannot pass unjailed.
    static void expect_confined(pid_t pid) {
        std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
        int threads = 0;
        for (const auto& task : fs::directory_iterator(task_dir)) {
            std::ifstream status(task.path() / "status");
            std::string line, mode;
            while (std::getline(status, line))
                if (line.rfind("Seccomp:", 0) == 0) mode = line.substr(line.find_last_of(" \t") + 1);
            EXPECT_EQ(mode, "2") << "thread " << task.path().filename() << " is not filtered";
            ++threads;
        }
        EXPECT_GE(threads, 3) << "vCPU, event loop and control threads";
        const char* jail = std::getenv("HUSK_JAIL");
        if (!jail || std::string_view(jail) != "1") return;
        for (const char* ns : {"mnt", "ipc", "uts"}) {
            auto theirs = fs::read_symlink("/proc/" + std::to_string(pid) + "/ns/" + ns);
            EXPECT_NE(theirs, fs::read_symlink(std::string("/proc/self/ns/") + ns)) << ns << " namespace shared";
        }
    }

    std::string m_dir, m_rootfs, m_vsock;
};

TEST_F(ContainerTest, OutputErrorsAndExitStatus) {
    auto r = run(config({"sh", "-c", "echo out; echo err >&2; exit 3"}));
    EXPECT_EQ(r.exit_status, 3) << r.err;
    EXPECT_EQ(r.out, "out\n");
    EXPECT_EQ(r.err, "err\n");
}

TEST_F(ContainerTest, KilledBySigkillIs137) {
    auto r = run(config({"sh", "-c", "kill -9 $$"}));
    EXPECT_EQ(r.exit_status, 137) << r.err;
}

TEST_F(ContainerTest, StdinIsReadToTheEnd) {
    std::string input;
    for (int i = 0; i < 100000; ++i) input += "line " + std::to_string(i) + "\n";
    auto r = run(config({"sh", "-c", "wc -c; echo done"}), input);
    EXPECT_EQ(r.exit_status, 0) << r.err;
    EXPECT_NE(r.out.find(std::to_string(input.size()) + "\ndone\n"), std::string::npos) << r.out;
}

TEST_F(ContainerTest, TenMiBOfOutputArriveIntact) {
    // 10 MiB of a known pattern, then a marker written just before exit.
    auto r = run(config({"sh", "-c", "yes 0123456789abcde | head -c 10485760; echo last"}));
    EXPECT_EQ(r.exit_status, 0) << r.err;
    ASSERT_EQ(r.out.size(), 10485760u + 5);
    std::string line = "0123456789abcde\n";
    for (size_t i = 0; i < 10485760; i += 4096 * 16) ASSERT_EQ(r.out.compare(i, 16, line), 0) << "at " << i;
    EXPECT_EQ(r.out.substr(10485760), "last\n");
}

// The engines' shims hand the container non-blocking pipes: a full one
// (EAGAIN) must be waited for, never a chunk dropped. Repeated, with a slow
// reader, so a lost chunk cannot hide.
TEST_F(ContainerTest, NonBlockingStdioWithASlowReaderGetsEveryByte) {
    OutputBurst burst;
    burst.first_mib = 2;
    burst.second_mib = 2;
    RunOptions o;
    o.timeout_seconds = 300;
    o.nonblocking_output = true;
    o.read_pause_us = 300;
    for (int i = 0; i < 3; ++i) {
        auto r = run_process(argv(config({"sh", "-c", burst.script()})), o);
        EXPECT_EQ(r.exit_status, 0) << r.err.substr(0, 2000);
        EXPECT_EQ(burst.compare(r.out, r.err), "") << "run " << i;
    }
}

// A reader that goes away: the container's next write fails as it would
// under runc (SIGPIPE, 141), and husk-vmm itself neither dies of SIGPIPE nor hangs.
TEST_F(ContainerTest, AReaderThatClosesEarlyEndsTheWriterWithSigpipe) {
    RunOptions o;
    o.timeout_seconds = 180;
    o.close_stdout_after = 10000;
    auto r = run_process(argv(config({"sh", "-c", "while :; do echo yes; done"})), o);
    EXPECT_FALSE(r.timed_out) << r.err.substr(r.err.size() > 20000 ? r.err.size() - 20000 : 0);
    EXPECT_EQ(r.term_signal, 0) << "husk-vmm itself was killed by signal " << r.term_signal;
    EXPECT_EQ(r.exit_status, 128 + SIGPIPE) << r.err;
}

// A guest process that prints the kernel's power-off banner neither stops
// the VM nor makes its exit look clean (vmm/EXIT_STATUS.md).
TEST_F(ContainerTest, AForgedPowerOffBannerChangesNothing) {
    // The container's /dev is a tmpfs: it makes its own /dev/kmsg node (it has CAP_MKNOD). <0> is KERN_EMERG,
    // which reaches the console whatever its log level.
    auto r = run(config({"sh", "-c",
                         "mknod /tmp/kmsg c 1 11 || exit 9; echo '<0>reboot: Power down' > /tmp/kmsg; "
                         "echo '<0>reboot: System halted' > /tmp/kmsg; sleep 1; echo still-here; exit 3"}));
    EXPECT_EQ(r.exit_status, 3) << r.err;
    EXPECT_EQ(r.out, "still-here\n");
}

TEST_F(ContainerTest, EnvCwdUserAndHostname) {
    auto spec = config({"sh", "-c", "echo $GREETING; pwd; id -u; id -g; id -G; hostname"});
    spec["process"]["env"].push_back("GREETING=hello");
    spec["process"]["cwd"] = "/home/user";
    spec["process"]["user"] = {{"uid", 1000}, {"gid", 1001}, {"additionalGids", {1002}}};
    auto r = run(spec);
    EXPECT_EQ(r.exit_status, 0) << r.err;
    EXPECT_EQ(r.out, "hello\n/home/user\n1000\n1001\n1001 1002\nhusk-test\n");
}

TEST_F(ContainerTest, MissingBinaryIs127) {
    auto r = run(config({"no-such-program"}));
    EXPECT_EQ(r.exit_status, 127);
    EXPECT_EQ(r.err, "no-such-program: command not found\n");
}

TEST_F(ContainerTest, ReadOnlyRoot) {
    auto spec = config({"sh", "-c", "touch /x 2>/dev/null && echo wrote; touch /tmp/y && echo tmp"});
    spec["root"]["readonly"] = true;
    RunOptions o;
    o.timeout_seconds = 180;
    auto r = run_process(argv(spec, true), o);
    EXPECT_EQ(r.exit_status, 0) << r.err;
    EXPECT_EQ(r.out, "tmp\n");
}

TEST_F(ContainerTest, ExecBesideTheFirstProcessAndSignalsForwarded) {
    RunningProcess vmm(argv(config({"sh", "-c", "echo ready; exec sleep 300"})));
    ASSERT_TRUE(vmm.wait_for_stdout("ready", 180));
    auto client = agent::AgentClient::connect({m_vsock, true, agent::kPort},
                                              std::chrono::steady_clock::now() + std::chrono::seconds(30));
    ASSERT_TRUE(client) << client.error().message();
    agent::ProcessSpec e;
    e.exec_id = "exec-1";
    e.args = {"sh", "-c", "pidof sleep >/dev/null && echo sleeping; echo from-exec; exit 4"};
    e.env = {"PATH=/bin"};
    e.attach = agent::kAttachStdout;
    ASSERT_TRUE(client.value()->create_process(e));
    auto out = client.value()->attach_stdio("exec-1", agent::Channel::Stdout);
    ASSERT_TRUE(out) << out.error().message();
    auto text = std::async(std::launch::async, [fd = out.value().get()] {
        std::string s;
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) s.append(buf, size_t(n));
        return s;
    });
    ASSERT_TRUE(client.value()->start("exec-1"));
    auto status = client.value()->wait("exec-1");
    ASSERT_TRUE(status) << status.error().message();
    EXPECT_EQ(status.value(), 4);
    EXPECT_EQ(text.get(), "sleeping\nfrom-exec\n");  // it sees the first process
    client.value().reset();
    expect_confined(vmm.pid());
    // SIGTERM to husk-vmm reaches the container's process; husk-vmm exits with its status.
    ::kill(vmm.pid(), SIGTERM);
    EXPECT_EQ(vmm.wait_exit(60), 128 + SIGTERM);
}

// husk-vmm parses no OCI config: one given where the runtime's specs file
// belongs, or a specs file cut short, is refused before any VM exists.
TEST_F(ContainerTest, AnythingButAContainerSpecsFileIsRefusedBeforeAnyVm) {
    std::string oci_config = m_dir + "/config.json";
    std::ofstream(oci_config) << config({"/bin/true"}).dump();
    std::string cut = m_dir + "/cut.specs";
    write_container_specs(config({"/bin/true"}).dump(), cut);
    std::filesystem::resize_file(cut, std::filesystem::file_size(cut) - 3);
    for (const auto& [path, why] :
         {std::pair{oci_config, "not a container specs file"}, std::pair{cut, "malformed container specs file"}}) {
        RunOptions o;
        auto r = run_process(
            {env("HUSK_VMM"), "--kernel", env("HUSK_VMLINUX"), "--drive", m_rootfs, "--container", path}, o);
        EXPECT_EQ(r.exit_status, 1) << path;
        EXPECT_NE(r.err.find(why), std::string::npos) << r.err;
        EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
    }
}

}  // namespace
}  // namespace husk::test
