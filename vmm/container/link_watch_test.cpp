#include "vmm/container/link_watch.h"

#include <gtest/gtest.h>
#include <linux/if_arp.h>
#include <linux/rtnetlink.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "vmm/io/event_loop.h"

namespace husk {
namespace {

// One RTM_NEWLINK message as the kernel sends it on a link event.
std::vector<uint8_t> new_link(int index, const std::string& name, unsigned short type = ARPHRD_ETHER) {
    ifinfomsg info{};
    info.ifi_family = AF_UNSPEC;
    info.ifi_index = index;
    info.ifi_type = type;
    netlink::Message m(RTM_NEWLINK, 0);
    m.header(info).string(IFLA_IFNAME, name);
    auto bytes = m.finish();
    return {bytes.begin(), bytes.end()};
}

std::vector<uint8_t> operator+(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

using Names = std::vector<std::string>;

// Before the container runs, interfaces are the runtime's (it wires them at
// start) and only noted; once it runs, each new Ethernet interface is named
// once (the VM's TAPs are there before the watch).
TEST(LinkWatch, NamesEachInterfaceAddedWhileTheContainerRunsOnce) {
    bool running = false;
    auto watch = LinkWatch::open([&] { return running; }, [](const std::string&) {});
    ASSERT_TRUE(watch) << watch.error().message();
    LinkWatch& w = *watch.value();
    EXPECT_EQ(w.on_events(new_link(1000, "eth0")), Names{});
    running = true;
    EXPECT_EQ(w.on_events(new_link(1000, "eth0")), Names{}) << "known before start";
    EXPECT_EQ(w.on_events(new_link(1001, "eth1") + new_link(1003, "sit1", ARPHRD_SIT)), Names{"eth1"});
    EXPECT_EQ(w.on_events(new_link(1001, "eth1")), Names{}) << "once";
    // Malformed: a length past the end, a length shorter than a header.
    auto bad = new_link(1004, "eth2");
    bad[0] = 0xff;
    EXPECT_EQ(w.on_events(bad), Names{});
    bad[0] = 4;
    bad[1] = bad[2] = bad[3] = 0;
    EXPECT_EQ(w.on_events(bad), Names{});
    EXPECT_EQ(w.on_events({}), Names{});
}

// The whole path, in a network namespace of the test's own (root only): the
// socket's events read on a real event loop, a veth pair added once the
// container runs named through `added`.
TEST(LinkWatch, InterfacesAddedToTheNamespaceAreHeardOnTheLoop) {
    std::string skipped;
    std::vector<std::string> heard;
    std::mutex lock;
    std::thread([&] {
        if (::unshare(CLONE_NEWNET) < 0) return void(skipped = "unshare(CLONE_NEWNET) is not allowed here");
        auto loop = EventLoop::create();
        ASSERT_TRUE(loop);
        auto watch = LinkWatch::open([] { return true; },
                                     [&](const std::string& name) {
                                         std::lock_guard guard(lock);
                                         heard.push_back(name);
                                     });
        ASSERT_TRUE(watch) << watch.error().message();
        watch.value()->start(*loop.value());
        std::thread runner([&] { loop.value()->run(); });
        if (std::system("ip link add w0 type veth peer name w1 >/dev/null 2>&1") != 0) skipped = "no veth pair here";
        for (int i = 0; i < 500 && skipped.empty(); ++i) {
            {
                std::lock_guard guard(lock);
                if (heard.size() >= 2) break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        loop.value()->stop();
        runner.join();
    }).join();
    if (!skipped.empty()) GTEST_SKIP() << skipped;
    std::sort(heard.begin(), heard.end());
    EXPECT_EQ(heard, (Names{"w0", "w1"}));
}

}  // namespace
}  // namespace husk
