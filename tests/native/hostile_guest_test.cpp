// Native KVM tier: a hostile driver. The `hostile` tiny guest
// (tests/guests/hostile.c) feeds virtio-rng descriptor loops, chains longer
// than the queue, buffers outside guest RAM, wrapping around the address
// space or in the MMIO hole, huge lengths, bad indices, register accesses no
// driver makes and notifications before negotiation. Each time husk-vmm lives
// on, the device says DEVICE_NEEDS_RESET (or ignores the access), and after a
// reset it works again. Under the ASan tier the same runs prove no host
// memory outside guest RAM is read or written.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "tests/lib/console_guest.h"

namespace husk::test {
namespace {

// Device status: ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK, and DEVICE_NEEDS_RESET.
constexpr int kStatusLive = 15;
constexpr int kStatusNeedsReset = 64;

class HostileGuestTest : public ConsoleGuestTest {
protected:
    std::unique_ptr<RunningProcess> boot(const std::string& api) {
        auto p = start({"--kernel", guest("hostile"), "--memory", "32", "--no-balloon"}, api);
        EXPECT_TRUE(p->wait_for_stdout("ready\n", 30)) << p->seen() << log();
        EXPECT_NE(p->seen().find("rng found"), std::string::npos) << p->seen();
        return p;
    }
};

TEST_F(HostileGuestTest, BrokenChainsNeedResetAndTheVmmLivesOn) {
    std::string sock = dir + "/h.sock";
    auto p = boot(sock);
    const char* attacks[] = {"loop", "long", "outside", "wrap", "huge", "hole", "index", "avail"};
    for (const char* attack : attacks) {
        // Nothing was used: the device refused the chain before writing a byte.
        EXPECT_EQ(ask(*p, attack), "status=" + std::to_string(kStatusLive | kStatusNeedsReset) + " used=0")
            << attack << "\n"
            << log();
        EXPECT_EQ(ask(*p, "reset"), "reset ok") << attack;
        EXPECT_EQ(ask(*p, "good"), "good 64") << "after " << attack << ", a reset device works again\n" << log();
        EXPECT_EQ(ask(*p, "reset"), "reset ok") << attack;
    }
    // One warning per refusal, naming the device.
    std::string text = log();
    size_t warnings = 0;
    for (size_t at = 0; (at = text.find("device needs reset", at)) != std::string::npos; ++at) ++warnings;
    EXPECT_EQ(warnings, std::size(attacks)) << text;
    auto stats = api(sock, {{"cmd", "stats"}});
    EXPECT_FALSE(stats.contains("error")) << "the control socket still answers: " << stats.dump();
    quit(*p);
}

TEST_F(HostileGuestTest, StrayRegisterAccessesAreIgnored) {
    auto p = boot(dir + "/h.sock");
    // Wrong widths, unknown, misaligned and read-only registers: the device is as it was, and works.
    EXPECT_EQ(ask(*p, "regs"), "status=" + std::to_string(kStatusLive) + " good 64") << log();
    quit(*p);
}

TEST_F(HostileGuestTest, NotifyingBeforeNegotiationDoesNothing) {
    auto p = boot(dir + "/h.sock");
    EXPECT_EQ(ask(*p, "early"), "status=0 used=0") << log();
    EXPECT_EQ(ask(*p, "reset"), "reset ok");
    EXPECT_EQ(ask(*p, "good"), "good 64") << log();
    quit(*p);
}

}  // namespace
}  // namespace husk::test
