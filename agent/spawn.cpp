#include "agent/spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include "vmm/base/system.h"

namespace husk::agent {

namespace {

Result<void> check(int rc, std::string_view what) {
    if (rc < 0) return Error::from_errno(errno, what);
    return {};
}

Result<std::pair<UniqueFd, UniqueFd>> make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) < 0) return Error::from_errno(errno, "pipe2");
    return std::pair(UniqueFd(fds[0]), UniqueFd(fds[1]));
}

// mkdir -p; the last component an empty file when `file` (a mount point for a file).
Result<void> make_path(const std::string& path, bool file) {
    std::string partial;
    size_t pos = 1;
    while (pos <= path.size()) {
        size_t next = path.find('/', pos);
        if (next == std::string::npos) next = path.size();
        partial = path.substr(0, next);
        bool last = next == path.size();
        if (last && file) {
            int fd = ::open(partial.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
            if (fd < 0 && errno != EISDIR) return Error::from_errno(errno, "create `" + partial + "`");
            if (fd >= 0) ::close(fd);
        } else if (::mkdir(partial.c_str(), 0755) < 0 && errno != EEXIST) {
            return Error::from_errno(errno, "create `" + partial + "`");
        }
        pos = next + 1;
    }
    return {};
}

// The default devices of a container's /dev (OCI runtime-spec config-linux.md "Default Devices").
Result<void> populate_dev(const std::string& dev) {
    struct Node {
        const char* name;
        unsigned major, minor;
    };
    static constexpr Node kNodes[] = {{"null", 1, 3},   {"zero", 1, 5},    {"full", 1, 7},
                                      {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
    for (const auto& n : kNodes) {
        std::string path = dev + "/" + n.name;
        if (::mknod(path.c_str(), S_IFCHR | 0666, makedev(n.major, n.minor)) < 0 && errno != EEXIST)
            return Error::from_errno(errno, "mknod `" + path + "`");
        ::chmod(path.c_str(), 0666);  // mknod obeys the umask
    }
    static constexpr std::pair<const char*, const char*> kLinks[] = {{"/proc/self/fd", "fd"},
                                                                     {"/proc/self/fd/0", "stdin"},
                                                                     {"/proc/self/fd/1", "stdout"},
                                                                     {"/proc/self/fd/2", "stderr"},
                                                                     {"pts/ptmx", "ptmx"}};
    for (const auto& [target, name] : kLinks) {
        std::string path = dev + "/" + name;
        if (::symlink(target, path.c_str()) < 0 && errno != EEXIST)
            return Error::from_errno(errno, "symlink `" + path + "`");
    }
    return {};
}

// tmpcopyup (runc's extension, which Podman uses for --read-only's /run,
// /tmp and /var/tmp): the new tmpfs starts with what the directory it covers
// held, modes and owners kept.
Result<void> copy_up(const std::string& from, const std::string& to) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::copy_symlinks, ec);
    if (ec) return Error::from_errno(ec.value(), "copy `" + from + "` up into its tmpfs");
    for (auto it = fs::recursive_directory_iterator(from, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) == 0)
            (void)::lchown((to + "/" + fs::relative(it->path(), from).string()).c_str(), st.st_uid, st.st_gid);
    }
    return {};
}

// A bind source naming a directory (or file) the host shares: /.husk/fs/<name>.
constexpr std::string_view kSharePrefix = "/.husk/fs/";

Result<void> do_mount(const std::string& rootfs, const Mount& m) {
    std::string target = rootfs + m.destination;
    std::vector<std::string> options = m.options;
    bool tmpcopyup = std::erase(options, std::string("tmpcopyup")) > 0 && m.type == "tmpfs";
    std::erase(options, std::string("notmpcopyup"));
    MountOptions o = parse_mount_options(options);
    std::string type = m.type;
    std::string source = m.source;
    bool bind = (o.flags & MS_BIND) || type == "bind";
    struct stat st {};
    if (bind) {
        // Binds name paths inside the rootfs, where the host copied the files
        // in, or a directory it shares (agent/PROTOCOL.md).
        if (source.starts_with(kSharePrefix)) {
            TRY(mount_shares());
            source = kSharesMount + source.substr(kSharePrefix.size() - 1);
        } else {
            source = rootfs + (source.empty() || source[0] != '/' ? "/" : "") + source;
        }
        if (::stat(source.c_str(), &st) < 0) return Error::from_errno(errno, "bind source `" + m.source + "`");
        o.flags |= MS_BIND;
    }
    TRY(make_path(target, bind && !S_ISDIR(st.st_mode)));
    if (type == "cgroup") type = "cgroup2";  // the guest has one unified hierarchy
    if (source.empty()) source = type;
    unsigned long flags = o.flags & ~o.clear;
    // What the tmpfs covers stays in sight, through a bind, until it is copied up.
    std::string covered;
    if (tmpcopyup) {
        covered = "/run/husk/copyup-" + std::to_string(::getpid());
        TRY(make_path(covered, false));
        TRY(check(::mount(target.c_str(), covered.c_str(), nullptr, MS_BIND | MS_REC, nullptr),
                  "keep `" + m.destination + "` in sight for tmpcopyup"));
    }
    int rc = ::mount(source.c_str(), target.c_str(), bind ? nullptr : type.c_str(), flags,
                     o.data.empty() ? nullptr : o.data.c_str());
    if (tmpcopyup) {
        Result<void> copied = rc == 0 ? copy_up(covered, target) : Result<void>();
        ::umount2(covered.c_str(), MNT_DETACH);
        ::rmdir(covered.c_str());
        TRY(std::move(copied));
    }
    if (rc < 0 && type == "mqueue" && errno == EPERM) rc = 0;    // a container's own mqueue may already be there
    if (rc < 0 && m.destination == "/sys/fs/cgroup") return {};  // optional: containers run without it
    TRY(check(rc, "mount " + m.type + " on `" + m.destination + "`"));
    // A bind ignores every flag but MS_REC; read-only and friends need a remount.
    if (bind && (flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)))
        TRY(check(::mount(nullptr, target.c_str(), nullptr, flags | MS_REMOUNT, nullptr),
                  "remount `" + m.destination + "`"));
    if (o.propagation) TRY(check(::mount(nullptr, target.c_str(), nullptr, o.propagation, nullptr), "propagation"));
    if (m.destination == "/dev" && type == "tmpfs") TRY(populate_dev(target));
    return {};
}

struct NamespaceKind {
    uint32_t bit;  // kNamespace*, or 0 for the mount namespace every container has
    int clone_flag;
    const char* name;  // in /proc/PID/ns
};
// The mount namespace last: after it, the container's /proc is the one in sight.
constexpr NamespaceKind kNamespaceKinds[] = {{kNamespaceIpc, CLONE_NEWIPC, "ipc"},
                                             {kNamespaceUts, CLONE_NEWUTS, "uts"},
                                             {kNamespaceCgroup, CLONE_NEWCGROUP, "cgroup"},
                                             {0, CLONE_NEWNS, "mnt"}};

Result<UniqueFd> open_namespace(pid_t pid, const char* name) {
    std::string path = "/proc/" + std::to_string(pid) + "/ns/" + name;
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return Error::from_errno(errno, std::string("open the container's ") + name + " namespace");
    return fd;
}

// The container's first process makes its namespaces; a later one (exec) joins the first's.
Result<void> enter_namespaces(const SpawnContext& context) {
    const ContainerSpec& c = *context.container;
    if (context.join <= 0) {
        int flags = 0;
        for (const auto& kind : kNamespaceKinds)
            if (kind.bit == 0 || (c.namespaces & kind.bit)) flags |= kind.clone_flag;
        if (context.mounts >= 0) {
            // A copy of the held mount namespace: this init's own mounts do not reach it.
            TRY(check(::setns(context.mounts, CLONE_NEWNS), "join the container's first mount namespace"));
        }
        TRY(check(::unshare(flags), "unshare the container's namespaces"));
        if ((c.namespaces & kNamespaceUts) && !c.hostname.empty())
            TRY(check(::sethostname(c.hostname.data(), c.hostname.size()), "set the hostname"));
        return {};
    }
    // Opened first, then joined: after the mount namespace, /proc is the container's.
    std::vector<std::pair<UniqueFd, const NamespaceKind*>> joins;
    for (const auto& kind : kNamespaceKinds)
        if (kind.bit == 0 || (c.namespaces & kind.bit))
            joins.emplace_back(TRY(open_namespace(context.join, kind.name)), &kind);
    for (auto& [fd, kind] : joins)
        TRY(check(::setns(fd.get(), kind->clone_flag),
                  std::string("join the container's ") + kind->name + " namespace"));
    return {};
}

// linux.sysctl, written in the container's namespaces before its root is entered.
Result<void> write_sysctls(const ContainerSpec& c) {
    for (const auto& sysctl : c.sysctls) {
        std::string path = sysctl.name;
        // "net.ipv4.ip_forward" is net/ipv4/ip_forward; a name with slashes keeps its dots (an interface "eth0.100").
        if (path.find('/') == std::string::npos)
            for (char& ch : path)
                if (ch == '.') ch = '/';
        path = "/proc/sys/" + path;
        UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
        if (!fd && errno == ENOENT)
            return Error::from_string("sysctl `" + sysctl.name + "`: the guest kernel has no such setting", ENOENT);
        if (!fd || ::write(fd.get(), sysctl.value.data(), sysctl.value.size()) < 0)
            return Error::from_errno(errno, "sysctl `" + sysctl.name + "` = `" + sysctl.value + "`");
    }
    return {};
}

// The masked and read-only paths of the container, under `under` ("/" for all).
Result<void> protect_paths(const ContainerSpec& c, const std::string& under) {
    for (const auto& path : c.masked_paths) {
        if (under != "/" && path != under && !path.starts_with(under + "/")) continue;
        struct stat st {};
        if (::stat(path.c_str(), &st) < 0) continue;
        int rc = S_ISDIR(st.st_mode) ? ::mount("tmpfs", path.c_str(), "tmpfs", MS_RDONLY, nullptr)
                                     : ::mount("/dev/null", path.c_str(), nullptr, MS_BIND, nullptr);
        if (rc < 0 && errno != ENOENT) return Error::from_errno(errno, "mask `" + path + "`");
    }
    for (const auto& path : c.readonly_paths) {
        if (under != "/" && path != under && !path.starts_with(under + "/")) continue;
        if (::mount(path.c_str(), path.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0) {
            if (errno == ENOENT) continue;
            return Error::from_errno(errno, "bind `" + path + "` read-only");
        }
        TRY(check(::mount(nullptr, path.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, nullptr),
                  "remount `" + path + "` read-only"));
    }
    return {};
}

Result<void> enter_root(const ProcessSpec&, const SpawnContext& context) {
    if (context.join > 0) return check(::chdir("/"), "chdir /");  // enter_namespaces joined its mounts
    const ContainerSpec& c = *context.container;
    if (context.mounts >= 0) {
        // The first init's root, copied: only /proc belongs to that init's PID namespace, gone with it.
        TRY(check(::chdir("/"), "chdir /"));
        for (const auto& m : c.mounts) {
            if (m.type != "proc") continue;
            TRY(check(::umount2(m.destination.c_str(), MNT_DETACH), "unmount the first init's /proc"));
            TRY(do_mount("", m));
            TRY(protect_paths(c, m.destination));
        }
        return {};
    }
    TRY(check(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), "make / private"));
    // pivot_root wants a mount point; a bind of the rootfs onto itself is one whatever it was.
    TRY(check(::mount(context.rootfs.c_str(), context.rootfs.c_str(), nullptr, MS_BIND | MS_REC, nullptr),
              "bind the rootfs"));
    for (const auto& m : c.mounts) TRY(do_mount(context.rootfs, m));
    // root.readonly: the container's root mount, not the mounts on it, becomes read-only.
    if (c.readonly)
        TRY(check(::mount(nullptr, context.rootfs.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr),
                  "remount the rootfs read-only"));
    TRY(check(::chdir(context.rootfs.c_str()), "chdir into the rootfs"));
    // pivot_root(".", "."): the old root ends up stacked on the new one and is then detached.
    TRY(check(int(::syscall(SYS_pivot_root, ".", ".")), "pivot_root"));
    TRY(check(::umount2(".", MNT_DETACH), "detach the old root"));
    TRY(check(::chdir("/"), "chdir /"));
    return protect_paths(c, "/");
}

// The bounding set first (it needs CAP_SETPCAP, which root still has).
Result<void> drop_bounding_set(uint64_t keep) {
    for (int cap = 0; cap < 64; ++cap) {
        if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0) break;  // past this kernel's last capability
        if (!(keep & (uint64_t(1) << cap)))
            TRY(check(::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop capability " + std::to_string(cap)));
    }
    return {};
}

// Effective, permitted and inheritable, then the ambient set (which needs each
// capability permitted and inheritable).
Result<void> set_capabilities(const Capabilities& caps) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    for (int i = 0; i < 2; ++i) {
        data[i].effective = uint32_t(caps.effective >> (32 * i));
        data[i].permitted = uint32_t(caps.permitted >> (32 * i));
        data[i].inheritable = uint32_t(caps.inheritable >> (32 * i));
    }
    TRY(check(int(::syscall(SYS_capset, &header, data)), "set the capabilities"));
    for (int cap = 0; cap < 64; ++cap)
        if (caps.ambient & (uint64_t(1) << cap))
            TRY(check(::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0),
                      "raise ambient capability " + std::to_string(cap)));
    return {};
}

Result<void> apply_limits_and_user(const ProcessSpec& spec) {
    for (const auto& l : spec.rlimits) {
        int resource = rlimit_resource(l.type);
        if (resource < 0) return Error::from_string("unknown rlimit `" + l.type + "`");
        rlimit r{l.soft, l.hard};
        TRY(check(::setrlimit(__rlimit_resource(resource), &r), "setrlimit " + l.type));
    }
    if (spec.capabilities) {
        TRY(drop_bounding_set(spec.capabilities->bounding));
        // Permitted capabilities survive the change of uid; capset then says which stay.
        TRY(check(::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keep capabilities across setuid"));
    }
    std::vector<gid_t> groups(spec.additional_gids.begin(), spec.additional_gids.end());
    TRY(check(::setgroups(groups.size(), groups.data()), "setgroups"));
    TRY(check(::setresgid(spec.gid, spec.gid, spec.gid), "setgid " + std::to_string(spec.gid)));
    TRY(check(::setresuid(spec.uid, spec.uid, spec.uid), "setuid " + std::to_string(spec.uid)));
    if (::chdir(spec.cwd.c_str()) < 0) return Error::from_errno(errno, "chdir to cwd `" + spec.cwd + "`");
    if (spec.capabilities) {
        TRY(check(::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "stop keeping capabilities"));
        TRY(set_capabilities(*spec.capabilities));
    }
    if (spec.umask) ::umask(mode_t(*spec.umask));
    if (spec.no_new_privileges) TRY(check(::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs"));
    return {};
}

std::string env_value(const std::vector<std::string>& env, std::string_view name) {
    for (const auto& e : env)
        if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=')
            return e.substr(name.size() + 1);
    return {};
}

// HOME, when the process's environment has none, as runc sets it: the user's
// home in the container's /etc/passwd, else "/". Read after the root changed.
std::vector<std::string> environment_of(const ProcessSpec& spec) {
    std::vector<std::string> env = spec.env;
    if (!env_value(env, "HOME").empty()) return env;
    std::erase_if(env, [](const std::string& e) { return e.rfind("HOME=", 0) == 0; });
    std::string home = "/";
    if (auto passwd = sys::read_file("/etc/passwd", 4 << 20)) {
        std::string_view rest = passwd.value();
        while (!rest.empty()) {
            std::string_view line = rest.substr(0, rest.find('\n'));
            rest.remove_prefix(std::min(rest.size(), line.size() + 1));
            // name:password:uid:gid:gecos:home:shell
            std::vector<std::string_view> fields;
            for (size_t at = 0; fields.size() < 7;) {
                size_t colon = line.find(':', at);
                fields.push_back(
                    line.substr(at, colon == std::string_view::npos ? std::string_view::npos : colon - at));
                if (colon == std::string_view::npos) break;
                at = colon + 1;
            }
            if (fields.size() >= 6 && fields[2] == std::to_string(spec.uid) && !fields[5].empty()) {
                home = std::string(fields[5]);
                break;
            }
        }
    }
    env.push_back("HOME=" + home);
    return env;
}

// execvpe() searches the agent's PATH, not the container's: search by hand.
[[noreturn]] void exec_process(const ProcessSpec& spec, const std::vector<std::string>& env) {
    std::vector<char*> argv, envp;
    for (const auto& a : spec.args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const std::string& file = spec.args[0];
    int error = ENOENT;
    if (file.find('/') != std::string::npos) {
        ::execve(file.c_str(), argv.data(), envp.data());
        error = errno;
    } else {
        std::string path = env_value(env, "PATH");
        if (path.empty()) path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        bool denied = false;
        size_t pos = 0;
        while (pos <= path.size()) {
            size_t end = path.find(':', pos);
            if (end == std::string::npos) end = path.size();
            std::string dir = path.substr(pos, end - pos);
            std::string candidate = (dir.empty() ? "." : dir) + "/" + file;
            ::execve(candidate.c_str(), argv.data(), envp.data());
            if (errno == EACCES)
                denied = true;
            else if (errno != ENOENT && errno != ENOTDIR) {
                error = errno;
                break;
            }
            pos = end + 1;
        }
        if (error == ENOENT && denied) error = EACCES;
    }
    // What a shell says, and the status it exits with (POSIX XCU 2.8.2).
    std::string message =
        file + (error == ENOENT ? ": command not found\n" : std::string(": ") + std::strerror(error) + "\n");
    [[maybe_unused]] ssize_t w = ::write(2, message.data(), message.size());
    ::_exit(error == ENOENT ? 127 : 126);
}

[[noreturn]] void child(const ProcessSpec& spec, const SpawnContext& context, int status_fd, int start_fd, int stdio[3],
                        const std::string& pty_slave) {
    auto fail = [&](const Error& e) {
        std::string m = "E" + e.message();
        [[maybe_unused]] ssize_t w = ::write(status_fd, m.data(), m.size());
        ::_exit(1);
    };
    // The agent's I/O-port permission (husk-vmm's debug port) is not the
    // container's: fork and exec would pass it on.
    (void)::ioperm(0, 0x10000, 0);
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    if (::setsid() < 0) fail(Error::from_errno(errno, "setsid"));
    if (!pty_slave.empty()) {
        int fd = ::open(pty_slave.c_str(), O_RDWR);
        if (fd < 0) fail(Error::from_errno(errno, "open the terminal"));
        if (::ioctl(fd, TIOCSCTTY, 0) < 0) fail(Error::from_errno(errno, "make the terminal the controlling one"));
        for (int i = 0; i < 3; ++i) ::dup2(fd, i);
        if (fd > 2) ::close(fd);
    } else {
        for (int i = 0; i < 3; ++i)
            if (::dup2(stdio[i], i) < 0) fail(Error::from_errno(errno, "dup2 stdio"));
    }
    if (spec.oom_score_adj) {
        std::string v = std::to_string(*spec.oom_score_adj);
        int fd = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ::write(fd, v.data(), v.size()) < 0) fail(Error::from_errno(errno, "set oom_score_adj"));
        ::close(fd);
    }
    // Into the container's cgroup before its cgroup namespace: there, the cgroup is the root.
    if (!context.cgroup.empty()) {
        int fd = ::open((context.cgroup + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ::write(fd, "0", 1) < 0) fail(Error::from_errno(errno, "join the container's cgroup"));
        ::close(fd);
    }
    if (auto r = enter_namespaces(context); !r) fail(r.error());
    if (context.join <= 0)
        if (auto r = write_sysctls(*context.container); !r) fail(r.error());
    if (auto r = enter_root(spec, context); !r) fail(r.error());
    const std::vector<std::string> env = environment_of(spec);
    // As runc does: without no_new_privs the filter needs CAP_SYS_ADMIN, so it
    // goes in before the user and capabilities change; with it, as close to
    // execve as can be, so a profile need allow the fewest syscalls of ours.
    // The container's cwd is made if missing, as runc does (an exec's must exist).
    if (context.join <= 0 && spec.cwd != "/")
        if (auto r = make_path(spec.cwd, false); !r) fail(r.error());
    if (context.seccomp && !spec.no_new_privileges)
        if (auto r = load_seccomp(*context.seccomp); !r) fail(r.error());
    if (auto r = apply_limits_and_user(spec); !r) fail(r.error());
    [[maybe_unused]] ssize_t w = ::write(status_fd, "R", 1);
    char go = 0;
    while (::read(start_fd, &go, 1) < 0 && errno == EINTR) {
    }
    if (go != 'S') ::_exit(128 + SIGKILL);  // deleted before it was started
    if (context.seccomp && spec.no_new_privileges) {
        if (auto r = load_seccomp(*context.seccomp); !r) {
            std::string message = "husk: " + r.error().message() + "\n";
            [[maybe_unused]] ssize_t n = ::write(2, message.data(), message.size());
            ::_exit(127);
        }
    }
    exec_process(spec, env);
}

// A PID namespace is entered only by a new child: the agent points its next
// child at the container's (a new one for the first process, which becomes
// its PID 1), forks, and points its children back at its own.
Result<pid_t> fork_in_pid_namespace(const SpawnContext& context) {
    if (!(context.container->namespaces & kNamespacePid)) {
        pid_t pid = ::fork();
        if (pid < 0) return Error::from_errno(errno, "fork");
        return pid;
    }
    UniqueFd own(::open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC));
    if (!own) return Error::from_errno(errno, "open the agent's pid namespace");
    if (context.join > 0) {
        UniqueFd target = TRY(open_namespace(context.join, "pid"));
        TRY(check(::setns(target.get(), CLONE_NEWPID), "join the container's pid namespace"));
    } else {
        TRY(check(::unshare(CLONE_NEWPID), "unshare the pid namespace"));
    }
    pid_t pid = ::fork();
    if (pid == 0) return pid;
    int fork_errno = errno;
    if (::setns(own.get(), CLONE_NEWPID) < 0) {
        // Left pointing at the container's, every later child of the agent would start there.
        std::string message =
            "husk-agent: cannot return to its own pid namespace: " + std::string(std::strerror(errno)) + "\n";
        [[maybe_unused]] ssize_t n = ::write(2, message.data(), message.size());
        ::abort();
    }
    if (pid < 0) return Error::from_errno(fork_errno, "fork into the container's pid namespace");
    return pid;
}

}  // namespace

Result<void> mount_shares() {
    TRY(make_path(kSharesMount, false));
    struct stat at {
    }, parent{};
    if (::stat(kSharesMount, &at) == 0 && ::stat("/run/husk", &parent) == 0 && at.st_dev != parent.st_dev) return {};
    TRY(check(::mount("husk", kSharesMount, "virtiofs", MS_NODEV, nullptr),
              "mount the host's shared directories (virtio-fs)"));
    // Sequential reads: Linux reads ahead 128 KiB on a FUSE mount, so a large file costs a READ (a round trip
    // through the virtqueue: a VM exit and an interrupt) per 128 KiB, where the device takes 1 MiB (max_pages).
    // The mount's backing device is named by its device number.
    if (::stat(kSharesMount, &at) == 0)
        (void)sys::write_text("/sys/class/bdi/" + std::to_string(major(at.st_dev)) + ":" +
                                  std::to_string(minor(at.st_dev)) + "/read_ahead_kb",
                              std::to_string(kSharesReadAheadKib));
    return {};
}

Result<SpawnedProcess> spawn(const ProcessSpec& spec, const SpawnContext& context) {
    SpawnedProcess p;
    auto [status_r, status_w] = TRY(make_pipe());
    auto [start_r, start_w] = TRY(make_pipe());
    UniqueFd null_fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!null_fd) return Error::from_errno(errno, "open /dev/null");
    UniqueFd child_ends[3];
    std::string pty_slave;
    if (spec.terminal) {
        int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0) return Error::from_errno(errno, "open a pty");
        p.terminal = UniqueFd(master);
        if (::grantpt(master) < 0 || ::unlockpt(master) < 0) return Error::from_errno(errno, "unlock the pty");
        char name[64];
        if (::ptsname_r(master, name, sizeof name) != 0) return Error::from_errno(errno, "ptsname");
        pty_slave = name;
        if (spec.rows && spec.cols) {
            winsize ws{spec.rows, spec.cols, 0, 0};
            ::ioctl(master, TIOCSWINSZ, &ws);
        }
    } else {
        UniqueFd* agent_end[3] = {&p.stdin_pipe, &p.stdout_pipe, &p.stderr_pipe};
        for (int i = 0; i < 3; ++i) {
            if (!(spec.attach & (1 << i))) continue;
            auto [r, w] = TRY(make_pipe());
            if (i == 0) {
                child_ends[i] = std::move(r);
                *agent_end[i] = std::move(w);
            } else {
                child_ends[i] = std::move(w);
                *agent_end[i] = std::move(r);
            }
        }
    }
    int stdio[3];
    for (int i = 0; i < 3; ++i) stdio[i] = child_ends[i] ? child_ends[i].get() : null_fd.get();

    pid_t pid = TRY(fork_in_pid_namespace(context));
    if (pid == 0) child(spec, context, status_w.get(), start_r.get(), stdio, pty_slave);

    p.pid = pid;
    status_w.reset();
    start_r.reset();
    std::string status;
    char buf[512];
    for (;;) {
        ssize_t n = ::read(status_r.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        status.append(buf, size_t(n));
        if (status == "R") break;
    }
    if (status != "R") {
        ::kill(pid, SIGKILL);  // reaped by the agent's SIGCHLD handling like any other child
        if (status.size() > 1 && status[0] == 'E') return Error::from_string(status.substr(1));
        return Error::from_string("the process died while it was being set up");
    }
    for (UniqueFd* fd : {&p.stdin_pipe, &p.stdout_pipe, &p.stderr_pipe, &p.terminal})
        if (*fd) ::fcntl(fd->get(), F_SETFL, ::fcntl(fd->get(), F_GETFL) | O_NONBLOCK);
    p.start = std::move(start_w);
    return p;
}

Result<void> start(SpawnedProcess& process) {
    if (!process.start) return Error::from_string("the process was already started");
    if (::write(process.start.get(), "S", 1) != 1) return Error::from_errno(errno, "start the process");
    process.start.reset();
    return {};
}

MountOptions parse_mount_options(const std::vector<std::string>& options) {
    struct Flag {
        unsigned long set, clear, propagation;
    };
    static const std::map<std::string, Flag, std::less<>> kFlags = {
        {"ro", {MS_RDONLY, 0, 0}},
        {"rw", {0, MS_RDONLY, 0}},
        {"nosuid", {MS_NOSUID, 0, 0}},
        {"suid", {0, MS_NOSUID, 0}},
        {"nodev", {MS_NODEV, 0, 0}},
        {"dev", {0, MS_NODEV, 0}},
        {"noexec", {MS_NOEXEC, 0, 0}},
        {"exec", {0, MS_NOEXEC, 0}},
        {"sync", {MS_SYNCHRONOUS, 0, 0}},
        {"async", {0, MS_SYNCHRONOUS, 0}},
        {"dirsync", {MS_DIRSYNC, 0, 0}},
        {"noatime", {MS_NOATIME, 0, 0}},
        {"atime", {0, MS_NOATIME, 0}},
        {"nodiratime", {MS_NODIRATIME, 0, 0}},
        {"diratime", {0, MS_NODIRATIME, 0}},
        {"relatime", {MS_RELATIME, 0, 0}},
        {"norelatime", {0, MS_RELATIME, 0}},
        {"strictatime", {MS_STRICTATIME, 0, 0}},
        {"bind", {MS_BIND, 0, 0}},
        {"rbind", {MS_BIND | MS_REC, 0, 0}},
        {"private", {0, 0, MS_PRIVATE}},
        {"rprivate", {0, 0, MS_PRIVATE | MS_REC}},
        {"shared", {0, 0, MS_SHARED}},
        {"rshared", {0, 0, MS_SHARED | MS_REC}},
        {"slave", {0, 0, MS_SLAVE}},
        {"rslave", {0, 0, MS_SLAVE | MS_REC}},
        {"unbindable", {0, 0, MS_UNBINDABLE}},
        {"runbindable", {0, 0, MS_UNBINDABLE | MS_REC}},
    };
    MountOptions o;
    for (const auto& opt : options) {
        auto it = kFlags.find(opt);
        if (it == kFlags.end()) {
            if (!o.data.empty()) o.data += ",";
            o.data += opt;
            continue;
        }
        o.flags = (o.flags | it->second.set) & ~it->second.clear;
        o.clear = (o.clear | it->second.clear) & ~it->second.set;
        o.propagation |= it->second.propagation;
    }
    return o;
}

int rlimit_resource(std::string_view name) {
    static const std::map<std::string, int, std::less<>> kLimits = {
        {"RLIMIT_AS", RLIMIT_AS},
        {"RLIMIT_CORE", RLIMIT_CORE},
        {"RLIMIT_CPU", RLIMIT_CPU},
        {"RLIMIT_DATA", RLIMIT_DATA},
        {"RLIMIT_FSIZE", RLIMIT_FSIZE},
        {"RLIMIT_LOCKS", RLIMIT_LOCKS},
        {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
        {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
        {"RLIMIT_NICE", RLIMIT_NICE},
        {"RLIMIT_NOFILE", RLIMIT_NOFILE},
        {"RLIMIT_NPROC", RLIMIT_NPROC},
        {"RLIMIT_RSS", RLIMIT_RSS},
        {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
        {"RLIMIT_RTTIME", RLIMIT_RTTIME},
        {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
        {"RLIMIT_STACK", RLIMIT_STACK},
    };
    auto it = kLimits.find(name);
    return it == kLimits.end() ? -1 : it->second;
}

}  // namespace husk::agent
