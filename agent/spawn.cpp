#include "agent/spawn.h"

#include <fcntl.h>
#include <grp.h>
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

#include <cerrno>
#include <cstring>
#include <map>

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

// mkdir -p, or an empty file when the mount source is a file.
Result<void> make_mount_point(const std::string& path, bool file) {
    std::string partial;
    size_t pos = 1;
    while (pos <= path.size()) {
        size_t next = path.find('/', pos);
        if (next == std::string::npos) next = path.size();
        partial = path.substr(0, next);
        bool last = next == path.size();
        if (last && file) {
            int fd = ::open(partial.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
            if (fd < 0 && errno != EISDIR) return Error::from_errno(errno, "create mount point `" + partial + "`");
            if (fd >= 0) ::close(fd);
        } else if (::mkdir(partial.c_str(), 0755) < 0 && errno != EEXIST) {
            return Error::from_errno(errno, "create mount point `" + partial + "`");
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

Result<void> do_mount(const std::string& rootfs, const Mount& m) {
    std::string target = rootfs + m.destination;
    MountOptions o = parse_mount_options(m.options);
    std::string type = m.type;
    std::string source = m.source;
    bool bind = (o.flags & MS_BIND) || type == "bind";
    struct stat st {};
    if (bind) {
        // Binds name paths inside the rootfs: the host copied the files in (agent/PROTOCOL.md).
        source = rootfs + (source.empty() || source[0] != '/' ? "/" : "") + source;
        if (::stat(source.c_str(), &st) < 0) return Error::from_errno(errno, "bind source `" + m.source + "`");
        o.flags |= MS_BIND;
    }
    TRY(make_mount_point(target, bind && !S_ISDIR(st.st_mode)));
    if (type == "cgroup") type = "cgroup2";  // the guest has one unified hierarchy
    if (source.empty()) source = type;
    unsigned long flags = o.flags & ~o.clear;
    int rc = ::mount(source.c_str(), target.c_str(), bind ? nullptr : type.c_str(), flags,
                     o.data.empty() ? nullptr : o.data.c_str());
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

Result<void> enter_root(const ProcessSpec&, const SpawnContext& context) {
    if (context.join > 0) {
        std::string ns = "/proc/" + std::to_string(context.join) + "/ns/mnt";
        int fd = ::open(ns.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return Error::from_errno(errno, "open the container's mount namespace");
        int rc = ::setns(fd, CLONE_NEWNS);
        ::close(fd);
        TRY(check(rc, "join the container's mount namespace"));
        return check(::chdir("/"), "chdir /");
    }
    const ContainerSpec& c = *context.container;
    TRY(check(::unshare(CLONE_NEWNS), "unshare the mount namespace"));
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
    for (const auto& path : c.masked_paths) {
        struct stat st {};
        if (::stat(path.c_str(), &st) < 0) continue;
        int rc = S_ISDIR(st.st_mode) ? ::mount("tmpfs", path.c_str(), "tmpfs", MS_RDONLY, nullptr)
                                     : ::mount("/dev/null", path.c_str(), nullptr, MS_BIND, nullptr);
        if (rc < 0 && errno != ENOENT) return Error::from_errno(errno, "mask `" + path + "`");
    }
    for (const auto& path : c.readonly_paths) {
        if (::mount(path.c_str(), path.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0) {
            if (errno == ENOENT) continue;
            return Error::from_errno(errno, "bind `" + path + "` read-only");
        }
        TRY(check(::mount(nullptr, path.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, nullptr),
                  "remount `" + path + "` read-only"));
    }
    return {};
}

Result<void> apply_limits_and_user(const ProcessSpec& spec) {
    for (const auto& l : spec.rlimits) {
        int resource = rlimit_resource(l.type);
        if (resource < 0) return Error::from_string("unknown rlimit `" + l.type + "`");
        rlimit r{l.soft, l.hard};
        TRY(check(::setrlimit(__rlimit_resource(resource), &r), "setrlimit " + l.type));
    }
    std::vector<gid_t> groups(spec.additional_gids.begin(), spec.additional_gids.end());
    TRY(check(::setgroups(groups.size(), groups.data()), "setgroups"));
    TRY(check(::setresgid(spec.gid, spec.gid, spec.gid), "setgid " + std::to_string(spec.gid)));
    TRY(check(::setresuid(spec.uid, spec.uid, spec.uid), "setuid " + std::to_string(spec.uid)));
    if (spec.umask) ::umask(mode_t(*spec.umask));
    if (::chdir(spec.cwd.c_str()) < 0) return Error::from_errno(errno, "chdir to cwd `" + spec.cwd + "`");
    if (spec.no_new_privileges) TRY(check(::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs"));
    return {};
}

std::string env_value(const std::vector<std::string>& env, std::string_view name) {
    for (const auto& e : env)
        if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=')
            return e.substr(name.size() + 1);
    return {};
}

// execvpe() searches the agent's PATH, not the container's: search by hand.
[[noreturn]] void exec_process(const ProcessSpec& spec) {
    std::vector<char*> argv, envp;
    for (const auto& a : spec.args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const std::string& file = spec.args[0];
    int error = ENOENT;
    if (file.find('/') != std::string::npos) {
        ::execve(file.c_str(), argv.data(), envp.data());
        error = errno;
    } else {
        std::string path = env_value(spec.env, "PATH");
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
    if (auto r = enter_root(spec, context); !r) fail(r.error());
    if (auto r = apply_limits_and_user(spec); !r) fail(r.error());
    [[maybe_unused]] ssize_t w = ::write(status_fd, "R", 1);
    char go = 0;
    while (::read(start_fd, &go, 1) < 0 && errno == EINTR) {
    }
    if (go != 'S') ::_exit(128 + SIGKILL);  // deleted before it was started
    exec_process(spec);
}

}  // namespace

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

    pid_t pid = ::fork();
    if (pid < 0) return Error::from_errno(errno, "fork");
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
