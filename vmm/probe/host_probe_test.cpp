#include "vmm/probe/host_probe.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace husk {
namespace {

namespace fs = std::filesystem;

struct FakeHost {
    fs::path root;
    FakeHost() {
        char tmpl[] = "/tmp/husk-probe-XXXXXX";
        root = ::mkdtemp(tmpl);
    }
    ~FakeHost() { fs::remove_all(root); }
    void file(const std::string& rel, const std::string& content) {
        fs::create_directories((root / rel).parent_path());
        std::ofstream(root / rel) << content;
    }
};

const Check* find(const HostReport& r, const std::string& name) {
    for (const auto& c : r.checks)
        if (c.name == name) return &c;
    return nullptr;
}

TEST(HostProbe, AmdWithNpt) {
    FakeHost h;
    h.file("cpuinfo", "flags\t\t: fpu svm npt lm\n");
    h.file("sys/module/kvm_amd/parameters/npt", "Y\n");
    h.file("sys/module/kvm_amd/parameters/avic", "N\n");
    auto r = probe_host((h.root / "sys").string(), (h.root / "cpuinfo").string(), "/nonexistent/kvm");
    EXPECT_EQ(r.backend, KvmBackend::Amd);
    ASSERT_NE(find(r, "NPT (nested paging)"), nullptr);
    EXPECT_EQ(find(r, "NPT (nested paging)")->status, CheckStatus::Pass);
    EXPECT_EQ(find(r, "/dev/kvm")->status, CheckStatus::Fail);
    EXPECT_FALSE(r.can_boot_linux);
}

TEST(HostProbe, IntelWithoutEptFails) {
    FakeHost h;
    h.file("cpuinfo", "flags\t\t: fpu vmx lm\n");
    h.file("sys/module/kvm_intel/parameters/ept", "N\n");
    h.file("sys/module/kvm_intel/parameters/vpid", "Y\n");
    auto r = probe_host((h.root / "sys").string(), (h.root / "cpuinfo").string(), "/nonexistent/kvm");
    EXPECT_EQ(r.backend, KvmBackend::Intel);
    EXPECT_EQ(find(r, "EPT (nested paging)")->status, CheckStatus::Fail);
    EXPECT_FALSE(find(r, "EPT (nested paging)")->advice.empty());
    EXPECT_EQ(find(r, "VPID (tagged TLB)")->status, CheckStatus::Pass);
}

TEST(HostProbe, PvmIsNamedAndExplained) {
    FakeHost h;
    h.file("cpuinfo", "flags\t\t: fpu hypervisor lm\n");
    h.file("sys/module/kvm_pvm/parameters/x", "");
    h.file("dev/kvm", "");
    auto r = probe_host((h.root / "sys").string(), (h.root / "cpuinfo").string(), (h.root / "dev/kvm").string());
    EXPECT_EQ(r.backend, KvmBackend::Pvm);
    EXPECT_EQ(find(r, "cpu virtualization")->status, CheckStatus::Fail);
    EXPECT_NE(find(r, "kvm backend")->advice.find("tests/rig/run"), std::string::npos);
    EXPECT_NE(format_report(r).find("verdict"), std::string::npos);
    // The module with no /dev/kvm: not a PVM host to run on, and not called one.
    auto none = probe_host((h.root / "sys").string(), (h.root / "cpuinfo").string(), "/nonexistent/kvm");
    EXPECT_EQ(find(none, "kvm backend")->status, CheckStatus::Info);
    EXPECT_NE(find(none, "kvm backend")->detail.find("no /dev/kvm"), std::string::npos);
}

// A host with no /dev/kvm at all is told so, in those words (not "PVM").
TEST(HostProbe, NoDevKvmIsSaidPlainly) {
    FakeHost h;
    h.file("cpuinfo", "flags\t\t: fpu hypervisor lm\n");
    h.file("sys/module/other/x", "");
    auto r = probe_host((h.root / "sys").string(), (h.root / "cpuinfo").string(), "/nonexistent/kvm");
    EXPECT_EQ(r.backend, KvmBackend::None);
    EXPECT_EQ(find(r, "/dev/kvm")->detail, "no /nonexistent/kvm on this host");
    EXPECT_NE(format_report(r).find("verdict: no /dev/kvm"), std::string::npos) << format_report(r);
    EXPECT_EQ(format_report(r).find("PVM"), std::string::npos) << format_report(r);
}

}  // namespace
}  // namespace husk
