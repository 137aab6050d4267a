#include "vmm/devices/legacy/serial.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "vmm/devices/legacy/debug_port.h"
#include "vmm/devices/legacy/i8042.h"

namespace husk {
namespace {

uint8_t rd(IoDevice& d, uint64_t off) {
    uint8_t b[1];
    d.read(off, b);
    return b[0];
}
void wr(IoDevice& d, uint64_t off, uint8_t v) {
    uint8_t b[1] = {v};
    d.write(off, b);
}

struct Pipe {
    int fds[2];
    Pipe() { EXPECT_EQ(::pipe(fds), 0); }
    ~Pipe() {
        ::close(fds[0]);
        ::close(fds[1]);
    }
    std::string drain(size_t n) {
        std::string s(n, '\0');
        EXPECT_EQ(::read(fds[0], s.data(), n), ssize_t(n));
        return s;
    }
};

TEST(Serial, TransmitsToOutputFd) {
    Pipe p;
    Serial s(p.fds[1], nullptr);
    for (char c : std::string("hi\n")) wr(s, 0, uint8_t(c));
    EXPECT_EQ(p.drain(3), "hi\n");
    EXPECT_EQ(rd(s, 5) & 0x60, 0x60);  // THR empty, transmitter empty
}

TEST(Serial, ThreInterruptOnEnableAndAfterWrite) {
    int irqs = 0;
    Serial s(-1, [&] { ++irqs; });
    wr(s, 1, 0x02);  // IER: THRI
    EXPECT_EQ(irqs, 1);
    EXPECT_EQ(rd(s, 2) & 0x0f, 0x02);  // IIR: THRE
    EXPECT_EQ(rd(s, 2) & 0x0f, 0x01);  // acknowledged: none pending
    wr(s, 0, 'x');
    EXPECT_EQ(irqs, 2);
}

TEST(Serial, InputRaisesReceiveInterrupt) {
    int irqs = 0;
    Serial s(-1, [&] { ++irqs; });
    wr(s, 1, 0x01);  // IER: RDI
    const uint8_t in[] = {'a', 'b'};
    s.enqueue_input(in);
    EXPECT_EQ(irqs, 1);
    EXPECT_EQ(rd(s, 5) & 0x01, 0x01);
    EXPECT_EQ(rd(s, 2) & 0x0f, 0x04);
    EXPECT_EQ(rd(s, 0), 'a');
    EXPECT_EQ(rd(s, 0), 'b');
    EXPECT_EQ(rd(s, 5) & 0x01, 0x00);
}

TEST(Serial, DivisorLatchAndScratch) {
    Serial s(-1, nullptr);
    wr(s, 3, 0x80);
    wr(s, 0, 0x01);
    wr(s, 1, 0x00);
    EXPECT_EQ(rd(s, 0), 0x01);
    wr(s, 3, 0x03);
    wr(s, 7, 0xa5);
    EXPECT_EQ(rd(s, 7), 0xa5);
}

TEST(Serial, LoopbackReflectsModemControl) {
    Serial s(-1, nullptr);
    wr(s, 4, 0x10 | 0x0a);  // loop, RTS, OUT2
    EXPECT_EQ(rd(s, 6) & 0xf0, 0x90);
}

TEST(Serial, SpotsKernelPanicBanner) {
    Serial s(-1, nullptr);
    for (char c : std::string("[ 1.0] Kernel panic - not syncing: VFS\n")) wr(s, 0, uint8_t(c));
    EXPECT_TRUE(s.saw_kernel_panic());
}

TEST(I8042, ResetCommandCallsBack) {
    int resets = 0;
    I8042 k([&] { ++resets; });
    wr(k, 4, 0xaa);
    EXPECT_EQ(rd(k, 4) & 0x01, 0x01);
    EXPECT_EQ(rd(k, 0), 0x55);
    EXPECT_EQ(resets, 0);
    wr(k, 4, 0xfe);
    EXPECT_EQ(resets, 1);
}

TEST(DebugPort, ScratchRoundTripAndCallbacks) {
    int init = 0, status = -1;
    DebugPort d({[&] { ++init; }, [&](uint8_t s) { status = s; }});
    EXPECT_EQ(rd(d, 0), 'H');
    uint8_t v[4] = {1, 2, 3, 4};
    d.write(4, v);
    uint8_t out[4] = {};
    d.read(4, out);
    EXPECT_EQ(std::memcmp(v, out, 4), 0);
    // Wide access at the last byte touches only what lies inside.
    uint8_t wide[8] = {};
    d.read(7, wide);
    EXPECT_EQ(wide[0], 4);
    wr(d, 0, 1);
    EXPECT_EQ(init, 1);
    wr(d, 1, 42);
    EXPECT_EQ(status, 42);
}

}  // namespace
}  // namespace husk

namespace husk {
namespace {

TEST(Serial, HaltBannerCallsBackOnce) {
    int halts = 0;
    Serial s(-1, nullptr, [&] { ++halts; });
    for (char c : std::string("[ 2.0] reboot: System halted\nreboot: System halted\n")) {
        uint8_t b[1] = {uint8_t(c)};
        s.write(0, b);
    }
    EXPECT_EQ(halts, 1);
}

TEST(Serial, PowerDownBannerIsNotAPanic) {
    Serial s(-1, nullptr);
    for (char c : std::string("[ 2.0] reboot: Power down\n")) {
        uint8_t b[1] = {uint8_t(c)};
        s.write(0, b);
    }
    EXPECT_TRUE(s.saw_power_down());
    EXPECT_FALSE(s.saw_kernel_panic());
}

}  // namespace
}  // namespace husk

namespace husk {
namespace {

TEST(Serial, KeepsTheLastLinesForACrashReport) {
    Serial s(-1, [] {});
    std::string text;
    for (int i = 0; i < 20; ++i) text += "line " + std::to_string(i) + "\n";
    text += "partial";
    for (char ch : text) s.write(0, std::span(reinterpret_cast<const uint8_t*>(&ch), 1));
    std::string tail = s.recent_output();
    EXPECT_EQ(tail.find("line 7\n"), std::string::npos) << tail;
    EXPECT_EQ(tail.rfind("line 8\n", 0), 0u) << tail;
    EXPECT_NE(tail.find("line 19\npartial"), std::string::npos) << tail;
}

}  // namespace
}  // namespace husk
