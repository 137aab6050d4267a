#include "runtime/template.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "runtime/command.h"
#include "runtime/netns.h"
#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/base/unique_fd.h"
#include "vmm/base/wire.h"
#include "vmm/client/vmm_command.h"
#include "vmm/snapshot/snapshot.h"

namespace husk::runtime {
namespace {

namespace fs = std::filesystem;

constexpr int kBootTimeoutSeconds = 180;

// A file's identity for the key: path, size and modification time, so a
// rebuilt kernel, agent or husk-vmm gets a template of its own.
std::string stamp(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return path + ":missing";
    return fmt::format("{}:{}:{}.{}", path, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

// The identity's first three lines name the husk-vmm, kernel and agent builds.
std::string builds_of(const std::string& identity) {
    size_t at = 0;
    for (int i = 0; i < 3 && at != std::string::npos; ++i) at = identity.find('\n', at + 1);
    return identity.substr(0, at);
}

// Templates of other builds can never be restored by this one: they go.
void prune_other_builds(const std::string& root, const std::string& identity) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(root, ec)) {
        if (!entry.is_directory(ec)) continue;
        std::ifstream in(entry.path() / "identity");
        std::string theirs((std::istreambuf_iterator<char>(in)), {});
        if (theirs.empty() || builds_of(theirs) == builds_of(identity)) continue;
        log::info("removing the template {} of another build", entry.path().string());
        fs::remove_all(entry.path(), ec);
        fs::remove(entry.path().string() + ".lock", ec);
    }
}

// The template root holds snapshots that become guests: it must be ours alone.
Result<void> check_private_dir(const std::string& dir) {
    struct stat st {};
    if (::lstat(dir.c_str(), &st) < 0) return Error::from_errno(errno, "stat " + dir);
    // Ours but open to others (made by an older husk): close it.
    if (S_ISDIR(st.st_mode) && st.st_uid == ::geteuid() && (st.st_mode & 077) != 0 && ::chmod(dir.c_str(), 0700) == 0)
        st.st_mode &= ~mode_t(077);
    if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)
        return Error::from_string(dir + " must be a directory owned by uid " + std::to_string(::geteuid()) +
                                      " with no access for others (mode 0700)",
                                  EPERM);
    return {};
}

}  // namespace

std::string template_root() {
    const char* dir = std::getenv("HUSK_TEMPLATE_DIR");
    if (dir && *dir) return dir;
    return ::geteuid() == 0 ? "/run/husk/templates" : "/tmp/husk-templates-" + std::to_string(::geteuid());
}

std::string agent_initramfs(const RuntimeConfig& config) {
    if (!config.initramfs.empty()) return config.initramfs;
    if (config.vmm.find('/') == std::string::npos) return {};
    std::string dir = config.vmm.substr(0, config.vmm.rfind('/'));
    for (const char* rel : {"/../agent/husk-agent.cpio", "/../share/husk/husk-agent.cpio"})
        if (::access((dir + rel).c_str(), R_OK) == 0) return dir + rel;
    return {};
}

Result<std::string> ensure_template(const RuntimeConfig& config, TemplateNics nics) {
    const bool nic = nics.count > 0;
    std::string agent = agent_initramfs(config);
    if (agent.empty()) return Error::from_string("the agent's initramfs was not found beside " + config.vmm, ENOENT);
    std::string identity = stamp(config.vmm) + "\n" + stamp(config.kernel) + "\n" + stamp(agent) + "\n" +
                           std::to_string(config.vcpus) + "\n" + std::to_string(config.memory_mib) +
                           (nic ? fmt::format("\nnics {}{}", nics.count, nics.unplugged ? " unplugged" : "") : "");
    std::string root = template_root();
    std::string dir = fmt::format("{}/{:016x}", root, wire::fnv1a64(identity));
    std::error_code ec;
    fs::create_directories(fs::path(root).parent_path(), ec);
    if (::mkdir(root.c_str(), 0700) < 0 && errno != EEXIST) return Error::from_errno(errno, "create " + root);
    TRY(check_private_dir(root));
    // A template whose vmstate does not read back (damaged, half-written) is made again.
    auto ready = [&] { return !snapshot::read_state(dir).is_error(); };
    if (ready()) return dir;
    // One maker per template; the others wait here and then find it made.
    auto lock = TRY(sys::open(dir + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    while (::flock(lock.get(), LOCK_EX) < 0)
        if (errno != EINTR) return Error::from_errno(errno, "lock " + dir + ".lock");
    if (ready()) return dir;
    fs::remove_all(dir, ec);

    std::string work = dir + ".making-" + std::to_string(::getpid());
    fs::remove_all(work, ec);
    if (::mkdir(work.c_str(), 0700) < 0) return Error::from_errno(errno, "create " + work);
    struct Cleanup {
        std::string path;
        ~Cleanup() {
            std::error_code ignored;
            fs::remove_all(path, ignored);
        }
    } cleanup{work};
    // The container's disk replaces this empty one at restore; the guest
    // learns its size then (virtio-blk configuration interrupt).
    TRY(sys::open(work + "/disk", O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    VmmCommand command;
    command.vmm = config.vmm;
    command.kernel = config.kernel;
    command.initramfs = agent;
    command.memory_mib = config.memory_mib;
    command.vcpus = config.vcpus;
    command.drives = {work + "/disk"};
    // virtio-fs with no shares yet: a restore serves the container's.
    command.fs = true;
    command.vsock_socket = work + "/vsock";
    command.console = VmmCommand::Console::None;
    command.log = work + "/log";
    command.snapshot_on_ready = work + "/snapshot";
    if (nic) {
        for (size_t i = 0; i < nics.count; ++i)
            command.nics.push_back({net::tap_name(i), kTemplateMac + std::to_string(i), nics.unplugged});
    }
    const std::string vm_toml = TRY(command.vm_toml());
    TRY(sys::write_file(work + "/vm.toml", vm_toml));
    std::vector<std::string> argv = command.argv(work + "/vm.toml");
    log::info("making the VM template {} ({} vCPUs, {} MiB{})", dir, config.vcpus, config.memory_mib,
              nic ? fmt::format(", {} {}NIC(s)", nics.count, nics.unplugged ? "unplugged " : "") : "");
    // The NIC's TAP is made in a network namespace of the template VM's own, gone when it exits.
    std::function<int()> own_netns;
    if (nic) own_netns = [] { return ::unshare(CLONE_NEWNET) < 0 ? errno : 0; };
    auto r = TRY(run_command(argv, "", kBootTimeoutSeconds, nullptr, "", own_netns));
    if (r.status != 0)
        return Error::from_string(
            fmt::format("the template VM exited with {}: {}{}", r.status, r.err, sys::read_tail(work + "/log")));
    std::ofstream(work + "/snapshot/identity") << identity << "\n";
    if (::rename((work + "/snapshot").c_str(), dir.c_str()) < 0)
        return Error::from_errno(errno, "move the template into " + dir);
    prune_other_builds(root, identity);
    return dir;
}

}  // namespace husk::runtime
