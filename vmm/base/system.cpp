#include "vmm/base/system.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>

namespace husk::sys {

Result<UniqueFd> open(const std::string& path, int flags, mode_t mode) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    if (fd < 0) return Error::from_errno(errno, "open `" + path + "`");
    return UniqueFd(fd);
}

Result<UniqueFd> memfd_create(const std::string& name, unsigned flags) {
    int fd = ::memfd_create(name.c_str(), flags | MFD_CLOEXEC);
    if (fd < 0) return Error::from_errno(errno, "memfd_create");
    return UniqueFd(fd);
}

Result<void> ftruncate(int fd, off_t size) {
    if (::ftruncate(fd, size) < 0) return Error::from_errno(errno, "ftruncate");
    return {};
}

Result<int> ioctl(int fd, unsigned long request, unsigned long arg, std::string_view what) {
    int ret;
    do {
        ret = ::ioctl(fd, request, arg);
    } while (ret < 0 && errno == EINTR);
    if (ret < 0) return Error::from_errno(errno, what);
    return ret;
}

Result<int> ioctl(int fd, unsigned long request, const void* arg, std::string_view what) {
    return ioctl(fd, request, reinterpret_cast<unsigned long>(arg), what);
}

Result<UniqueFd> eventfd(unsigned initval, int flags) {
    int fd = ::eventfd(initval, flags | EFD_CLOEXEC);
    if (fd < 0) return Error::from_errno(errno, "eventfd");
    return UniqueFd(fd);
}

Result<sockaddr_un> unix_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return Error::from_errno(ENAMETOOLONG, "socket path `" + path + "`");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    return addr;
}

Result<UniqueFd> connect_unix(const std::string& path) {
    auto addr = TRY(unix_address(path));
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Error::from_errno(errno, "socket");
    UniqueFd owned(fd);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        return Error::from_errno(errno, "connect `" + path + "`");
    return owned;
}

Result<UniqueFd> listen_unix(const std::string& path, int backlog, mode_t mode) {
    auto addr = TRY(unix_address(path));
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Error::from_errno(errno, "socket");
    UniqueFd owned(fd);
    // Bound under a name of its own and renamed to `path` once listening: bind() makes the file, and a client
    // that saw it appear and connected before listen() would be refused. The rename also replaces a stale socket.
    static std::atomic<unsigned> made{0};
    std::string temp = path.substr(0, path.rfind('/') + 1) + ".husk-" + std::to_string(::getpid()) + "-" +
                       std::to_string(made++) + ".sock";
    sockaddr_un bound = addr;
    if (auto fits = unix_address(temp))
        bound = fits.value();
    else  // no room in sun_path for the temporary name: bound in place
        temp = path;
    ::unlink(temp.c_str());
    if (::bind(fd, reinterpret_cast<sockaddr*>(&bound), sizeof bound) < 0)
        return Error::from_errno(errno, "bind `" + path + "`");
    // Past bind, a failure also takes the file it made away.
    auto failed = [&](const std::string& what) {
        int error = errno;
        ::unlink(temp.c_str());
        return Error::from_errno(error, what + " `" + path + "`");
    };
    if (mode != 0 && ::chmod(temp.c_str(), mode) < 0) return failed("chmod");
    if (::listen(fd, backlog) < 0) return failed("listen on");
    if (temp != path && ::rename(temp.c_str(), path.c_str()) < 0) return failed("rename the listening socket to");
    return owned;
}

std::string executable_dir() {
    char exe[4096];
    ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return ".";
    std::string path(exe, size_t(n));
    return path.substr(0, path.rfind('/'));
}

Result<void> write_file(const std::string& path, std::string_view data, mode_t mode) {
    auto fd = TRY(open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    return write_all(fd.get(), data).context("write `" + path + "`");
}

Result<void> write_text(const std::string& path, std::string_view text) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd || ::write(fd.get(), text.data(), text.size()) < 0)
        return Error::from_errno(errno, "write `" + std::string(text) + "` to " + path);
    return {};
}

Result<std::string> read_file(const std::string& path, size_t max_size) {
    auto fd = TRY(open(path, O_RDONLY));
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) return Error::from_errno(errno, "stat `" + path + "`");
    if (S_ISDIR(st.st_mode)) return Error::from_errno(EISDIR, "read `" + path + "`");
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return Error::from_errno(errno, "read `" + path + "`");
        }
        if (n == 0) break;
        if (out.size() + size_t(n) > max_size) return Error::from_errno(EFBIG, "read `" + path + "`");
        out.append(buf, size_t(n));
    }
    return out;
}

std::string read_tail(const std::string& path, size_t max_size) {
    auto fd = open(path, O_RDONLY);
    if (!fd) return {};
    off_t end = ::lseek(fd.value().get(), 0, SEEK_END);
    if (end < 0) return {};
    off_t from = end > off_t(max_size) ? end - off_t(max_size) : 0;
    std::string out(size_t(end - from), '\0');
    ssize_t n = ::pread(fd.value().get(), out.data(), out.size(), from);
    out.resize(n > 0 ? size_t(n) : 0);
    return out;
}

Result<void> write_all(int fd, std::span<const uint8_t> data) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return Error::from_errno(errno, "write");
        }
        data = data.subspan(size_t(n));
    }
    return {};
}

Result<void> write_all(int fd, std::string_view data) {
    return write_all(fd, std::span(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
}

Result<void> send_all(int sock, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::send(sock, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return Error::from_errno(errno, "send");
        }
        data.remove_prefix(size_t(n));
    }
    return {};
}

namespace {

// /proc/self files opened once and read with pread: they stay readable from
// inside the jail, which has no /proc (open_proc_self runs before it).
std::optional<std::string> read_proc_self(const char* name) {
    static std::mutex lock;
    static std::map<std::string, int> fds;
    std::lock_guard guard(lock);
    auto [it, inserted] = fds.try_emplace(name, -1);
    if (inserted) it->second = ::open((std::string("/proc/self/") + name).c_str(), O_RDONLY | O_CLOEXEC);
    if (it->second < 0) return std::nullopt;
    std::string text(1 << 16, '\0');
    ssize_t n = ::pread(it->second, text.data(), text.size(), 0);
    if (n <= 0) return std::nullopt;
    text.resize(size_t(n));
    return text;
}

}  // namespace

void open_proc_self() {
    (void)read_proc_self("statm");
    (void)read_proc_self("status");
}

uint64_t resident_kib() {
    auto text = read_proc_self("statm");
    if (!text) return 0;
    unsigned long long size = 0, resident = 0;
    if (std::sscanf(text.value().c_str(), "%llu %llu", &size, &resident) != 2) return 0;
    return resident * uint64_t(::sysconf(_SC_PAGESIZE)) / 1024;
}

std::optional<ResidentBreakdown> resident_breakdown_kib() {
    auto text = read_proc_self("status");
    if (!text) return std::nullopt;
    ResidentBreakdown r;
    int found = 0;
    for (auto [name, field] : {std::pair{"RssAnon:", &r.anon}, {"RssFile:", &r.file}, {"RssShmem:", &r.shmem}}) {
        size_t at = text.value().find(name);
        if (at == std::string::npos) continue;
        unsigned long long kib = 0;
        if (std::sscanf(text.value().c_str() + at + std::strlen(name), "%llu", &kib) == 1) *field = kib, ++found;
    }
    if (found != 3) return std::nullopt;
    return r;
}

}  // namespace husk::sys
