// Private to FuseServer's implementation (fuse_server.cpp, fuse_namespace.cpp, fuse_io.cpp): the helpers and
// request/reply types those files share. Not part of the server's interface: include fuse_server.h instead.
#pragma once

#include <fcntl.h>
#include <linux/fuse.h>
#include <linux/limits.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "vmm/devices/virtio/fs/fuse_server.h"

namespace husk::virtio::fs {
namespace detail {

inline constexpr uint64_t kRootNode = FUSE_ROOT_ID;
inline constexpr uint64_t kRootIno = 1;  // the synthetic root's attr.ino
// Open flags passed to the host. Dropped: O_DIRECT (the reply buffer has no alignment), O_NOATIME (EPERM for a
// server without CAP_FOWNER), and everything that changes what is opened (O_PATH, O_DIRECTORY, O_TMPFILE, ...).
inline constexpr int kOpenFlags = O_ACCMODE | O_APPEND | O_TRUNC | O_SYNC | O_DSYNC;
inline constexpr uint64_t kResolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS;

inline Error fail(int code, std::string_view what) {
    return Error::from_errno(code, what);
}
inline Error sys_fail(std::string_view what) {
    return Error::from_errno(errno, what);
}

// "N": fd N's name under /proc/self/fd.
struct FdName {
    char text[16];
};
inline FdName fd_name(int fd) {
    FdName name{};
    auto end = std::to_chars(name.text, name.text + sizeof name.text - 1, fd).ptr;
    *end = '\0';
    return name;
}

// Guest names are one path component (a FUSE name is what the kernel took from one dentry).
inline Result<void> check_name(std::string_view name) {
    if (name.empty() || name.size() > NAME_MAX || name == "." || name == ".." ||
        name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
        return fail(EINVAL, "invalid name");
    return {};
}

// Opens one name in a directory, never leaving it and never following a symlink: O_NOFOLLOW gives a final
// symlink as itself (with O_PATH) or ELOOP; RESOLVE_NO_SYMLINKS and RESOLVE_BENEATH hold even if a name were
// ever more than one component.
inline Result<UniqueFd> open_beneath(int dirfd, std::string_view name, uint64_t flags, mode_t mode = 0) {
    // The name is NUL-terminated in the request but string_view does not say so: copy it.
    char path[NAME_MAX + 1];
    if (name.size() > NAME_MAX) return fail(ENAMETOOLONG, "openat2");
    std::memcpy(path, name.data(), name.size());
    path[name.size()] = '\0';
    open_how how{};
    how.flags = flags | O_NOFOLLOW | O_CLOEXEC;
    how.mode = (flags & O_CREAT) ? mode : 0;
    how.resolve = kResolve;
    for (int attempt = 0;; ++attempt) {
        long fd = ::syscall(SYS_openat2, dirfd, path, &how, sizeof how);
        if (fd >= 0) return UniqueFd(int(fd));
        // EAGAIN: a rename raced the RESOLVE_BENEATH walk; it cannot for one component, but retry a little.
        if ((errno != EAGAIN && errno != EINTR) || attempt == 4) return sys_fail("openat2");
    }
}

inline Result<struct stat> stat_fd(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) < 0) return sys_fail("fstat");
    return st;
}

inline Result<int> open_flags(uint32_t guest_flags, bool read_only_share) {
    int flags = int(guest_flags) & kOpenFlags;
    int access = flags & O_ACCMODE;
    if (access != O_RDONLY && access != O_WRONLY && access != O_RDWR) return fail(EINVAL, "open access mode");
    if (read_only_share && (access != O_RDONLY || (flags & O_TRUNC))) return fail(EROFS, "read-only share");
    return flags;
}

inline bool writable(int flags) {
    return (flags & O_ACCMODE) != O_RDONLY;
}

}  // namespace detail

// A request's arguments after fuse_in_header, read front to back. Every read is bounds-checked and copies:
// the bytes are guest-controlled and unaligned.
struct FuseServer::Request {
    fuse_in_header header;
    std::span<const uint8_t> args;
    const DataBuffers* data = nullptr;  // a READ's or WRITE's data in guest buffers (handle()'s `data`), or none

    template <typename T>
    Result<T> take() {
        if (args.size() < sizeof(T)) return detail::fail(EINVAL, "arguments too short");
        T v{};
        std::memcpy(&v, args.data(), sizeof v);
        args = args.subspan(sizeof v);
        return v;
    }
    // The first `size` bytes of T (a struct whose later fields the negotiated protocol leaves out), rest zero.
    template <typename T>
    Result<T> take_prefix(size_t size) {
        if (args.size() < size || size > sizeof(T)) return detail::fail(EINVAL, "arguments too short");
        T v{};
        std::memcpy(&v, args.data(), size);
        args = args.subspan(size);
        return v;
    }
    // A NUL-terminated string; the NUL is consumed.
    Result<std::string_view> string() {
        if (args.empty()) return detail::fail(EINVAL, "missing string");
        const void* nul = std::memchr(args.data(), 0, args.size());
        if (!nul) return detail::fail(EINVAL, "unterminated string");
        size_t n = size_t(static_cast<const uint8_t*>(nul) - args.data());
        std::string_view s(reinterpret_cast<const char*>(args.data()), n);
        args = args.subspan(n + 1);
        return s;
    }
    // A name, validated; it must end the request (a NUL inside the name leaves bytes after it).
    Result<std::string_view> last_name() {
        auto name = TRY(string());
        TRY(end());
        TRY(detail::check_name(name));
        return name;
    }
    Result<void> end() const {
        if (!args.empty()) return detail::fail(EINVAL, "trailing bytes");
        return {};
    }
};

// The reply after fuse_out_header, written front to back into the device-writable space.
class FuseServer::Reply {
public:
    explicit Reply(std::span<uint8_t> out) : m_out(out) {}  // out holds a header at least
    size_t room() const { return m_out.size() - sizeof(fuse_out_header) - m_size; }
    // Checked before a request changes anything: a reply that cannot be delivered must not count a lookup.
    Result<void> need(size_t bytes) const {
        if (room() < bytes) return detail::fail(EINVAL, "reply buffer too small");
        return {};
    }
    template <typename T>
    void put(const T& v) {
        put_bytes(&v, sizeof v);
    }
    void put_bytes(const void* data, size_t size) {
        if (size == 0) return;  // data may be null (an empty vector's)
        if (size > room()) {
            m_overflow = true;
            return;
        }
        std::memcpy(tail(), data, size);
        m_size += size;
    }
    uint8_t* tail() { return m_out.data() + sizeof(fuse_out_header) + m_size; }
    void advance(size_t n) { m_size += std::min(n, room()); }
    // Bytes of the reply put straight into the request's DataBuffers, after what is in `out`.
    void add_outside(size_t n) { m_outside += n; }
    size_t outside() const { return m_outside; }
    size_t size() const { return m_size; }
    bool overflow() const { return m_overflow; }

private:
    std::span<uint8_t> m_out;
    size_t m_size = 0, m_outside = 0;
    bool m_overflow = false;
};

// A node as an entry reply says it: its id and what fstat saw.
struct FuseServer::Entry {
    uint64_t node = 0;
    uint32_t share = 0;
    struct stat st {};
};

}  // namespace husk::virtio::fs
