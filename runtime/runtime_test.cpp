// Unit tests of the runtime's pieces, and its CLI error paths (nothing is left behind).
#include "runtime/runtime.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "runtime/args.h"
#include "runtime/doctor.h"
#include "runtime/husk_config.h"
#include "runtime/shell_capture.h"
#include "runtime/state.h"

namespace husk::runtime {
namespace {

namespace fs = std::filesystem;

TEST(Signals, NumbersAndNames) {
    EXPECT_EQ(parse_signal("9").value(), SIGKILL);
    EXPECT_EQ(parse_signal("KILL").value(), SIGKILL);
    EXPECT_EQ(parse_signal("SIGTERM").value(), SIGTERM);
    EXPECT_EQ(parse_signal("sigusr1").value(), SIGUSR1);
    EXPECT_FALSE(parse_signal("0"));
    EXPECT_FALSE(parse_signal("NOPE"));
    EXPECT_FALSE(parse_signal("99"));
}

TEST(Ids, RuncRules) {
    EXPECT_TRUE(validate_id("abc-1_2.x"));
    EXPECT_FALSE(validate_id(""));
    EXPECT_FALSE(validate_id("../x"));
    EXPECT_FALSE(validate_id("a/b"));
    EXPECT_FALSE(validate_id(".."));
}

TEST(Args, FlagsValuesAndPositionals) {
    ArgParser p("exec");
    p.value("env", "e").flag("tty", "t").ignored_value("cap");
    ASSERT_TRUE(p.parse({"-e", "A=1", "--env=B=2", "-t", "--cap", "X", "box", "sh", "-c", "ls -l"}));
    EXPECT_EQ(p.all("env"), (std::vector<std::string>{"A=1", "B=2"}));
    EXPECT_EQ(p.get("tty"), "true");
    EXPECT_FALSE(p.has("cap"));
    EXPECT_EQ(p.positionals(), (std::vector<std::string>{"box", "sh", "-c", "ls -l"}));
    ArgParser q("kill");
    auto r = q.parse({"--bogus", "x"});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("unknown option --bogus"), std::string::npos);
}

TEST(RuntimeConfig, FileAndAnnotations) {
    char tmpl[] = "/tmp/husk-rt-test.XXXXXX";
    std::string dir = ::mkdtemp(tmpl);
    std::ofstream(dir + "/config.toml") << "[vm]\nkernel = \"/k\"\nmemory_mib = 512\nvcpus = 2\n";
    auto c = load_runtime_config(dir + "/config.toml");
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c.value().kernel, "/k");
    EXPECT_EQ(c.value().memory_mib, 512u);
    ASSERT_TRUE(apply_annotations(c.value(), {{"io.husk.vcpus", "4"}}));
    EXPECT_EQ(c.value().vcpus, 4u);
    EXPECT_FALSE(apply_annotations(c.value(), {{"io.husk.vcpus", "zero"}}));
    std::ofstream(dir + "/bad.toml") << "[vm]\nmemroy_mib = 1\n";
    auto bad = load_runtime_config(dir + "/bad.toml");
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message().find("unknown key `vm.memroy_mib`"), std::string::npos);
    std::ofstream(dir + "/float.toml") << "[vm]\nmemory_mib = -2e60\n";
    auto float_size = load_runtime_config(dir + "/float.toml");
    ASSERT_FALSE(float_size);
    EXPECT_NE(float_size.error().message().find("vm.memory_mib must be an integer"), std::string::npos)
        << float_size.error().message();
    fs::remove_all(dir);
}

TEST(RuntimeConfig, TheRootfsIsSharedUnlessAnImageIsAskedFor) {
    char tmpl[] = "/tmp/husk-rt-test.XXXXXX";
    std::string dir = ::mkdtemp(tmpl);
    std::ofstream(dir + "/config.toml") << "[vm]\nkernel = \"/k\"\n";
    auto c = load_runtime_config(dir + "/config.toml");
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c.value().rootfs, RootfsMode::Share);
    ASSERT_TRUE(apply_annotations(c.value(), {{"io.husk.rootfs", "image"}}));
    EXPECT_EQ(c.value().rootfs, RootfsMode::Image);
    auto bad = apply_annotations(c.value(), {{"io.husk.rootfs", "copy"}});
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message().find("must be share (virtio-fs) or image"), std::string::npos);
    std::ofstream(dir + "/image.toml") << "[vm]\nrootfs = \"image\"\n";
    auto image = load_runtime_config(dir + "/image.toml");
    ASSERT_TRUE(image) << image.error().message();
    EXPECT_EQ(image.value().rootfs, RootfsMode::Image);
    std::ofstream(dir + "/bad.toml") << "[vm]\nrootfs = true\n";
    EXPECT_FALSE(load_runtime_config(dir + "/bad.toml"));
    fs::remove_all(dir);
}

// The CLI, end to end, on the paths that need no VM: each fails clearly and leaves nothing.
class Cli : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/husk-cli-test.XXXXXX";
        m_dir = ::mkdtemp(tmpl);
        m_root = m_dir + "/state";
        m_bundle = m_dir + "/bundle";
        fs::create_directories(m_bundle + "/rootfs");
    }
    void TearDown() override { fs::remove_all(m_dir); }

    std::pair<int, std::string> husk(const std::string& args) {
        std::string cmd = std::string(std::getenv("HUSK_BIN")) + " --root " + m_root + " --log " + m_dir +
                          "/log.json --log-format json " + args + " 2>&1";
        return run_captured(cmd);
    }
    bool nothing_left(const std::string& id) { return !fs::exists(m_root + "/" + id); }

    std::string m_dir, m_root, m_bundle;
};

TEST_F(Cli, MissingBundle) {
    auto [status, out] = husk("create --bundle " + m_dir + "/nope box");
    EXPECT_EQ(status, 1);
    EXPECT_NE(out.find("nope/config.json`: No such file or directory"), std::string::npos) << out;
    EXPECT_TRUE(nothing_left("box"));
    std::ifstream log(m_dir + "/log.json");
    std::string line;
    std::getline(log, line);
    EXPECT_NE(line.find("\"level\":\"error\""), std::string::npos) << line;
}

TEST_F(Cli, MalformedAndInvalidConfig) {
    std::ofstream(m_bundle + "/config.json") << "{ not json";
    auto [s1, o1] = husk("create --bundle " + m_bundle + " box");
    EXPECT_EQ(s1, 1);
    EXPECT_NE(o1.find("config.json: not valid JSON"), std::string::npos) << o1;
    std::ofstream(m_bundle + "/config.json")
        << R"({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"user": {"uid": 0, "gid": 0}, "args": [], "cwd": "/"}})";
    auto [s2, o2] = husk("create --bundle " + m_bundle + " box");
    EXPECT_EQ(s2, 1);
    EXPECT_NE(o2.find("process.args: must not be empty"), std::string::npos) << o2;
    EXPECT_TRUE(nothing_left("box"));
}

TEST_F(Cli, UnknownContainerAndBadId) {
    for (const char* cmd :
         {"state ghost", "start ghost", "kill ghost KILL", "delete ghost", "pause ghost", "exec ghost true"}) {
        auto [status, out] = husk(cmd);
        EXPECT_EQ(status, 1) << cmd;
        EXPECT_NE(out.find("container `ghost` does not exist"), std::string::npos) << cmd << ": " << out;
    }
    EXPECT_EQ(husk("delete --force ghost").first, 0);
    auto [status, out] = husk("state ../etc");
    EXPECT_EQ(status, 1);
    EXPECT_NE(out.find("invalid container id"), std::string::npos) << out;
}

TEST_F(Cli, DuplicateIdIsRefusedAndTheFirstKept) {
    fs::create_directories(m_root + "/box");
    std::ofstream(m_root + "/box/state.json") << "{}";
    std::ofstream(m_bundle + "/config.json")
        << R"({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "/"}})";
    auto [status, out] = husk("create --bundle " + m_bundle + " box");
    EXPECT_EQ(status, 1);
    EXPECT_TRUE(out.find("already exists") != std::string::npos || out.find("no guest kernel") != std::string::npos)
        << out;
    EXPECT_TRUE(fs::exists(m_root + "/box/state.json"));
}

TEST_F(Cli, VersionHelpFeaturesSpec) {
    auto [s1, o1] = husk("--version");
    EXPECT_EQ(s1, 0);
    EXPECT_EQ(o1.rfind("husk version ", 0), 0u) << o1;
    EXPECT_NE(o1.find("spec: 1."), std::string::npos);
    auto [s2, o2] = husk("features");
    EXPECT_EQ(s2, 0);
    EXPECT_NE(o2.find("ociVersionMax"), std::string::npos);
    auto [s3, o3] = husk("spec --bundle " + m_bundle);
    EXPECT_EQ(s3, 0) << o3;
    EXPECT_TRUE(fs::exists(m_bundle + "/config.json"));
    auto [s4, o4] = husk("bogus");
    EXPECT_EQ(s4, 1);
    EXPECT_NE(o4.find("unknown command `bogus`"), std::string::npos);
}

// The doctor's verdict from a host report and the runtime's own needs.
TEST(Doctor, ReadyOnlyWithHardwareKvmAndEverythingTheRuntimeNeeds) {
    char tmpl[] = "/tmp/husk-doctor-test.XXXXXX";
    std::string dir = ::mkdtemp(tmpl);
    fs::create_directories(dir + "/vmm");
    fs::create_directories(dir + "/agent");
    std::ofstream(dir + "/vmm/husk-vmm") << "#!/bin/sh\n";
    fs::permissions(dir + "/vmm/husk-vmm", fs::perms::owner_all);
    std::ofstream(dir + "/agent/husk-agent.cpio") << "x";
    std::ofstream(dir + "/vmlinux") << "x";
    RuntimeConfig config;
    config.vmm = dir + "/vmm/husk-vmm";
    config.kernel = dir + "/vmlinux";
    HostReport amd;
    amd.backend = KvmBackend::Amd;
    amd.can_run_vms = amd.can_boot_linux = true;
    auto r = doctor(amd, config, dir + "/state");
    // mkfs.ext4 and debugfs come from the machine running the test; they are in the tests' packages.
    EXPECT_TRUE(r.ready) << format_doctor(r);
    EXPECT_NE(r.verdict.find("runs containers"), std::string::npos);
    auto j = doctor_json(r);
    EXPECT_EQ(j["ready"], true);
    EXPECT_EQ(j["kvm_backend"], "kvm_amd");
    EXPECT_TRUE(j["checks"].is_array());

    // PVM: everything else fine, and still not ready, with the way out named.
    HostReport pvm;
    pvm.backend = KvmBackend::Pvm;
    pvm.can_run_vms = true;
    r = doctor(pvm, config, dir + "/state");
    EXPECT_FALSE(r.ready);
    EXPECT_NE(r.verdict.find("cannot boot a stock Linux guest"), std::string::npos) << r.verdict;
    // The PVM module loaded but no /dev/kvm at all: said plainly, not "PVM".
    pvm.can_run_vms = false;
    pvm.checks.push_back({"/dev/kvm", CheckStatus::Fail, "no /dev/kvm on this host", ""});
    r = doctor(pvm, config, dir + "/state");
    EXPECT_EQ(r.verdict.rfind("no /dev/kvm", 0), 0u) << r.verdict;

    // No kernel: named, with how to get one.
    config.kernel.clear();
    r = doctor(amd, config, dir + "/state");
    EXPECT_FALSE(r.ready);
    EXPECT_NE(format_doctor(r).find("FAIL  guest kernel"), std::string::npos) << format_doctor(r);
    EXPECT_NE(format_doctor(r).find("kernel-config/build"), std::string::npos);
    fs::remove_all(dir);
}

TEST_F(Cli, DoctorReportsAndExitsByItsVerdict) {
    auto [status, out] = husk("doctor --json");
    auto j = nlohmann::json::parse(out.substr(0, out.rfind('}') + 1), nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << out;
    EXPECT_EQ(status, j["ready"].get<bool>() ? 0 : 1) << out;
    EXPECT_FALSE(j["verdict"].get<std::string>().empty());
    auto [text_status, text] = husk("doctor");
    EXPECT_EQ(text_status, status);
    EXPECT_NE(text.find("verdict: "), std::string::npos) << text;
    EXPECT_NE(text.find("husk-vmm"), std::string::npos) << text;
    EXPECT_EQ(husk("doctor extra").first, 1);
}

}  // namespace
}  // namespace husk::runtime
