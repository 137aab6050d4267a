// Rig tier: virtio-balloon with the Linux guest's own driver. The test init's
// "memory" mode (tests/guests/linux/init.c) fills, frees and holds memory on
// console commands; husk-vmm's `stats` tells what guest RAM costs the host
// (RssShmem: guest RAM is a memfd). Waits are generous: the rig is slow, and
// free page reporting runs on the guest's own schedule (every 2 s).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tests/lib/subprocess.h"
#include "vmm/client/api_client.h"

namespace husk::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kCmdline = "console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd quiet";
constexpr int64_t kMib = 1024;  // KiB

class LinuxBalloon : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/husk-balloon-rig-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir = tmpl;
        sock = dir + "/api.sock";
    }
    void TearDown() override { fs::remove_all(dir); }

    // Boots the memory-mode guest; `balloon_toml` goes into a [balloon] table.
    std::unique_ptr<RunningProcess> boot(int memory_mib, const std::string& balloon_toml = "") {
        std::ofstream(dir + "/vm.toml") << "[balloon]\n" << balloon_toml << "\n";
        auto p = std::make_unique<RunningProcess>(
            std::vector<std::string>{env_or("HUSK_VMM"), "--config", dir + "/vm.toml", "--kernel",
                                     env_or("HUSK_VMLINUX"), "--initramfs", env_or("HUSK_INITRAMFS"), "--memory",
                                     std::to_string(memory_mib), "--cmdline", std::string(kCmdline) + " -- memory",
                                     "--console-input", "stdin", "--api", sock, "--log", dir + "/log"},
            true);
        EXPECT_TRUE(p->wait_for_stdout("memory ready", 240)) << p->seen() << log();
        return p;
    }
    // One command; true once the guest's answer line holds `answer`.
    bool ask(RunningProcess& p, const std::string& command, const std::string& answer, int seconds = 240) {
        p.clear_seen();
        p.write_stdin(command + "\n");
        return p.wait_for_stdout(answer, seconds);
    }
    nlohmann::json api(const nlohmann::json& request) {
        auto r = api_call(sock, request, 30000);
        if (!r) return {{"error", r.error().message()}};
        return r.value();
    }
    int64_t guest_ram_kib() { return api({{"cmd", "stats"}}).value("rss_shmem_kib", int64_t(-1)); }
    std::string log() {
        std::ifstream in(dir + "/log");
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
    void finish(RunningProcess& p) {
        p.write_stdin("exit\n");
        EXPECT_EQ(p.wait_exit(120), 0) << log();
    }

    std::string dir, sock;
};

TEST_F(LinuxBalloon, FreePageReportingGivesFreedMemoryBackAndStatsAreRead) {
    auto p = boot(768);
    ASSERT_TRUE(ask(*p, "fill 512", "filled 512")) << p->seen();
    int64_t peak = guest_ram_kib();
    EXPECT_GE(peak, 512 * kMib);
    ASSERT_TRUE(ask(*p, "free", "freed"));
    // The guest reports its free 2 MiB blocks; husk-vmm punches them out.
    int64_t now = peak;
    EXPECT_TRUE(wait_until(
        [&] {
            now = guest_ram_kib();
            return now <= peak - 400 * kMib;
        },
        180))
        << "guest RAM on the host: " << peak << " KiB filled, " << now << " KiB after free\n"
        << log();
    // Statistics come from the guest's driver on request; a request waits at
    // most 1 s, and a guest under TCG on a busy host can take longer to answer.
    nlohmann::json b;
    EXPECT_TRUE(wait_until(
        [&] {
            b = api({{"cmd", "balloon"}});
            return b.value("stats_fresh", false);
        },
        60))
        << b.dump();
    EXPECT_GE(b.value("reported_mib", 0.0), 400.0) << b.dump();
    for (const char* key : {"free", "total", "available", "caches", "major_faults", "minor_faults"})
        EXPECT_TRUE(b["stats"].contains(key)) << key << " missing: " << b.dump();
    EXPECT_TRUE(b.value("stats_fresh", false)) << b.dump();
    EXPECT_GT(b["stats"].value("total", 0ull), 600ull << 20) << b.dump();
    finish(*p);
}

TEST_F(LinuxBalloon, InflatingToATargetShrinksTheHostsShare) {
    auto p = boot(768, "free_page_reporting = false");
    ASSERT_TRUE(ask(*p, "fill 512", "filled 512")) << p->seen();
    ASSERT_TRUE(ask(*p, "free", "freed"));
    int64_t before = guest_ram_kib();
    EXPECT_GE(before, 512 * kMib);
    auto b = api({{"cmd", "balloon"}, {"target_mib", 512}});
    ASSERT_FALSE(b.contains("error")) << b.dump();
    // The driver inflates until its `actual` meets the target.
    EXPECT_TRUE(wait_until(
        [&] {
            return api({{"cmd", "balloon"}, {"stats", false}}).value("actual_mib", 0.0) >= 512;
        },
        240))
        << api({{"cmd", "balloon"}, {"stats", false}}).dump() << log();
    int64_t after = guest_ram_kib();
    // The balloon took at least the 300 MiB of free pages that were resident.
    EXPECT_LE(after, before - 300 * kMib) << before << " -> " << after;
    EXPECT_GE(api({{"cmd", "balloon"}, {"stats", false}}).value("inflated_pages", 0), 512 * 256);
    // Deflating gives the guest its memory back.
    api({{"cmd", "balloon"}, {"target_mib", 0}});
    EXPECT_TRUE(wait_until(
        [&] {
            return api({{"cmd", "balloon"}, {"stats", false}}).value("actual_mib", 1.0) == 0;
        },
        240));
    EXPECT_TRUE(ask(*p, "fill 600", "filled 600")) << p->seen();
    finish(*p);
}

// A guest squeezed by its balloon takes pages back instead of killing its
// process; without deflate_on_oom the same allocation is killed.
TEST_F(LinuxBalloon, DeflateOnOomLetsAnAllocationSucceed) {
    for (bool deflate : {true, false}) {
        SCOPED_TRACE(deflate ? "deflate_on_oom" : "no deflate_on_oom");
        fs::remove(sock);
        auto p = boot(256, std::string("target_mib = 192\ndeflate_on_oom = ") + (deflate ? "true" : "false"));
        EXPECT_TRUE(wait_until(
            [&] {
                return api({{"cmd", "balloon"}, {"stats", false}}).value("actual_mib", 0.0) >= 192;
            },
            240))
            << api({{"cmd", "balloon"}}).dump();
        p->clear_seen();
        p->write_stdin("hold 128\n");
        auto answered = [&] {
            return p->wait_for_stdout("held 128", 1) || p->seen().find("hold failed") != std::string::npos;
        };
        EXPECT_TRUE(wait_until(answered, 240)) << p->seen();
        if (deflate) {
            EXPECT_NE(p->seen().find("held 128"), std::string::npos) << p->seen();
            EXPECT_LT(api({{"cmd", "balloon"}, {"stats", false}}).value("actual_mib", 192.0), 192.0);
        } else {
            EXPECT_NE(p->seen().find("hold failed"), std::string::npos) << p->seen();
        }
        ASSERT_TRUE(ask(*p, "release", "released"));
        finish(*p);
    }
}

}  // namespace
}  // namespace husk::test
