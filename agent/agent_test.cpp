// The real husk-agent binary, outside a VM: `husk-agent --listen SOCKET --rootfs DIR`
// with a busybox rootfs directory. Exercises the protocol, process setup
// (mount namespace, pivot_root, user, cwd, env), stdio relays and exit
// reporting. Needs root (it mounts and pivots) and busybox-static.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "agent/client.h"
#include "vmm/base/system.h"

namespace husk::agent {
namespace {

namespace fs = std::filesystem;

std::string read_all(int fd) {
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return out;
        out.append(buf, size_t(n));
    }
}

class AgentTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root (the agent mounts and pivots)";
        if (!fs::exists("/bin/busybox")) GTEST_SKIP() << "needs busybox-static";
        char tmpl[] = "/tmp/husk-agent-test.XXXXXX";
        m_dir = ::mkdtemp(tmpl);
        m_rootfs = m_dir + "/rootfs";
        for (const char* d : {"bin", "proc", "dev", "tmp", "etc", "home/user"})
            fs::create_directories(m_rootfs + "/" + d);
        fs::copy_file("/bin/busybox", m_rootfs + "/bin/busybox");
        for (const char* applet : {"sh", "echo", "cat", "id", "pwd", "sleep", "head", "wc", "env", "true", "dd",
                                   "md5sum", "kill", "grep", "hostname", "mkdir"})
            fs::create_symlink("busybox", m_rootfs + "/bin/" + applet);
        std::ofstream(m_rootfs + "/bin/notexec") << "#!/bin/sh\necho no\n";
        m_socket = m_dir + "/agent.sock";
        m_agent = ::fork();
        if (m_agent == 0) {
            ::execl(std::getenv("HUSK_AGENT"), "husk-agent", "--listen", m_socket.c_str(), "--rootfs", m_rootfs.c_str(),
                    nullptr);
            ::_exit(127);
        }
        auto client =
            AgentClient::connect({m_socket, false, kPort}, std::chrono::steady_clock::now() + std::chrono::seconds(10));
        ASSERT_TRUE(client) << client.error().message();
        m_client = client.release_value();
        auto setup = m_client->setup_container(container());
        ASSERT_TRUE(setup) << setup.error().message();
    }
    virtual ContainerSpec container() const {
        ContainerSpec c;
        c.rootfs_device = "";  // the directory is the rootfs
        c.mounts = {{"/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}},
                    {"/dev", "tmpfs", "tmpfs", {"nosuid", "mode=755"}}};
        return c;
    }
    void TearDown() override {
        m_client.reset();
        if (m_agent > 0) {
            ::kill(m_agent, SIGKILL);
            ::waitpid(m_agent, nullptr, 0);
        }
        if (!m_dir.empty()) fs::remove_all(m_dir);
    }

    ProcessSpec spec(std::string id, std::vector<std::string> args) {
        ProcessSpec s;
        s.exec_id = std::move(id);
        s.args = std::move(args);
        s.env = {"PATH=/bin", "HOME=/root"};
        return s;
    }

    struct Run {
        std::string out, err;
        int status = -1;
    };
    // create, attach, start, feed stdin, collect everything, wait.
    Run run(const ProcessSpec& s, const std::string& input = "") {
        Run r;
        auto pid = m_client->create_process(s);
        EXPECT_TRUE(pid) << pid.error().message();
        if (!pid) return r;
        UniqueFd in, out, err;
        auto attach = [&](Channel channel) {
            auto fd = m_client->attach_stdio(s.exec_id, channel);
            EXPECT_TRUE(fd) << fd.error().message();
            return fd ? fd.release_value() : UniqueFd();
        };
        if (s.attach & kAttachStdin) in = attach(Channel::Stdin);
        if (s.attach & kAttachStdout) out = attach(Channel::Stdout);
        if (s.attach & kAttachStderr) err = attach(Channel::Stderr);
        auto out_f = std::async(std::launch::async, [&] { return out ? read_all(out.get()) : std::string(); });
        auto err_f = std::async(std::launch::async, [&] { return err ? read_all(err.get()) : std::string(); });
        EXPECT_TRUE(m_client->start(s.exec_id));
        if (in) {
            (void)sys::write_all(in.get(), input);
            ::shutdown(in.get(), SHUT_WR);
        }
        r.out = out_f.get();
        r.err = err_f.get();
        auto status = m_client->wait(s.exec_id);
        EXPECT_TRUE(status) << status.error().message();
        r.status = status ? status.value() : -1;
        return r;
    }

    std::string m_dir, m_rootfs, m_socket;
    pid_t m_agent = -1;
    std::unique_ptr<AgentClient> m_client;
};

// The host's reader went away and the host shut the stdout stream down: the
// process's next write fails as it would under runc (SIGPIPE, 141), instead
// of writing into nothing for ever; the exit is still reported.
TEST_F(AgentTest, AStdoutStreamShutByTheHostEndsTheWriterWithSigpipe) {
    auto s = spec(std::string(kInitId), {"sh", "-c", "while :; do echo y; done"});
    s.attach = kAttachStdout;
    ASSERT_TRUE(m_client->create_process(s));
    auto out = m_client->attach_stdio(s.exec_id, Channel::Stdout);
    ASSERT_TRUE(out) << out.error().message();
    ASSERT_TRUE(m_client->start(s.exec_id));
    char buf[4096];
    ASSERT_GT(::read(out.value().get(), buf, sizeof buf), 0);
    ::shutdown(out.value().get(), SHUT_RDWR);
    auto status = m_client->wait(s.exec_id);
    ASSERT_TRUE(status) << status.error().message();
    EXPECT_EQ(status.value(), 128 + SIGPIPE);
}

// Reseed mixes host bytes into the RNG (here the host's own: test mode) and
// refuses amounts that could not be meant.
TEST_F(AgentTest, ReseedTakesHostEntropy) {
    EXPECT_TRUE(m_client->reseed(std::string(64, 'x')));
    auto too_little = m_client->reseed("short");
    ASSERT_FALSE(too_little);
    EXPECT_NE(too_little.error().message().find("16 to 512 bytes"), std::string::npos);
    EXPECT_FALSE(m_client->reseed(std::string(513, 'x')));
}

// In test mode the host's cgroups are not the agent's: a pids or memory limit,
// and reading memory events, are refused, by name.
TEST_F(AgentTest, CgroupRequestsWithoutACgroupInTheGuestAreRefused) {
    auto pids = m_client->set_pids_limit(8);
    ASSERT_FALSE(pids);
    EXPECT_NE(pids.error().message().find("no cgroup in the guest"), std::string::npos) << pids.error().message();
    auto memory = m_client->set_memory_limit(64 << 20);
    ASSERT_FALSE(memory);
    EXPECT_NE(memory.error().message().find("no cgroup in the guest"), std::string::npos);
    auto events = m_client->memory_events();
    ASSERT_FALSE(events);
    EXPECT_NE(events.error().message().find("no cgroup in the guest"), std::string::npos);
}

TEST_F(AgentTest, OutputErrorsAndExitStatus) {
    auto r = run(spec("init", {"sh", "-c", "echo out; echo err >&2; exit 3"}));
    EXPECT_EQ(r.out, "out\n");
    EXPECT_EQ(r.err, "err\n");
    EXPECT_EQ(r.status, 3);
}

TEST_F(AgentTest, StdinIsReadToTheEnd) {
    std::string input(300000, 'x');
    auto r = run(spec("init", {"wc", "-c"}), input);
    EXPECT_EQ(r.out.substr(r.out.find_first_not_of(' ')), "300000\n");
    EXPECT_EQ(r.status, 0);
}

TEST_F(AgentTest, TenMiBOfOutputArriveIntact) {
    auto r = run(spec("init", {"sh", "-c", "dd if=/dev/zero bs=1048576 count=10 2>/dev/null; echo end"}));
    ASSERT_EQ(r.out.size(), 10u * 1048576 + 4);
    EXPECT_EQ(r.out.substr(r.out.size() - 4), "end\n");
    EXPECT_EQ(r.out.find_first_not_of('\0'), 10u * 1048576);
}

// As under runc: the container's missing cwd is made; an exec's must exist.
TEST_F(AgentTest, AMissingCwdIsMadeForTheContainerNotForExec) {
    ProcessSpec init = spec("init", {"sh", "-c", "pwd; sleep 100"});
    init.cwd = "/made/for/you";
    init.attach = kAttachStdout;
    ASSERT_TRUE(m_client->create_process(init));
    auto out = m_client->attach_stdio("init", Channel::Stdout);
    ASSERT_TRUE(out);
    ASSERT_TRUE(m_client->start("init"));
    char buf[64] = {};
    ASSERT_GT(::read(out.value().get(), buf, sizeof buf - 1), 0);
    EXPECT_STREQ(buf, "/made/for/you\n");
    ProcessSpec e = spec("exec-1", {"true"});
    e.cwd = "/not/made";
    auto r = m_client->create_process(e);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("chdir to cwd `/not/made`"), std::string::npos) << r.error().message();
    ASSERT_TRUE(m_client->signal("init", SIGKILL));
    EXPECT_EQ(m_client->wait("init").value(), 137);
}

// As runc sets it: HOME, when the environment has none, from the
// container's /etc/passwd, else "/"; a HOME given is kept.
TEST_F(AgentTest, HomeComesFromTheContainersPasswd) {
    std::ofstream(m_rootfs + "/etc/passwd") << "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n";
    ProcessSpec init = spec("init", {"sleep", "100"});
    init.attach = 0;
    ASSERT_TRUE(m_client->create_process(init));
    ASSERT_TRUE(m_client->start("init"));
    auto home_of = [&](uint32_t uid, std::vector<std::string> env, const char* id) {
        ProcessSpec s = spec(id, {"sh", "-c", "echo $HOME"});
        s.env = std::move(env);
        s.uid = uid;
        return run(s).out;
    };
    EXPECT_EQ(home_of(1000, {"PATH=/bin"}, "exec-1"), "/home/user\n");
    EXPECT_EQ(home_of(2000, {"PATH=/bin"}, "exec-2"), "/\n");
    EXPECT_EQ(home_of(0, {"PATH=/bin", "HOME="}, "exec-3"), "/root\n");
    EXPECT_EQ(home_of(1000, {"PATH=/bin", "HOME=/mine"}, "exec-4"), "/mine\n");
    ASSERT_TRUE(m_client->signal("init", SIGKILL));
    EXPECT_EQ(m_client->wait("init").value(), 137);
}

TEST_F(AgentTest, EnvCwdAndUser) {
    ProcessSpec s = spec("init", {"sh", "-c", "echo $GREETING; pwd; id -u; id -g; id -G; umask"});
    s.env.push_back("GREETING=hello");
    s.cwd = "/home/user";
    s.uid = 1000;
    s.gid = 1001;
    s.additional_gids = {1002};
    s.umask = 027;
    auto r = run(s);
    EXPECT_EQ(r.out, "hello\n/home/user\n1000\n1001\n1001 1002\n0027\n") << r.err;
    EXPECT_EQ(r.status, 0);
}

TEST_F(AgentTest, MissingAndNonExecutableBinaries) {
    auto missing = run(spec("init", {"nosuch"}));
    EXPECT_EQ(missing.status, 127);
    EXPECT_EQ(missing.err, "nosuch: command not found\n");
}

TEST_F(AgentTest, NotExecutableIs126) {
    auto r = run(spec("init", {"/bin/notexec"}));
    EXPECT_EQ(r.status, 126);
    EXPECT_EQ(r.err, "/bin/notexec: Permission denied\n");
}

TEST_F(AgentTest, KilledBySigkillReports137) {
    ProcessSpec s = spec("init", {"sleep", "100"});
    s.attach = 0;
    ASSERT_TRUE(m_client->create_process(s));
    ASSERT_TRUE(m_client->start("init"));
    ASSERT_TRUE(m_client->signal("init", SIGKILL));
    auto status = m_client->wait("init");
    ASSERT_TRUE(status);
    EXPECT_EQ(status.value(), 137);
}

TEST_F(AgentTest, ExecRunsBesideTheFirstProcess) {
    ProcessSpec init = spec("init", {"sh", "-c", "echo started > /tmp/flag; sleep 100"});
    init.attach = 0;
    ASSERT_TRUE(m_client->create_process(init));
    ASSERT_TRUE(m_client->start("init"));
    // The exec'd process sees the container's root and the file its first process wrote there.
    ProcessSpec e =
        spec("exec-1", {"sh", "-c", "while [ ! -f /tmp/flag ]; do sleep 0.01; done; cat /tmp/flag; exit 5"});
    auto r = run(e);
    EXPECT_EQ(r.out, "started\n");
    EXPECT_EQ(r.status, 5);
    ASSERT_TRUE(m_client->signal("init", SIGTERM));
    EXPECT_EQ(m_client->wait("init").value(), 128 + SIGTERM);
}

TEST_F(AgentTest, AContainerRunsOneInitOnly) {
    EXPECT_EQ(run(spec("init", {"true"})).status, 0);
    auto again = m_client->create_process(spec("init", {"true"}));
    ASSERT_FALSE(again);
    EXPECT_NE(again.error().message().find("process `init` exists"), std::string::npos) << again.error().message();
}

// `husk serve`: one `init` per invocation, each after the last was reported;
// the agent stays up when the host's connection closes between them.
class ServerlessAgentTest : public AgentTest {
protected:
    ContainerSpec container() const override {
        ContainerSpec c = AgentTest::container();
        c.serverless = true;
        c.namespaces = kNamespacePid;
        c.mounts.push_back({"/tmp", "tmpfs", "tmpfs", {"mode=1777"}});
        c.masked_paths = {"/proc/kcore"};
        return c;
    }
};

// What the first init (the startup command) left in the container's mounts is
// there for the next; each has its own PID namespace and a /proc that shows it.
TEST_F(ServerlessAgentTest, LaterInitsFindTheFirstOnesMountsAndAProcOfTheirOwn) {
    EXPECT_EQ(run(spec("init", {"sh", "-c", "echo warm > /tmp/w; sleep 100 & echo $$"})).out, "1\n");
    auto r =
        run(spec("init", {"sh", "-c", "cat /tmp/w; echo $$; echo /proc/[0-9]*; [ -s /proc/kcore ] || echo masked"}));
    EXPECT_EQ(r.out, "warm\n1\n/proc/1\nmasked\n") << r.err;
    EXPECT_EQ(r.status, 0);
}

TEST_F(ServerlessAgentTest, InitFollowsInitAndTheAgentOutlivesItsHost) {
    EXPECT_EQ(run(spec("init", {"sh", "-c", "echo one"})).out, "one\n");
    // A new connection, as after a reset: the agent is still there.
    m_client.reset();
    auto client =
        AgentClient::connect({m_socket, false, kPort}, std::chrono::steady_clock::now() + std::chrono::seconds(10));
    ASSERT_TRUE(client) << client.error().message();
    m_client = client.release_value();
    auto second = run(spec("init", {"sh", "-c", "echo two; exit 3"}));
    EXPECT_EQ(second.out, "two\n");
    EXPECT_EQ(second.status, 3);
    // One still running is not replaced.
    ProcessSpec busy = spec("init", {"sleep", "100"});
    busy.attach = 0;
    ASSERT_TRUE(m_client->create_process(busy));
    ASSERT_TRUE(m_client->start("init"));
    auto third = m_client->create_process(spec("init", {"true"}));
    ASSERT_FALSE(third);
    ASSERT_TRUE(m_client->signal("init", SIGKILL));
    EXPECT_EQ(m_client->wait("init").value(), 137);
    EXPECT_EQ(run(spec("init", {"echo", "four"})).out, "four\n");
}

TEST_F(AgentTest, ErrorsAreClear) {
    auto bad_cwd = spec("init", {"true"});
    bad_cwd.cwd = "/bin/busybox";
    auto r = m_client->create_process(bad_cwd);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("chdir to cwd `/bin/busybox`"), std::string::npos) << r.error().message();
    auto start = m_client->start("nobody");
    ASSERT_FALSE(start);
    EXPECT_NE(start.error().message().find("no process `nobody`"), std::string::npos);
    auto exec_first = m_client->create_process(spec("exec-1", {"true"}));
    ASSERT_FALSE(exec_first);
}

TEST_F(AgentTest, TerminalGetsAPty) {
    ProcessSpec s = spec("init", {"sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo tty; exit 4"});
    s.terminal = true;
    s.attach = kAttachStdin | kAttachStdout;  // a terminal has no separate stderr
    s.rows = 30;
    s.cols = 100;
    auto r = run(s);
    EXPECT_NE(r.out.find("tty"), std::string::npos) << r.out;
    EXPECT_EQ(r.status, 4);
}

// A container as Docker configures one: PID, IPC, UTS and cgroup namespaces,
// a sysctl, and a seccomp filter (here: mkdir answers EACCES).
class NamespacedAgentTest : public AgentTest {
protected:
    ContainerSpec container() const override {
        ContainerSpec c = AgentTest::container();
        c.namespaces = kNamespacePid | kNamespaceIpc | kNamespaceUts | kNamespaceCgroup;
        c.hostname = "box";
        c.sysctls = {{"kernel.shmmax", "123456789"}};
        c.mounts.push_back({"/home", "tmpfs", "tmpfs", {"nosuid", "tmpcopyup", "mode=755"}});
        Seccomp filter;
        filter.architectures = {"x86_64"};
        filter.rules.push_back({{"mkdir", "mkdirat"}, SeccompAction::Errno, EACCES, {}});
        c.seccomp = filter;
        return c;
    }
};

std::string host_file(const char* path) {
    auto text = sys::read_file(path, 4096);
    return text ? text.value() : "";
}

// runc's table: the process is PID 1 of its own namespace, sees only its own
// processes, and ignores a SIGKILL sent from inside.
TEST_F(NamespacedAgentTest, TheProcessIsPid1SeesOnlyItsOwnAndIgnoresItsOwnKill) {
    auto r = run(spec("init", {"sh", "-c", "echo $$; echo /proc/[0-9]*; sh -c 'echo $$'; kill -9 $$; echo alive"}));
    EXPECT_EQ(r.out, "1\n/proc/1\n2\nalive\n") << r.err;
    EXPECT_EQ(r.status, 0);
}

// Hostname and sysctls land in the container's UTS and IPC namespaces, not
// the machine's; the seccomp filter is loaded (Seccomp: 2) and answers.
TEST_F(NamespacedAgentTest, HostnameSysctlAndSeccompAreTheContainers) {
    std::string host_shmmax = host_file("/proc/sys/kernel/shmmax");
    std::string host_name = host_file("/proc/sys/kernel/hostname");
    auto r = run(spec("init", {"sh", "-c",
                               "hostname; cat /proc/sys/kernel/shmmax; grep Seccomp: /proc/self/status; "
                               "mkdir /tmp/x 2>/dev/null || echo refused"}));
    EXPECT_EQ(r.out, "box\n123456789\nSeccomp:\t2\nrefused\n") << r.err;
    EXPECT_EQ(host_file("/proc/sys/kernel/shmmax"), host_shmmax);
    EXPECT_EQ(host_file("/proc/sys/kernel/hostname"), host_name);
}

// tmpcopyup (Podman's --read-only /run, /tmp, /var/tmp): the tmpfs starts
// with what the directory held.
TEST_F(NamespacedAgentTest, ATmpcopyupTmpfsStartsWithWhatItCovers) {
    auto r = run(
        spec("init", {"sh", "-c", "ls /home; grep ' /home ' /proc/mounts | cut -d' ' -f3; touch /home/x && echo ok"}));
    EXPECT_EQ(r.out, "user\ntmpfs\nok\n") << r.err;
    EXPECT_FALSE(fs::exists(m_rootfs + "/home/x"));  // written to the tmpfs, not the rootfs
}

// exec joins the container's PID and UTS namespaces and gets its filter; a
// SIGTERM to a PID 1 without a handler does nothing, as under runc.
TEST_F(NamespacedAgentTest, ExecJoinsTheContainersNamespaces) {
    ProcessSpec init = spec("init", {"sleep", "100"});
    init.attach = 0;
    ASSERT_TRUE(m_client->create_process(init));
    ASSERT_TRUE(m_client->start("init"));
    auto r = run(spec("exec-1", {"sh", "-c",
                                 "cat /proc/1/comm; hostname; grep Seccomp: /proc/self/status; "
                                 "[ $$ != 1 ] && echo not-pid-1"}));
    EXPECT_EQ(r.out, "sleep\nbox\nSeccomp:\t2\nnot-pid-1\n") << r.err;
    ASSERT_TRUE(m_client->signal("init", SIGTERM));
    auto still = run(spec("exec-2", {"cat", "/proc/1/comm"}));
    EXPECT_EQ(still.out, "sleep\n");
    ASSERT_TRUE(m_client->signal("init", SIGKILL));
    EXPECT_EQ(m_client->wait("init").value(), 137);
}

// process.capabilities exactly: the bounding set for root; for another user,
// what it keeps through the ambient set.
TEST_F(AgentTest, CapabilitiesAreAppliedExactly) {
    constexpr uint64_t kChown = 1 << 0, kKill = 1 << 5;
    ProcessSpec root = spec("init", {"grep", "^Cap", "/proc/self/status"});
    root.capabilities = Capabilities{kChown | kKill, kChown | kKill, 0, kChown | kKill, 0};
    auto r = run(root);
    EXPECT_EQ(r.out,
              "CapInh:\t0000000000000000\nCapPrm:\t0000000000000021\nCapEff:\t0000000000000021\n"
              "CapBnd:\t0000000000000021\nCapAmb:\t0000000000000000\n")
        << r.err;
}

TEST_F(AgentTest, AnotherUserKeepsItsAmbientCapabilities) {
    constexpr uint64_t kChown = 1 << 0, kKill = 1 << 5;
    ProcessSpec user = spec("init", {"grep", "^Cap", "/proc/self/status"});
    user.uid = 1000;
    user.gid = 1000;
    user.capabilities = Capabilities{kChown | kKill, kKill, kKill, kKill, kKill};
    user.no_new_privileges = true;
    auto r = run(user);
    EXPECT_EQ(r.out,
              "CapInh:\t0000000000000020\nCapPrm:\t0000000000000020\nCapEff:\t0000000000000020\n"
              "CapBnd:\t0000000000000021\nCapAmb:\t0000000000000020\n")
        << r.err;
}

}  // namespace
}  // namespace husk::agent
