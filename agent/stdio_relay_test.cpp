// relay_output against every kind of fd an engine hands a runtime as the
// container's stdout: non-blocking pipes with a slow reader, a FIFO, a file,
// a pty, and a reader that closes early.
#include "agent/stdio_relay.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>

#include "vmm/base/unique_fd.h"

namespace husk::agent {
namespace {

// A deterministic pattern: a dropped or repeated chunk changes the checksum.
std::string pattern(size_t size) {
    std::string s(size, '\0');
    uint32_t x = 2463534242u;
    for (auto& c : s) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        c = char(x);
    }
    return s;
}

// The guest's side of a stream: a socketpair, `data` written into one end
// from a thread (which then closes it), the other end for relay_output.
struct Stream {
    UniqueFd relay_end;
    std::thread writer;
    std::atomic<bool> write_failed{false};

    explicit Stream(std::string data) {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        relay_end = UniqueFd(sv[0]);
        writer = std::thread([this, fd = sv[1], data = std::move(data)] {
            size_t off = 0;
            while (off < data.size()) {
                ssize_t n = ::send(fd, data.data() + off, std::min<size_t>(data.size() - off, 7000), MSG_NOSIGNAL);
                if (n <= 0) {
                    write_failed = true;
                    break;
                }
                off += size_t(n);
            }
            ::close(fd);
        });
    }
    ~Stream() {
        if (writer.joinable()) writer.join();
    }
};

std::string read_until_eof(int fd, std::chrono::microseconds pause_between_reads = {}) {
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
            continue;
        }
        if (n <= 0) return out;
        out.append(buf, size_t(n));
        if (pause_between_reads.count()) std::this_thread::sleep_for(pause_between_reads);
    }
}

void set_nonblocking(int fd) {
    ASSERT_EQ(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

TEST(RelayOutput, NonBlockingPipeWithASlowReaderGetsEveryByte) {
    // The shim's pipes: O_NONBLOCK, a small buffer, a reader slower than the guest.
    const std::string data = pattern(4 << 20);
    Stream stream(data);
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    set_nonblocking(wr.get());
    ASSERT_GT(::fcntl(wr.get(), F_SETPIPE_SZ, 4096), 0);
    auto got = std::async(std::launch::async, [&] { return read_until_eof(rd.get(), std::chrono::microseconds(200)); });
    EXPECT_EQ(relay_output(stream.relay_end.get(), wr.get()), RelayEnd::StreamEnded);
    wr.reset();
    std::string out = got.get();
    ASSERT_EQ(out.size(), data.size());
    EXPECT_TRUE(out == data) << "the bytes arrived changed or out of order";
}

TEST(RelayOutput, NonBlockingFifoGetsEveryByte) {
    char dir_template[] = "/tmp/husk-relay-test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    std::string fifo = std::string(dir_template) + "/out";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    UniqueFd rd(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    UniqueFd wr(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    ASSERT_TRUE(rd && wr);
    const std::string data = pattern(2 << 20);
    Stream stream(data);
    auto got = std::async(std::launch::async, [&] { return read_until_eof(rd.get(), std::chrono::microseconds(50)); });
    EXPECT_EQ(relay_output(stream.relay_end.get(), wr.get()), RelayEnd::StreamEnded);
    wr.reset();
    std::string out = got.get();
    ::unlink(fifo.c_str());
    ::rmdir(dir_template);
    EXPECT_EQ(out.size(), data.size());
    EXPECT_TRUE(out == data);
}

TEST(RelayOutput, FileGetsEveryByte) {
    char path[] = "/tmp/husk-relay-file.XXXXXX";
    UniqueFd file(::mkstemp(path));
    ASSERT_TRUE(file);
    ::unlink(path);
    const std::string data = pattern(3 << 20);
    Stream stream(data);
    EXPECT_EQ(relay_output(stream.relay_end.get(), file.get()), RelayEnd::StreamEnded);
    ASSERT_EQ(::lseek(file.get(), 0, SEEK_SET), 0);
    std::string out = read_until_eof(file.get());
    EXPECT_EQ(out.size(), data.size());
    EXPECT_TRUE(out == data);
}

TEST(RelayOutput, NonBlockingPtyGetsEveryByte) {
    int master = -1, slave = -1;
    ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
    UniqueFd m(master), s(slave);
    termios raw{};
    ASSERT_EQ(::tcgetattr(s.get(), &raw), 0);
    ::cfmakeraw(&raw);
    ASSERT_EQ(::tcsetattr(s.get(), TCSANOW, &raw), 0);
    set_nonblocking(s.get());
    const std::string data = pattern(1 << 20);
    Stream stream(data);
    auto got = std::async(std::launch::async, [&] {
        std::string out;
        char buf[4096];
        while (out.size() < data.size()) {
            pollfd p{m.get(), POLLIN, 0};
            if (::poll(&p, 1, 5000) <= 0) break;  // a pty has no EOF: stop when nothing comes
            ssize_t n = ::read(m.get(), buf, sizeof buf);
            if (n <= 0) break;
            out.append(buf, size_t(n));
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        return out;
    });
    EXPECT_EQ(relay_output(stream.relay_end.get(), s.get()), RelayEnd::StreamEnded);
    std::string out = got.get();
    EXPECT_EQ(out.size(), data.size());
    EXPECT_TRUE(out == data);
}

// SIGPIPE at its default action for a test's life: a relay that let one
// through would kill the test binary.
class DefaultSigpipe {
public:
    DefaultSigpipe() {
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        ::sigaction(SIGPIPE, &dfl, &m_old);
    }
    ~DefaultSigpipe() { ::sigaction(SIGPIPE, &m_old, nullptr); }

private:
    struct sigaction m_old {};
};

TEST(RelayOutput, AReaderThatClosesEarlyShutsTheStreamWithoutSigpipe) {
    DefaultSigpipe fatal;
    const std::string data = pattern(8 << 20);
    Stream stream(data);
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    set_nonblocking(wr.get());
    auto reader = std::thread([&] {
        char buf[1000];
        size_t total = 0;
        while (total < 100000) {
            ssize_t n = ::read(rd.get(), buf, sizeof buf);
            if (n <= 0) break;
            total += size_t(n);
        }
        rd.reset();  // the reader goes away mid-stream
    });
    EXPECT_EQ(relay_output(stream.relay_end.get(), wr.get()), RelayEnd::ReaderGone);
    reader.join();
    stream.writer.join();
    // The guest's writer learnt it too (EPIPE), instead of writing into nothing.
    EXPECT_TRUE(stream.write_failed);
    sigset_t pending;
    ::sigpending(&pending);
    EXPECT_FALSE(::sigismember(&pending, SIGPIPE)) << "a SIGPIPE was left pending";
}

TEST(RelayInput, AStreamTheGuestClosedRaisesNoSigpipe) {
    DefaultSigpipe fatal;
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd stream(sv[0]);
    ::close(sv[1]);  // the guest side is gone
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    ASSERT_EQ(::write(wr.get(), "hello\n", 6), 6);
    wr.reset();
    UniqueFd stop(::eventfd(0, EFD_CLOEXEC));
    relay_input(rd.get(), stream.get(), stop.get());  // returns instead of dying
}

}  // namespace
}  // namespace husk::agent
