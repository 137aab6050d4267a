// The event loop's ring: reads complete on the loop thread, and operations
// outside the ring's restrictions are refused by the kernel (seccomp cannot
// see inside a ring, so this is what keeps it from being a way around it).
#include "vmm/io/event_loop.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <thread>

namespace husk {
namespace {

TEST(EventLoop, ReadsCompleteAndOtherOperationsAreRefused) {
    auto loop = EventLoop::create(16);
    ASSERT_TRUE(loop) << loop.error().message();
    std::thread runner([&] { loop.value()->run(); });

    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    ASSERT_EQ(::write(fds[1], "abc", 3), 3);
    char buf[8] = {};
    std::promise<int> read_done;
    ASSERT_TRUE(loop.value()->submit([&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fds[0], buf, sizeof buf, 0); },
                                     [&](int result) { read_done.set_value(result); }));
    EXPECT_EQ(read_done.get_future().get(), 3);
    EXPECT_STREQ(buf, "abc");

    // openat and connect are not on the list: -EACCES, and nothing opened.
    std::promise<int> open_done;
    ASSERT_TRUE(loop.value()->submit(
        [&](io_uring_sqe* sqe) { io_uring_prep_openat(sqe, AT_FDCWD, "/etc/hostname", O_RDONLY, 0); },
        [&](int result) { open_done.set_value(result); }));
    EXPECT_EQ(open_done.get_future().get(), -EACCES);
    std::promise<int> connect_done;
    ASSERT_TRUE(loop.value()->submit([&](io_uring_sqe* sqe) { io_uring_prep_connect(sqe, fds[0], nullptr, 0); },
                                     [&](int result) { connect_done.set_value(result); }));
    EXPECT_EQ(connect_done.get_future().get(), -EACCES);
    // A nop is: it hands work from another thread to the loop's (virtio-fs).
    std::promise<int> nop_done;
    ASSERT_TRUE(loop.value()->submit([&](io_uring_sqe* sqe) { io_uring_prep_nop(sqe); },
                                     [&](int result) { nop_done.set_value(result); }));
    EXPECT_EQ(nop_done.get_future().get(), 0);

    loop.value()->stop();
    runner.join();
    ::close(fds[0]);
    ::close(fds[1]);
}

}  // namespace
}  // namespace husk
