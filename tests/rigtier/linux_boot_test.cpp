// Rig tier: the guest kernel built from kernel-config/ boots to its init under
// husk-vmm. Needs hardware KVM (kvm_intel/kvm_amd): run directly on such a
// host, or inside the nested rig (tests/rig/run).
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tests/lib/subprocess.h"
#include "vmm/base/system.h"

namespace husk::test {
namespace {

std::string env(const char* name) {
    return env_or(name);
}

constexpr const char* kCmdline = "console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd quiet";

// husk-vmm booting the test kernel and initramfs with `init_args` for the test init.
std::vector<std::string> vmm_argv(const std::string& init_args, std::vector<std::string> extra = {},
                                  const std::string& kernel = env("HUSK_VMLINUX")) {
    std::vector<std::string> argv = {env("HUSK_VMM"),
                                     "--kernel",
                                     kernel,
                                     "--initramfs",
                                     env("HUSK_INITRAMFS"),
                                     "--memory",
                                     "256",
                                     "--cmdline",
                                     std::string(kCmdline) + " -- " + init_args};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
}

ProcessResult boot(const std::string& init_args, std::vector<std::string> extra = {},
                   const std::string& kernel = env("HUSK_VMLINUX")) {
    RunOptions o;
    o.timeout_seconds = 120;
    return run_process(vmm_argv(init_args, std::move(extra), kernel), o);
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

// --- virtio devices -----------------------------------------------------------

struct Image {
    std::string path;
    Image(const std::string& name, size_t size, bool random) {
        path = "/tmp/husk-rig-" + name + "-" + std::to_string(getpid()) + ".img";
        std::vector<unsigned char> data(size, 0);
        if (random) {
            uint64_t x = 0x9e3779b97f4a7c15ull;
            for (auto& b : data) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b = static_cast<unsigned char>(x);
            }
        }
        FILE* f = fopen(path.c_str(), "wb");
        fwrite(data.data(), 1, size, f);
        fclose(f);
    }
    ~Image() { unlink(path.c_str()); }
    std::vector<unsigned char> read() const {
        std::vector<unsigned char> data;
        FILE* f = fopen(path.c_str(), "rb");
        int c;
        while ((c = fgetc(f)) != EOF) data.push_back(static_cast<unsigned char>(c));
        fclose(f);
        return data;
    }
};

TEST(LinuxVirtio, BlockReadAndWriteMatchTheHost) {
    Image src("vda", 4 << 20, true), dst("vdb", 2 << 20, false);
    uint64_t h = 1469598103934665603ull;
    for (unsigned char b : src.read()) h = (h ^ b) * 1099511628211ull;
    char want[64];
    snprintf(want, sizeof want, "vda bytes=%d fnv=%016llx", 4 << 20, static_cast<unsigned long long>(h));
    auto r = boot("blk", {"--drive", src.path + ",ro,id=source", "--drive", dst.path, "--vcpus", "2"});
    EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find(want), std::string::npos) << "want " << want << "\n" << r.out;
    EXPECT_NE(r.out.find("vdb written=2097152"), std::string::npos) << r.out;
    auto out = dst.read();
    ASSERT_EQ(out.size(), size_t(2 << 20));
    size_t bad = 0;
    for (size_t i = 0; i < out.size(); ++i)
        if (out[i] != static_cast<unsigned char>((i * 31 + i / 4096) & 0xff)) ++bad;
    EXPECT_EQ(bad, 0u);
}

TEST(LinuxVirtio, ReadOnlyDriveRefusesWrites) {
    Image src("ro", 1 << 20, true);
    auto before = src.read();
    auto r = boot("blk-ro", {"--drive", src.path + ",ro"});
    EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("vda write refused"), std::string::npos) << r.out;
    EXPECT_TRUE(src.read() == before);
}

// virtio-fs: two host directories shared under one tag, one read-only. The
// guest lists them, reads the host's file, writes 3 MiB, makes, renames and
// links; the host sees every change, and the read-only share refuses a create.
TEST(LinuxVirtio, FsSharesHostDirectoriesBothWays) {
    char tmpl[] = "/tmp/husk-fs-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    std::string dir = tmpl, rw = dir + "/rw", ro = dir + "/ro";
    ASSERT_EQ(mkdir(rw.c_str(), 0755), 0);
    ASSERT_EQ(mkdir(ro.c_str(), 0755), 0);
    ASSERT_TRUE(sys::write_file(rw + "/in", "hello from the host\n"));
    auto r = boot("fs", {"--share", "rw=" + rw, "--share", "ro=" + ro + ",ro"});
    EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("fs root: rw ro"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("fs in: hello from the host"), std::string::npos) << r.out;
    constexpr size_t kSize = 3 << 20;
    std::string want(kSize, '\0');
    for (size_t i = 0; i < kSize; ++i) want[i] = char((i * 13 + 7) & 0xff);
    uint64_t h = 1469598103934665603ull;
    for (unsigned char b : want) h = (h ^ b) * 1099511628211ull;
    char line[80];
    snprintf(line, sizeof line, "fs out bytes=%zu fnv=%016llx", kSize, static_cast<unsigned long long>(h));
    EXPECT_NE(r.out.find(line), std::string::npos) << "want " << line << "\n" << r.out;
    EXPECT_NE(r.out.find("fs ro create: Read-only file system"), std::string::npos) << r.out;
    // What the host sees.
    auto out = sys::read_file(rw + "/out");
    ASSERT_TRUE(out) << out.error().message();
    EXPECT_TRUE(out.value() == want);
    struct stat st {};
    EXPECT_EQ(stat((rw + "/e").c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(stat((rw + "/hard").c_str(), &st), 0);
    EXPECT_EQ(st.st_nlink, 2u);
    char target[16] = {};
    EXPECT_EQ(readlink((rw + "/sym").c_str(), target, sizeof target - 1), 3);
    EXPECT_STREQ(target, "out");
    EXPECT_NE(access((ro + "/x").c_str(), F_OK), 0);
    std::system(("rm -rf " + dir).c_str());
}

int unix_connect(const std::string& path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

std::string read_line(int fd) {
    std::string line;
    char c;
    while (read(fd, &c, 1) == 1 && c != '\n') line += c;
    return line;
}

TEST(LinuxVirtio, VsockHostToGuestEcho) {
    std::string sock = "/tmp/husk-vsock-" + std::to_string(getpid()) + ".sock";
    RunningProcess vmm(vmm_argv("vsock-echo 1234", {"--vsock", sock, "--vcpus", "2"}));
    ASSERT_TRUE(vmm.wait_for_stdout("vsock listening on 1234", 240));
    int fd = unix_connect(sock);
    ASSERT_GE(fd, 0);
    std::string hello = "CONNECT 1234\n";
    ASSERT_EQ(write(fd, hello.data(), hello.size()), ssize_t(hello.size()));
    std::string ok = read_line(fd);
    EXPECT_EQ(ok.rfind("OK ", 0), 0u) << ok;
    std::vector<unsigned char> data(1 << 20);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<unsigned char>(i * 13 + i / 1000);
    std::thread writer([&] {
        size_t off = 0;
        while (off < data.size()) {
            ssize_t w = write(fd, data.data() + off, data.size() - off);
            if (w <= 0) break;
            off += size_t(w);
        }
        shutdown(fd, SHUT_WR);
    });
    std::vector<unsigned char> back;
    unsigned char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) back.insert(back.end(), buf, buf + n);
    writer.join();
    close(fd);
    // The guest's account (what it read, how long its lingering close took) beside ours.
    EXPECT_TRUE(vmm.wait_for_stdout("vsock echoed 1048576 bytes", 120)) << vmm.seen();
    EXPECT_EQ(back.size(), data.size()) << vmm.seen();
    EXPECT_TRUE(back == data);
}

TEST(LinuxVirtio, VsockGuestToHost) {
    std::string sock = "/tmp/husk-vsock-g-" + std::to_string(getpid()) + ".sock";
    std::string port_path = sock + "_5000";
    auto listening = sys::listen_unix(port_path, 1);
    ASSERT_FALSE(listening.is_error()) << listening.error().message();
    int listener = listening.release_value().release();
    RunningProcess vmm(vmm_argv("vsock-send 5000 3000000", {"--vsock", sock}));
    int c = accept(listener, nullptr, nullptr);
    ASSERT_GE(c, 0);
    size_t total = 0, bad = 0;
    unsigned char buf[65536];
    ssize_t n;
    while ((n = read(c, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; ++i)
            if (buf[i] != static_cast<unsigned char>(((total + size_t(i)) * 7 + 3) & 0xff)) ++bad;
        total += size_t(n);
    }
    close(c);
    close(listener);
    unlink(port_path.c_str());
    // husk-vmm's own output (a seccomp kill or a device error names itself there) with any failure.
    bool sent = vmm.wait_for_stdout("vsock sent 3000000 bytes", 120);
    EXPECT_EQ(total, 3000000u) << vmm.seen();
    EXPECT_EQ(bad, 0u);
    EXPECT_TRUE(sent) << vmm.seen();
}

TEST(LinuxVirtio, VsockToAClosedPortIsRefused) {
    std::string sock = "/tmp/husk-vsock-r-" + std::to_string(getpid()) + ".sock";
    RunningProcess vmm(vmm_argv("vsock-send 5001 10", {"--vsock", sock}));
    EXPECT_TRUE(vmm.wait_for_stdout("vsock connect: Connection reset by peer", 240));
}

// The guest pings the host over virtio-net and a TAP, in a network namespace
// of the test's own (nothing touches the host's network).
TEST(LinuxVirtio, NetPingsTheHostThroughATap) {
    auto vmm = vmm_argv("ping 10.0.2.1", {"--net", "htap0,mac=02:00:00:00:00:02"});
    std::string& cmdline = vmm[8];
    cmdline.insert(cmdline.find(" -- "), " ip=10.0.2.2::10.0.2.1:255.255.255.0::eth0:off");
    // The TAP in a network namespace of its own, then husk-vmm there ("$0" "$@": its argv).
    std::vector<std::string> argv = {"unshare", "--net", "sh", "-c",
                                     "ip link set lo up && ip tuntap add dev htap0 mode tap && "
                                     "ip addr add 10.0.2.1/24 dev htap0 && ip link set htap0 up && exec \"$0\" \"$@\""};
    argv.insert(argv.end(), vmm.begin(), vmm.end());
    RunOptions o;
    o.timeout_seconds = 300;
    auto r = run_process(argv, o);
    EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("ping reply from 10.0.2.1"), std::string::npos) << r.out << r.err;
}

TEST(LinuxVirtio, RngGivesEntropy) {
    auto r = boot("rng");
    EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("hwrng 64 bytes"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace husk::test
