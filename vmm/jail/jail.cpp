#include "vmm/jail/jail.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/mount.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/base/unique_fd.h"

namespace husk::jail {
namespace {

// The new mount API by system call number (glibc 2.36 wraps only some of it).
int open_tree(int dirfd, const char* path, unsigned flags) {
    return int(::syscall(SYS_open_tree, dirfd, path, flags));
}
int move_mount(int from_dirfd, const char* from, int to_dirfd, const char* to, unsigned flags) {
    return int(::syscall(SYS_move_mount, from_dirfd, from, to_dirfd, to, flags));
}
int mount_setattr(int dirfd, const char* path, unsigned flags, mount_attr* attr) {
    return int(::syscall(SYS_mount_setattr, dirfd, path, flags, attr, sizeof *attr));
}

Result<UniqueFd> check_fd(int fd, const std::string& what) {
    if (fd < 0) return Error::from_errno(errno, what);
    return UniqueFd(fd);
}

// mkdir -p of `path` (absolute) relative to the current directory.
Result<void> make_dirs(const std::string& path) {
    std::string at = ".";
    size_t start = 1;
    while (start < path.size()) {
        size_t end = path.find('/', start);
        if (end == std::string::npos) end = path.size();
        at += "/" + path.substr(start, end - start);
        if (::mkdir(at.c_str(), 0755) < 0 && errno != EEXIST) return Error::from_errno(errno, "mkdir " + at);
        start = end + 1;
    }
    return {};
}

Result<void> join_cgroup(const std::string& cgroup) {
    std::string dir = "/sys/fs/cgroup/" + (cgroup[0] == '/' ? cgroup.substr(1) : cgroup);
    if (dir.find("..") != std::string::npos) return Error::from_string("cgroup `" + cgroup + "` leaves /sys/fs/cgroup");
    std::string at;
    for (size_t start = 1; start <= dir.size();) {
        size_t end = dir.find('/', start);
        if (end == std::string::npos) end = dir.size();
        at = dir.substr(0, end);
        if (::mkdir(at.c_str(), 0755) < 0 && errno != EEXIST) return Error::from_errno(errno, "create cgroup " + at);
        start = end + 1;
    }
    auto procs = TRY(sys::open(dir + "/cgroup.procs", O_WRONLY | O_CLOEXEC));
    TRY(sys::write_all(procs.get(), std::to_string(::getpid())).context("join cgroup " + dir));
    return {};
}

Result<void> drop_capabilities(uint64_t keep) {
    for (int cap = 0; ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; ++cap)
        if (!(cap < 64 && (keep >> cap) & 1) && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
            return Error::from_errno(errno, "drop capability bound");
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return Error::from_errno(errno, "clear ambient capabilities");
    return {};
}

Result<void> clear_capability_sets(uint64_t keep) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    data[0].effective = data[0].permitted = uint32_t(keep);
    data[1].effective = data[1].permitted = uint32_t(keep >> 32);
    if (::syscall(SYS_capset, &header, data) < 0) return Error::from_errno(errno, "capset");
    return {};
}

}  // namespace

Result<std::pair<uid_t, gid_t>> parse_user(const std::string& text) {
    auto number = [&](const std::string& s) -> std::optional<uint32_t> {
        if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string::npos) return {};
        uint64_t v = std::stoull(s);
        if (v >= 0xffffffffull) return {};
        return uint32_t(v);
    };
    size_t colon = text.find(':');
    auto uid = number(text.substr(0, colon));
    auto gid = colon == std::string::npos ? uid : number(text.substr(colon + 1));
    if (!uid || !gid)
        return Error::from_string("jail user `" + text + "`: expected UID or UID:GID (numbers, as in /etc/passwd)");
    return std::pair{uid_t(*uid), gid_t(*gid)};
}

Result<void> enter(const Options& o) {
    if (!o.cgroup.empty()) TRY(join_cgroup(o.cgroup));
    // No PID namespace: a process that unshares one may start no more threads
    // in it, only children, and husk-vmm starts none (its seccomp lists forbid
    // fork and exec; the jail has no /proc).
    if (::unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
        return Error::from_errno(errno, "unshare the jail's namespaces (needs root, and one thread)");
    // Nothing done from here on reaches the host's mount table.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0)
        return Error::from_errno(errno, "make mounts private");

    // Detached copies of what the jail keeps, taken before the root changes.
    std::vector<std::pair<std::string, UniqueFd>> binds;
    for (const auto& dir : o.writable_dirs) {
        if (dir.empty() || dir[0] != '/' || dir == "/")
            return Error::from_string("jail: `" + dir + "` is no directory to keep");
        auto tree = TRY(check_fd(open_tree(AT_FDCWD, dir.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC),
                                 "jail: clone `" + dir + "`"));
        mount_attr attr{};
        attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        if (mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr) < 0)
            return Error::from_errno(errno, "jail: flags on `" + dir + "`");
        binds.emplace_back(dir, std::move(tree));
    }

    // A small tmpfs for the new root, on /tmp (only in this namespace; what
    // the jail keeps was cloned above); build the tree in it, then pivot into it.
    if (::mount("husk-jail", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,mode=0755") < 0)
        return Error::from_errno(errno, "jail: mount its tmpfs root");
    if (::chdir("/tmp") < 0) return Error::from_errno(errno, "jail: chdir to its root");
    for (auto& [dir, tree] : binds) {
        TRY(make_dirs(dir));
        std::string at = "." + dir;
        if (move_mount(tree.get(), "", AT_FDCWD, at.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0)
            return Error::from_errno(errno, "jail: bind `" + dir + "`");
    }
    if (::syscall(SYS_pivot_root, ".", ".") < 0) return Error::from_errno(errno, "jail: pivot_root");
    if (::umount2(".", MNT_DETACH) < 0) return Error::from_errno(errno, "jail: detach the old root");
    if (::chdir("/") < 0) return Error::from_errno(errno, "jail: chdir /");
    // Read-only from here: only the kept directories can be written.
    if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) <
        0)
        return Error::from_errno(errno, "jail: make its root read-only");
    (void)::sethostname("husk-vmm", 8);

    rlimit none{0, 0};
    ::setrlimit(RLIMIT_CORE, &none);
    if (o.max_files) {
        rlimit files{o.max_files, o.max_files};
        if (::setrlimit(RLIMIT_NOFILE, &files) < 0) return Error::from_errno(errno, "jail: RLIMIT_NOFILE");
    }

    TRY(drop_capabilities(o.keep_capabilities));
    // Kept capabilities survive the change of user (then set again below).
    if (o.keep_capabilities && ::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        return Error::from_errno(errno, "jail: keep capabilities");
    if (o.gid) {
        if (::setgroups(0, nullptr) < 0) return Error::from_errno(errno, "jail: setgroups");
        if (::setresgid(*o.gid, *o.gid, *o.gid) < 0) return Error::from_errno(errno, "jail: setresgid");
    }
    if (o.uid && ::setresuid(*o.uid, *o.uid, *o.uid) < 0) return Error::from_errno(errno, "jail: setresuid");
    TRY(clear_capability_sets(o.keep_capabilities));
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return Error::from_errno(errno, "jail: no_new_privs");
    log::debug("jail entered: {} directories kept, uid {}, gid {}", binds.size(), ::getuid(), ::getgid());
    return {};
}

}  // namespace husk::jail
