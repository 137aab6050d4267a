// husk-agent: PID 1 of a husk microVM. Sets up the guest's own filesystems,
// listens on vsock for husk-vmm, runs the container, and powers off when done.
// Outside a VM (not PID 1) it serves a Unix socket for tests: husk-agent --listen PATH.
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "agent/agent.h"
#include "vmm/base/system.h"

using namespace husk;

namespace {

constexpr uint16_t kDebugPort = 0x440;  // husk-vmm's debug port: +0 is the boot timer

void say(const std::string& message) {
    std::fprintf(stderr, "husk-agent: %s\n", message.c_str());
}

Result<void> check(int rc, const std::string& what) {
    if (rc < 0 && errno != EBUSY) return Error::from_errno(errno, what);
    return {};
}

// The initramfs root cannot be pivot_root'ed away from (it has no parent mount),
// so the agent first moves itself onto a tmpfs root; the container's process can
// then pivot_root into its rootfs.
Result<void> leave_initramfs() {
    if (::mkdir("/.root", 0755) < 0 && errno != EEXIST) return Error::from_errno(errno, "mkdir /.root");
    TRY(check(::mount("tmpfs", "/.root", "tmpfs", MS_NOSUID, "mode=755"), "mount the agent's root"));
    TRY(check(::chdir("/.root"), "chdir"));
    TRY(check(::mount(".", "/", nullptr, MS_MOVE, nullptr), "move the agent's root"));
    TRY(check(::chroot("."), "chroot"));
    TRY(check(::chdir("/"), "chdir /"));
    return {};
}

Result<void> mount_system() {
    struct M {
        const char *source, *target, *type;
        unsigned long flags;
        const char* data;
    };
    static constexpr M kMounts[] = {
        {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
        {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
        {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=755"},
        {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666"},
        {"tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
        {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755"},
    };
    for (const auto& m : kMounts) {
        ::mkdir(m.target, 0755);
        TRY(check(::mount(m.source, m.target, m.type, m.flags, m.data), std::string("mount ") + m.target));
    }
    ::symlink("pts/ptmx", "/dev/ptmx");  // devtmpfs already has a ptmx node; the devpts one is what we use
    return {};
}

void console_stdio() {
    int fd = ::open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return;
    for (int i = 0; i < 3; ++i) ::dup2(fd, i);
    if (fd > 2) ::close(fd);
}

Result<UniqueFd> listen_vsock() {
    int fd = ::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Error::from_errno(errno, "vsock socket");
    UniqueFd sock(fd);
    sockaddr_vm addr{};
    addr.svm_family = AF_VSOCK;
    addr.svm_port = agent::kPort;
    addr.svm_cid = VMADDR_CID_ANY;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) return Error::from_errno(errno, "vsock bind");
    if (::listen(fd, 16) < 0) return Error::from_errno(errno, "vsock listen");
    return sock;
}

[[noreturn]] void power_off(const std::string& rootfs) {
    ::kill(-1, SIGKILL);
    while (::waitpid(-1, nullptr, 0) > 0) {
    }
    ::sync();
    if (::umount2(rootfs.c_str(), 0) < 0) ::umount2(rootfs.c_str(), MNT_DETACH);
    // Without ACPI the kernel cannot power off: it prints "reboot: Power
    // down", PID 1 exits and the kernel panics and resets. husk-vmm takes that
    // as a clean end only after this agent reported the container's exit
    // (vmm/EXIT_STATUS.md).
    ::reboot(RB_POWER_OFF);
    for (;;) ::pause();
}

int run_pid1() {
    if (auto r = leave_initramfs(); !r) say(r.error().message());
    if (auto r = mount_system(); !r) {
        say(r.error().message());
        ::reboot(RB_POWER_OFF);
    }
    console_stdio();
    auto listener = listen_vsock();
    if (!listener) {
        say(listener.error().message());
        ::reboot(RB_POWER_OFF);
    }
    agent::Agent::Options options;
    auto agent = agent::Agent::create(listener.release_value(), options);
    if (!agent) {
        say(agent.error().message());
        ::reboot(RB_POWER_OFF);
    }
    // Ready: tell husk-vmm's boot timer (ioperm needs CAP_SYS_RAWIO, which PID 1 has).
    // The permission goes again at once: fork and exec pass it on, and the
    // container's processes must not reach husk-vmm's ports (spawn.cpp drops
    // any in the child too).
    if (::ioperm(kDebugPort, 1, 1) == 0) {
        outb(1, kDebugPort);
        ::ioperm(kDebugPort, 1, 0);
    }
    if (auto r = agent.value()->run(); !r) say(r.error().message());
    agent.value().reset();
    power_off(options.rootfs_mount);
}

}  // namespace

int main(int argc, char** argv) {
    if (::getpid() == 1) return run_pid1();
    if (argc == 5 && std::string(argv[1]) == "--listen" && std::string(argv[3]) == "--rootfs") {
        // Test mode: no system mounts, no power-off; the rootfs is a directory (container spec without a device).
        auto listener = sys::listen_unix(argv[2], 16);
        if (!listener) {
            say(listener.error().message());
            return 1;
        }
        agent::Agent::Options options;
        options.power_off = false;
        options.whole_machine = false;
        options.rootfs_mount = argv[4];
        auto agent = agent::Agent::create(listener.release_value(), options);
        if (!agent) {
            say(agent.error().message());
            return 1;
        }
        auto r = agent.value()->run();
        return r ? 0 : 1;
    }
    std::fprintf(stderr,
                 "husk-agent %s: the init process of husk microVMs; it runs as PID 1 inside the guest.\n"
                 "usage: husk-agent --listen SOCKET --rootfs DIR   (outside a VM, for tests; needs root)\n",
                 HUSK_VERSION);
    return 2;
}
