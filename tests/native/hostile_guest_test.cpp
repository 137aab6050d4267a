// Native KVM tier: a hostile driver. The `hostile` tiny guest
// (tests/guests/hostile.c) feeds virtio-rng descriptor loops, chains longer
// than the queue, buffers outside guest RAM, wrapping around the address
// space or in the MMIO hole, huge lengths, bad indices, register accesses no
// driver makes and notifications before negotiation. Each time husk-vmm lives
// on, the device says DEVICE_NEEDS_RESET (or ignores the access), and after a
// reset it works again. Under the ASan tier the same runs prove no host
// memory outside guest RAM is read or written. The `vsock_flood` guest
// floods virtio-vsock while posting no rx buffer.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "tests/lib/console_guest.h"
#include "vmm/base/system.h"

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

size_t open_fds(pid_t pid) {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
        ++n;
    return n;
}

// The `vsock_flood` guest (tests/guests/vsock_flood.c) never posts an rx
// buffer and floods virtio-vsock with packets that each ask for an answer,
// with credit requests and with connections: what it can make husk-vmm hold
// stays within the device's caps (README, "Limits"), and the VMM lives on.
TEST_F(HostileGuestTest, AVsockFloodWithNoRxBuffersStaysWithinTheCaps) {
    std::string sock = dir + "/h.sock", vsock = dir + "/v.sock";
    // Where the guest's connections to host port 9 go; nobody accepts them.
    auto l = sys::listen_unix(vsock + "_9", 4096);
    ASSERT_FALSE(l.is_error()) << l.error().message();
    auto p =
        start({"--kernel", guest("vsock_flood"), "--memory", "32", "--no-balloon", "--no-rng", "--vsock", vsock}, sock);
    ASSERT_TRUE(p->wait_for_stdout("ready\n", 30)) << p->seen() << log();
    ASSERT_NE(p->seen().find("vsock found"), std::string::npos) << p->seen();
    size_t fds_before = open_fds(p->pid());
    auto vsock_stats = [&] { return api(sock, {{"cmd", "stats"}}).value("vsock", nlohmann::json::object()); };

    // One RESPONSE and one CREDIT_UPDATE wait, however many credit requests came.
    EXPECT_EQ(ask(*p, "credit 2000"), "sent 2000 status=" + std::to_string(kStatusLive)) << log();
    EXPECT_EQ(vsock_stats().value("control_backlog", -1), 2) << vsock_stats().dump();
    // Connections stop at the cap; the rest are reset.
    EXPECT_EQ(ask(*p, "connect 300"), "sent 300 status=" + std::to_string(kStatusLive)) << log();
    EXPECT_EQ(vsock_stats().value("connections", -1), 64) << vsock_stats().dump();
    EXPECT_LE(open_fds(p->pid()), fds_before + 64 + 4);  // the 64 sockets, and an API client or two
    // Answers that cannot be delivered stop at the cap, and are counted.
    EXPECT_EQ(ask(*p, "rst 3000"), "sent 3000 status=" + std::to_string(kStatusLive)) << log();
    auto v = vsock_stats();
    EXPECT_EQ(v.value("control_backlog", -1), 512) << v.dump();
    EXPECT_GE(v.value("dropped_control_packets", 0), 3000 - 512) << v.dump();
    quit(*p);
}

}  // namespace
}  // namespace husk::test
