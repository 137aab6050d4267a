// Rig tier: the guest kernel built from kernel-config/ boots to its init under
// husk-vmm. Needs hardware KVM (kvm_intel/kvm_amd): run directly on such a
// host, or inside the nested rig (tests/rig/run).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "tests/lib/subprocess.h"

namespace husk::test {
namespace {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

constexpr const char* kCmdline = "console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd quiet";

ProcessResult boot(const std::string& init_args, std::vector<std::string> extra = {},
                   const std::string& kernel = env("HUSK_VMLINUX")) {
    std::vector<std::string> argv = {env("HUSK_VMM"), "--kernel", kernel, "--initramfs", env("HUSK_INITRAMFS"),
                                     "--memory", "256", "--cmdline", std::string(kCmdline) + " -- " + init_args};
    argv.insert(argv.end(), extra.begin(), extra.end());
    RunOptions o;
    o.timeout_seconds = 120;
    return run_process(argv, o);
}

TEST(LinuxBoot, PvhOneVcpuReachesInitAndReboots) {
    auto r = boot("cpus=1 reboot");
    EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("husk-test-init: init reached, 1 cpus online"), std::string::npos) << r.out;
    EXPECT_NE(r.err.find("guest init reached"), std::string::npos) << r.err;
}

TEST(LinuxBoot, PvhTwoVcpusBothOnline) {
    auto r = boot("cpus=2 reboot", {"--vcpus", "2"});
    EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("2 cpus online"), std::string::npos) << r.out;
}

TEST(LinuxBoot, PowerOffExitsZero) {
    auto r = boot("poweroff");
    EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
    EXPECT_NE(r.err.find("powered off"), std::string::npos) << r.err;
}

TEST(LinuxBoot, PanicExitsNonZero) {
    auto r = boot("panic");
    EXPECT_EQ(r.exit_status, 2) << r.out << r.err;
    EXPECT_NE(r.err.find("panicked"), std::string::npos) << r.err;
}

TEST(LinuxBoot, GuestExitStatusPassesThrough) {
    auto r = boot("exit 7", {"--vcpus", "2"});
    EXPECT_EQ(r.exit_status, 7) << r.out << r.err;
}

TEST(LinuxBoot, BzImageThroughThe64BitBootProtocol) {
    auto r = boot("cpus=2 reboot", {"--vcpus", "2"}, env("HUSK_BZIMAGE"));
    EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("2 cpus online"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace husk::test
