#include "vmm/devices/virtio/fs/fuse_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <linux/limits.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "vmm/base/system.h"

namespace husk::virtio::fs {
namespace {

constexpr uint64_t kRootNode = FUSE_ROOT_ID;
constexpr uint64_t kRootIno = 1;  // the synthetic root's attr.ino
// virtio-fs arrived with FUSE 7.31 (Linux 5.4): no driver of this device speaks an older minor, so none of the
// older, shorter argument layouts (FUSE_COMPAT_*) is accepted.
constexpr uint32_t kMinMinor = 31;
constexpr uint64_t kTimeoutSeconds = 1;  // entry and attribute validity
// INIT flags the server implements; the reply carries those the driver offered.
constexpr uint32_t kInitFlags = FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO;
// Open flags passed to the host. Dropped: O_DIRECT (the reply buffer has no alignment), O_NOATIME (EPERM for a
// server without CAP_FOWNER), and everything that changes what is opened (O_PATH, O_DIRECTORY, O_TMPFILE, ...).
constexpr int kOpenFlags = O_ACCMODE | O_APPEND | O_TRUNC | O_SYNC | O_DSYNC;
constexpr uint64_t kResolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS;
constexpr size_t kXattrSizeMax = XATTR_SIZE_MAX;
constexpr std::string_view kTrustedPrefix = "trusted.";

Error fail(int code, std::string_view what) {
    return Error::from_errno(code, what);
}
Error sys_fail(std::string_view what) {
    return Error::from_errno(errno, what);
}

// "N": fd N's name under /proc/self/fd.
struct FdName {
    char text[16];
};
FdName fd_name(int fd) {
    FdName name{};
    auto end = std::to_chars(name.text, name.text + sizeof name.text - 1, fd).ptr;
    *end = '\0';
    return name;
}

// Guest names are one path component (a FUSE name is what the kernel took from one dentry).
Result<void> check_name(std::string_view name) {
    if (name.empty() || name.size() > NAME_MAX || name == "." || name == ".." ||
        name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
        return fail(EINVAL, "invalid name");
    return {};
}

// Opens one name in a directory, never leaving it and never following a symlink: O_NOFOLLOW gives a final
// symlink as itself (with O_PATH) or ELOOP; RESOLVE_NO_SYMLINKS and RESOLVE_BENEATH hold even if a name were
// ever more than one component.
Result<UniqueFd> open_beneath(int dirfd, std::string_view name, uint64_t flags, mode_t mode = 0) {
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

Result<struct stat> stat_fd(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) < 0) return sys_fail("fstat");
    return st;
}

// Linux's new_encode_dev(): fuse_attr.rdev is 32 bits, decoded by the guest with new_decode_dev().
uint32_t encode_dev(dev_t dev) {
    uint32_t ma = major(dev), mi = minor(dev);
    return (mi & 0xff) | (ma << 8) | ((mi & ~0xffu) << 12);
}

fuse_attr to_attr(const struct stat& st) {
    fuse_attr a{};
    a.ino = st.st_ino;
    a.size = uint64_t(st.st_size);
    a.blocks = uint64_t(st.st_blocks);
    a.atime = uint64_t(st.st_atim.tv_sec);
    a.mtime = uint64_t(st.st_mtim.tv_sec);
    a.ctime = uint64_t(st.st_ctim.tv_sec);
    a.atimensec = uint32_t(st.st_atim.tv_nsec);
    a.mtimensec = uint32_t(st.st_mtim.tv_nsec);
    a.ctimensec = uint32_t(st.st_ctim.tv_nsec);
    a.mode = st.st_mode;
    a.nlink = uint32_t(std::min<nlink_t>(st.st_nlink, UINT32_MAX));
    a.uid = st.st_uid;
    a.gid = st.st_gid;
    a.rdev = encode_dev(st.st_rdev);
    a.blksize = uint32_t(st.st_blksize);
    return a;
}

bool is_trusted(std::string_view name) {
    return name.substr(0, kTrustedPrefix.size()) == kTrustedPrefix;
}

// An xattr name from the guest: the kernel's limits (XATTR_NAME_MAX: ERANGE), and no trusted.* (those are the
// host administrator's, CAP_SYS_ADMIN-only).
Result<void> check_xattr_name(std::string_view name) {
    if (name.empty() || name.size() > XATTR_NAME_MAX) return fail(ERANGE, "xattr name");
    if (is_trusted(name)) return fail(EPERM, "trusted.* xattr");
    return {};
}

}  // namespace

// A request's arguments after fuse_in_header, read front to back. Every read is bounds-checked and copies:
// the bytes are guest-controlled and unaligned.
struct FuseServer::Request {
    fuse_in_header header;
    std::span<const uint8_t> args;

    template <typename T>
    Result<T> take() {
        if (args.size() < sizeof(T)) return fail(EINVAL, "arguments too short");
        T v{};
        std::memcpy(&v, args.data(), sizeof v);
        args = args.subspan(sizeof v);
        return v;
    }
    // The first `size` bytes of T (a struct whose later fields the negotiated protocol leaves out), rest zero.
    template <typename T>
    Result<T> take_prefix(size_t size) {
        if (args.size() < size || size > sizeof(T)) return fail(EINVAL, "arguments too short");
        T v{};
        std::memcpy(&v, args.data(), size);
        args = args.subspan(size);
        return v;
    }
    // A NUL-terminated string; the NUL is consumed.
    Result<std::string_view> string() {
        if (args.empty()) return fail(EINVAL, "missing string");
        const void* nul = std::memchr(args.data(), 0, args.size());
        if (!nul) return fail(EINVAL, "unterminated string");
        size_t n = size_t(static_cast<const uint8_t*>(nul) - args.data());
        std::string_view s(reinterpret_cast<const char*>(args.data()), n);
        args = args.subspan(n + 1);
        return s;
    }
    // A name, validated; it must end the request (a NUL inside the name leaves bytes after it).
    Result<std::string_view> last_name() {
        auto name = TRY(string());
        TRY(end());
        TRY(check_name(name));
        return name;
    }
    Result<void> end() const {
        if (!args.empty()) return fail(EINVAL, "trailing bytes");
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
        if (room() < bytes) return fail(EINVAL, "reply buffer too small");
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
    size_t size() const { return m_size; }
    bool overflow() const { return m_overflow; }

private:
    std::span<uint8_t> m_out;
    size_t m_size = 0;
    bool m_overflow = false;
};

// A node as an entry reply says it: its id and what fstat saw.
struct FuseServer::Entry {
    uint64_t node = 0;
    struct stat st {};
};

FuseServer::FuseServer(std::vector<Share> shares, ServerLimits limits, UniqueFd proc_self_fd, timespec created)
    : m_shares(std::move(shares)),
      m_limits(limits),
      m_proc_self_fd(std::move(proc_self_fd)),
      m_created(created),
      m_dirents(16 << 10) {}

FuseServer::~FuseServer() = default;

Result<std::unique_ptr<FuseServer>> FuseServer::create(std::vector<ShareOptions> options, ServerLimits limits) {
    if (limits.max_write < 4096 || limits.max_write > (16u << 20))
        return Error::from_string("virtio-fs: max_write must be between 4 KiB and 16 MiB");
    if (limits.max_fds_per_share < 2)
        return Error::from_string("virtio-fs: max_fds_per_share must be at least 2 (a CREATE holds two)");
    std::vector<Share> shares;
    for (auto& o : options) {
        if (check_name(o.name).is_error())
            return Error::from_string("virtio-fs: share name `" + o.name +
                                      "` is not one path component (non-empty, no '/', not . or .., <= 255 bytes)");
        for (const auto& s : shares)
            if (s.name == o.name) return Error::from_string("virtio-fs: two shares are named `" + o.name + "`");
        Share share;
        // The host's path is trusted (the runtime's): a symlink to the shared tree or file is followed here.
        share.root = TRY(sys::open(o.path, O_PATH).context("virtio-fs: share `" + o.name + "`"));
        auto st = TRY(stat_fd(share.root.get()).context("virtio-fs: share `" + o.name + "`"));
        if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
            return Error::from_string("virtio-fs: share `" + o.name + "` (" + o.path +
                                      ") is neither a directory nor a regular file");
        share.file = S_ISREG(st.st_mode);
        share.name = std::move(o.name);
        share.read_only = o.read_only;
        share.dev = st.st_dev;
        share.ino = st.st_ino;
        shares.push_back(std::move(share));
    }
    auto proc = TRY(sys::open("/proc/self/fd", O_PATH | O_DIRECTORY).context("virtio-fs"));
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    return std::unique_ptr<FuseServer>(new FuseServer(std::move(shares), limits, std::move(proc), now));
}

void FuseServer::reset() {
    m_handles.clear();
    m_inodes.clear();
    m_nodes_by_key.clear();
    for (auto& share : m_shares) share.fds = 0;
    m_root_handles = 0;
    m_initialized = false;
}

size_t FuseServer::open_fds(size_t share_index) const {
    return share_index < m_shares.size() ? m_shares[share_index].fds : 0;
}

size_t FuseServer::handle(std::span<const uint8_t> in, std::span<uint8_t> out) {
    auto reply_error = [&](uint64_t unique, int code) -> size_t {
        if (out.size() < sizeof(fuse_out_header)) return 0;
        fuse_out_header h{uint32_t(sizeof h), -code, unique};
        std::memcpy(out.data(), &h, sizeof h);
        return sizeof h;
    };
    Request req{};
    if (in.size() < sizeof req.header) return reply_error(0, EINVAL);
    std::memcpy(&req.header, in.data(), sizeof req.header);
    req.args = in.subspan(sizeof req.header);
    bool well_formed = req.header.len == in.size();

    // Requests without a reply (the driver does not wait for one).
    switch (req.header.opcode) {
        case FUSE_FORGET:
            if (well_formed && m_initialized)
                if (auto in_arg = req.take<fuse_forget_in>()) forget(req.header.nodeid, in_arg.value().nlookup);
            return 0;
        case FUSE_BATCH_FORGET:
            if (well_formed && m_initialized) (void)do_batch_forget(req);
            return 0;
        case FUSE_INTERRUPT:     // every request is answered before the next is read: nothing to interrupt
        case FUSE_NOTIFY_REPLY:  // answers a NOTIFY_RETRIEVE, which this server never sends
            return 0;
        default:
            break;
    }
    if (out.size() < sizeof(fuse_out_header)) return 0;
    if (!well_formed) return reply_error(req.header.unique, EINVAL);
    // The kernel sends nothing before INIT's reply; EIO is what libfuse answers a request that does.
    if (!m_initialized && req.header.opcode != FUSE_INIT) return reply_error(req.header.unique, EIO);

    Reply reply(out);
    auto result = dispatch(req, reply);
    if (result.is_error()) {
        int code = result.error().code();
        return reply_error(req.header.unique, code > 0 && code < 4096 ? code : EIO);
    }
    if (reply.overflow()) return reply_error(req.header.unique, EINVAL);
    fuse_out_header h{uint32_t(sizeof h + reply.size()), 0, req.header.unique};
    std::memcpy(out.data(), &h, sizeof h);
    return h.len;
}

Result<void> FuseServer::dispatch(Request& req, Reply& reply) {
    switch (req.header.opcode) {
        case FUSE_INIT:
            return do_init(req, reply);
        case FUSE_DESTROY:
            reset();
            return {};
        case FUSE_LOOKUP:
            return do_lookup(req, reply);
        case FUSE_GETATTR:
            return do_getattr(req, reply);
        case FUSE_SETATTR:
            return do_setattr(req, reply);
        case FUSE_READLINK:
            return do_readlink(req, reply);
        case FUSE_SYMLINK:
            return do_symlink(req, reply);
        case FUSE_MKNOD:
            return do_mknod(req, reply);
        case FUSE_MKDIR:
            return do_mkdir(req, reply);
        case FUSE_UNLINK:
            return do_remove(req, false);
        case FUSE_RMDIR:
            return do_remove(req, true);
        case FUSE_RENAME:
            return do_rename(req, false);
        case FUSE_RENAME2:
            return do_rename(req, true);
        case FUSE_LINK:
            return do_link(req, reply);
        case FUSE_OPEN:
            return do_open(req, reply);
        case FUSE_CREATE:
            return do_create(req, reply);
        case FUSE_READ:
            return do_read(req, reply);
        case FUSE_WRITE:
            return do_write(req, reply);
        case FUSE_STATFS:
            return do_statfs(req, reply);
        case FUSE_RELEASE:
            return do_release(req, false);
        case FUSE_RELEASEDIR:
            return do_release(req, true);
        case FUSE_FSYNC:
            return do_fsync(req, false);
        case FUSE_FSYNCDIR:
            return do_fsync(req, true);
        case FUSE_FLUSH:
            return do_flush(req);
        case FUSE_OPENDIR:
            return do_opendir(req, reply);
        case FUSE_READDIR:
            return do_readdir(req, reply, false);
        case FUSE_READDIRPLUS:
            return do_readdir(req, reply, true);
        case FUSE_FALLOCATE:
            return do_fallocate(req);
        case FUSE_LSEEK:
            return do_lseek(req, reply);
        case FUSE_SETXATTR:
            return do_setxattr(req);
        case FUSE_GETXATTR:
            return do_getxattr(req, reply);
        case FUSE_LISTXATTR:
            return do_listxattr(req, reply);
        case FUSE_REMOVEXATTR:
            return do_removexattr(req);
        // ACCESS: the virtio-fs mount checks permissions itself (default_permissions); ENOSYS stops it asking.
        // No lock, ioctl, poll, bmap, copy, DAX-mapping or tmpfile support: ENOSYS turns each off in the driver.
        default:
            return fail(ENOSYS, "opcode not implemented");
    }
}

// ---- INIT ----------------------------------------------------------------------------------------------------

Result<void> FuseServer::do_init(Request& req, Reply& reply) {
    // fuse_init_in grew flags2 and padding in 7.36; an older driver sends the first 16 bytes.
    auto in = TRY(req.take_prefix<fuse_init_in>(offsetof(fuse_init_in, flags2)));
    TRY(reply.need(sizeof(fuse_init_out)));
    fuse_init_out out{};
    out.major = FUSE_KERNEL_VERSION;
    out.minor = FUSE_KERNEL_MINOR_VERSION;
    if (in.major < FUSE_KERNEL_VERSION) return fail(EPROTO, "FUSE major version below 7");
    if (in.major > FUSE_KERNEL_VERSION) {
        // The driver retries INIT with our major (the FUSE version handshake); nothing is initialised yet.
        reply.put(out);
        return {};
    }
    if (in.minor < kMinMinor) return fail(EPROTO, "FUSE minor version below 31");
    // A second INIT without DESTROY (a driver that restarted without a device reset) starts a new session.
    if (m_initialized) reset();
    out.minor = std::min<uint32_t>(in.minor, FUSE_KERNEL_MINOR_VERSION);
    out.max_readahead = in.max_readahead;
    out.flags = in.flags & kInitFlags;
    out.max_write = m_limits.max_write;
    out.time_gran = 1;
    out.max_pages = uint16_t(std::clamp<uint32_t>(m_limits.max_write / 4096, 1, UINT16_MAX));
    reply.put(out);
    m_initialized = true;
    return {};
}

// ---- Nodes -------------------------------------------------------------------------------------------------

Result<FuseServer::Inode*> FuseServer::find_inode(uint64_t node) {
    auto it = m_inodes.find(node);
    if (it == m_inodes.end()) return fail(ESTALE, "unknown node");
    return &it->second;
}

Result<FuseServer::Handle*> FuseServer::find_handle(uint64_t fh) {
    auto it = m_handles.find(fh);
    if (it == m_handles.end()) return fail(EBADF, "unknown handle");
    return &it->second;
}

Result<FuseServer::Inode*> FuseServer::parent_for_change(uint64_t node) {
    if (node == kRootNode) return fail(EPERM, "the share list is read-only");
    Inode* parent = TRY(find_inode(node));
    if (!S_ISDIR(parent->type)) return fail(ENOTDIR, "parent");
    if (m_shares[parent->share].read_only) return fail(EROFS, "read-only share");
    return parent;
}

Result<void> FuseServer::require_fds(uint32_t share, size_t count) const {
    if (m_shares[share].fds + count > m_limits.max_fds_per_share) return fail(ENFILE, "share's fd limit");
    return {};
}

Result<FuseServer::Entry> FuseServer::remember(uint32_t share, UniqueFd fd, size_t fd_limit) {
    Entry entry;
    entry.st = TRY(stat_fd(fd.get()));
    InodeKey key{share, entry.st.st_dev, entry.st.st_ino};
    if (auto it = m_nodes_by_key.find(key); it != m_nodes_by_key.end()) {
        ++m_inodes.at(it->second).nlookup;
        entry.node = it->second;
        return entry;
    }
    if (m_shares[share].fds >= fd_limit) return fail(ENFILE, "share's fd limit");
    entry.node = m_next_node++;
    Inode inode;
    inode.fd = std::move(fd);
    inode.share = share;
    inode.type = entry.st.st_mode & S_IFMT;
    inode.dev = entry.st.st_dev;
    inode.ino = entry.st.st_ino;
    inode.nlookup = 1;
    m_inodes.emplace(entry.node, std::move(inode));
    m_nodes_by_key.emplace(key, entry.node);
    ++m_shares[share].fds;
    return entry;
}

Result<FuseServer::Entry> FuseServer::lookup_child(uint32_t share, int parent_fd, std::string_view name,
                                                   size_t fd_limit) {
    // O_PATH|O_NOFOLLOW: a symlink is looked up as itself; RESOLVE_NO_SYMLINKS and RESOLVE_BENEATH keep the
    // walk to this one directory even if a name were ever more than one component.
    auto fd = TRY(open_beneath(parent_fd, name, O_PATH));
    return remember(share, std::move(fd), fd_limit);
}

Result<FuseServer::Entry> FuseServer::lookup_share(uint32_t share, size_t fd_limit) {
    int fd = ::fcntl(m_shares[share].root.get(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return sys_fail("dup share directory");
    return remember(share, UniqueFd(fd), fd_limit);
}

void FuseServer::forget(uint64_t node, uint64_t nlookup) {
    auto it = m_inodes.find(node);
    if (it == m_inodes.end()) return;  // the root, or a node the guest already forgot: nothing held
    Inode& inode = it->second;
    if (nlookup < inode.nlookup) {
        inode.nlookup -= nlookup;
        return;
    }
    m_nodes_by_key.erase(InodeKey{inode.share, inode.dev, inode.ino});
    --m_shares[inode.share].fds;
    m_inodes.erase(it);
}

Result<void> FuseServer::do_batch_forget(Request& req) {
    auto in = TRY(req.take<fuse_batch_forget_in>());
    // guest-controlled count: bounded by the bytes actually sent.
    size_t count = std::min<size_t>(in.count, req.args.size() / sizeof(fuse_forget_one));
    for (size_t i = 0; i < count; ++i) {
        auto one = TRY(req.take<fuse_forget_one>());
        forget(one.nodeid, one.nlookup);
    }
    return {};
}

uint64_t FuseServer::add_handle(Handle handle) {
    if (handle.share == kNoShare)
        ++m_root_handles;
    else
        ++m_shares[handle.share].fds;
    uint64_t fh = m_next_handle++;
    m_handles.emplace(fh, std::move(handle));
    return fh;
}

void FuseServer::drop_handle(uint64_t fh) {
    auto it = m_handles.find(fh);
    if (it == m_handles.end()) return;
    if (it->second.share == kNoShare)
        --m_root_handles;
    else
        --m_shares[it->second.share].fds;
    m_handles.erase(it);
}

Result<UniqueFd> FuseServer::reopen(const Inode& inode, int flags) const {
    // /proc/self/fd/N is a magic link: O_NOFOLLOW would refuse it. The inode's type is checked by every caller
    // instead, so only regular files and directories are ever opened.
    int fd = ::openat(m_proc_self_fd.get(), fd_name(inode.fd.get()).text, flags | O_CLOEXEC);
    if (fd < 0) return sys_fail("reopen");
    return UniqueFd(fd);
}

fuse_entry_out FuseServer::entry_out(const Entry& entry) {
    fuse_entry_out out{};
    out.nodeid = entry.node;
    out.entry_valid = kTimeoutSeconds;
    out.attr_valid = kTimeoutSeconds;
    out.attr = to_attr(entry.st);
    return out;
}

void FuseServer::put_entry(Reply& reply, const Entry& entry) const {
    reply.put(entry_out(entry));
}

Result<void> FuseServer::put_attr(Reply& reply, uint64_t node, int fh_fd) {
    fuse_attr_out out{};
    out.attr_valid = kTimeoutSeconds;
    if (node == kRootNode) {
        out.attr.ino = kRootIno;
        out.attr.mode = S_IFDIR | 0555;
        out.attr.nlink = uint32_t(2 + m_shares.size());
        out.attr.blksize = 4096;
        out.attr.atime = out.attr.mtime = out.attr.ctime = uint64_t(m_created.tv_sec);
        out.attr.atimensec = out.attr.mtimensec = out.attr.ctimensec = uint32_t(m_created.tv_nsec);
    } else {
        int fd = fh_fd;
        if (fd < 0) fd = TRY(find_inode(node))->fd.get();
        out.attr = to_attr(TRY(stat_fd(fd)));
    }
    reply.put(out);
    return {};
}

Result<void> FuseServer::do_lookup(Request& req, Reply& reply) {
    auto name = TRY(req.last_name());
    TRY(reply.need(sizeof(fuse_entry_out)));
    uint64_t parent = req.header.nodeid;
    if (parent == kRootNode) {
        for (uint32_t i = 0; i < m_shares.size(); ++i)
            if (m_shares[i].name == name) {
                put_entry(reply, TRY(lookup_share(i, m_limits.max_fds_per_share)));
                return {};
            }
        return fail(ENOENT, "no such share");
    }
    Inode* dir = TRY(find_inode(parent));
    if (!S_ISDIR(dir->type)) return fail(ENOTDIR, "lookup");
    put_entry(reply, TRY(lookup_child(dir->share, dir->fd.get(), name, m_limits.max_fds_per_share)));
    return {};
}

// ---- Attributes ----------------------------------------------------------------------------------------------

Result<void> FuseServer::do_getattr(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_getattr_in>());
    TRY(reply.need(sizeof(fuse_attr_out)));
    int fh_fd = -1;
    if ((in.getattr_flags & FUSE_GETATTR_FH) && req.header.nodeid != kRootNode) {
        Handle* h = TRY(find_handle(in.fh));
        if (h->node != req.header.nodeid || !h->fd) return fail(EBADF, "handle of another node");
        fh_fd = h->fd.get();
    }
    return put_attr(reply, req.header.nodeid, fh_fd);
}

Result<void> FuseServer::do_setattr(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_setattr_in>());
    TRY(reply.need(sizeof(fuse_attr_out)));
    if (req.header.nodeid == kRootNode) return fail(EPERM, "the share list is read-only");
    Inode* inode = TRY(find_inode(req.header.nodeid));
    if (m_shares[inode->share].read_only) return fail(EROFS, "read-only share");
    Handle* handle = nullptr;
    if (in.valid & FATTR_FH) {
        handle = TRY(find_handle(in.fh));
        if (handle->node != req.header.nodeid || handle->directory) return fail(EBADF, "handle of another node");
    }
    int fd = inode->fd.get();
    // Owner before mode: a chown clears set-id bits that a chmod in the same request may set again.
    if (in.valid & (FATTR_UID | FATTR_GID)) {
        uid_t uid = (in.valid & FATTR_UID) ? in.uid : uid_t(-1);
        gid_t gid = (in.valid & FATTR_GID) ? in.gid : gid_t(-1);
        if (::fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) return sys_fail("fchownat");
    }
    if (in.valid & FATTR_MODE) {
        // Linux has no mode on symlinks, and a chmod through /proc/self/fd would reach the link's target.
        if (S_ISLNK(inode->type)) return fail(EOPNOTSUPP, "chmod of a symlink");
        if (::fchmodat(m_proc_self_fd.get(), fd_name(fd).text, in.mode & 07777, 0) < 0) return sys_fail("fchmodat");
    }
    if (in.valid & FATTR_SIZE) {
        if (in.size > uint64_t(INT64_MAX)) return fail(EFBIG, "truncate");
        if (handle) {
            if (::ftruncate(handle->fd.get(), off_t(in.size)) < 0) return sys_fail("ftruncate");
        } else {
            if (S_ISDIR(inode->type)) return fail(EISDIR, "truncate");
            if (!S_ISREG(inode->type)) return fail(EINVAL, "truncate");
            auto file = TRY(reopen(*inode, O_WRONLY));
            if (::ftruncate(file.get(), off_t(in.size)) < 0) return sys_fail("ftruncate");
        }
    }
    if (in.valid & (FATTR_ATIME | FATTR_MTIME | FATTR_ATIME_NOW | FATTR_MTIME_NOW)) {
        timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
        if (in.valid & FATTR_ATIME_NOW)
            times[0].tv_nsec = UTIME_NOW;
        else if (in.valid & FATTR_ATIME)
            times[0] = {time_t(in.atime), long(in.atimensec)};
        if (in.valid & FATTR_MTIME_NOW)
            times[1].tv_nsec = UTIME_NOW;
        else if (in.valid & FATTR_MTIME)
            times[1] = {time_t(in.mtime), long(in.mtimensec)};
        for (const auto& t : times)
            if (t.tv_nsec != UTIME_NOW && t.tv_nsec != UTIME_OMIT && t.tv_nsec >= 1'000'000'000)
                return fail(EINVAL, "utimensat");
        // AT_EMPTY_PATH on the O_PATH fd: the inode itself, a symlink included, never what it points to.
        if (::utimensat(fd, "", times, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) return sys_fail("utimensat");
    }
    // FATTR_CTIME (set by the kernel alongside others) cannot be set on Linux; FATTR_LOCKOWNER and
    // FATTR_KILL_SUIDGID are not negotiated.
    return put_attr(reply, req.header.nodeid, handle ? handle->fd.get() : -1);
}

Result<void> FuseServer::do_readlink(Request& req, Reply& reply) {
    TRY(req.end());
    Inode* inode = TRY(find_inode(req.header.nodeid));
    if (!S_ISLNK(inode->type)) return fail(EINVAL, "readlink of a non-symlink");
    size_t room = std::min<size_t>(reply.room(), PATH_MAX);
    ssize_t n = ::readlinkat(inode->fd.get(), "", reinterpret_cast<char*>(reply.tail()), room);
    if (n < 0) return sys_fail("readlinkat");
    if (size_t(n) == room) return fail(ENAMETOOLONG, "readlink");  // maybe truncated
    reply.advance(size_t(n));
    return {};
}

Result<void> FuseServer::do_statfs(Request& req, Reply& reply) {
    TRY(req.end());
    TRY(reply.need(sizeof(fuse_statfs_out)));
    fuse_statfs_out out{};
    out.st.bsize = out.st.frsize = 4096;
    out.st.namelen = NAME_MAX;
    if (req.header.nodeid == kRootNode) {
        out.st.files = m_shares.size() + 1;
    } else {
        // fuse_kstatfs has no flags: a read-only share shows ST_RDONLY only if the guest mounts it read-only.
        Inode* inode = TRY(find_inode(req.header.nodeid));
        struct statfs st {};
        if (::fstatfs(inode->fd.get(), &st) < 0) return sys_fail("fstatfs");
        out.st.blocks = st.f_blocks;
        out.st.bfree = st.f_bfree;
        out.st.bavail = st.f_bavail;
        out.st.files = st.f_files;
        out.st.ffree = st.f_ffree;
        out.st.bsize = uint32_t(st.f_bsize);
        out.st.namelen = uint32_t(st.f_namelen);
        out.st.frsize = uint32_t(st.f_frsize);
    }
    reply.put(out);
    return {};
}

// ---- Creating and removing names ---------------------------------------------------------------------------

Result<void> FuseServer::apply_owner_and_mode(const fuse_in_header& header, const struct stat& parent, int fd,
                                              mode_t type, mode_t mode) {
    // The caller's uid and gid, or the parent's gid under a set-group-ID directory (as the kernel would).
    bool inherit_gid = (parent.st_mode & S_ISGID) != 0;
    gid_t gid = inherit_gid ? parent.st_gid : header.gid;
    // An unprivileged server (the jail drops CAP_CHOWN) cannot give files away: they stay its own.
    if (::fchownat(fd, "", header.uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 && errno != EPERM)
        return sys_fail("fchownat");
    if (type == S_IFLNK) return {};
    // The exact mode: the guest kernel applied its umask already, the host's must not apply again; and the
    // chown above cleared set-id bits on a file.
    mode &= 07777;
    if (type == S_IFDIR && inherit_gid) mode |= S_ISGID;
    if (type != S_IFDIR) {
        // A non-member must not get a set-group-ID file (the kernel's rule, applied conservatively: any
        // group other than the caller's).
        auto st = TRY(stat_fd(fd));
        if (st.st_gid != header.gid) mode &= ~mode_t(S_ISGID);
    }
    if (::fchmodat(m_proc_self_fd.get(), fd_name(fd).text, mode, 0) < 0) return sys_fail("fchmodat");
    return {};
}

Result<FuseServer::Entry> FuseServer::adopt_created(const fuse_in_header& header, const Inode& parent,
                                                    std::string_view name, mode_t type, mode_t mode) {
    auto fd = TRY(open_beneath(parent.fd.get(), name, O_PATH));
    auto adopted = [&]() -> Result<void> {
        auto parent_st = TRY(stat_fd(parent.fd.get()));
        return apply_owner_and_mode(header, parent_st, fd.get(), type, mode);
    }();
    if (adopted.is_error()) {
        // Not left half-made (owned by the server, with the host's umask).
        (void)::unlinkat(parent.fd.get(), std::string(name).c_str(), type == S_IFDIR ? AT_REMOVEDIR : 0);
        return adopted.release_error();
    }
    return remember(parent.share, std::move(fd), m_limits.max_fds_per_share);
}

Result<void> FuseServer::do_mknod(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_mknod_in>());
    auto name = TRY(req.last_name());
    TRY(reply.need(sizeof(fuse_entry_out)));
    Inode* parent = TRY(parent_for_change(req.header.nodeid));
    // No device node ever reaches the host; a socket would be a bound-nothing placeholder: refused too.
    mode_t type = in.mode & S_IFMT;
    if (type != S_IFREG && type != S_IFIFO) return fail(EPERM, "mknod of a device or socket");
    TRY(require_fds(parent->share, 1));
    if (::mknodat(parent->fd.get(), std::string(name).c_str(), type | (in.mode & 07777), 0) < 0)
        return sys_fail("mknodat");
    put_entry(reply, TRY(adopt_created(req.header, *parent, name, type, in.mode)));
    return {};
}

Result<void> FuseServer::do_mkdir(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_mkdir_in>());
    auto name = TRY(req.last_name());
    TRY(reply.need(sizeof(fuse_entry_out)));
    Inode* parent = TRY(parent_for_change(req.header.nodeid));
    TRY(require_fds(parent->share, 1));
    if (::mkdirat(parent->fd.get(), std::string(name).c_str(), in.mode & 07777) < 0) return sys_fail("mkdirat");
    put_entry(reply, TRY(adopt_created(req.header, *parent, name, S_IFDIR, in.mode)));
    return {};
}

Result<void> FuseServer::do_symlink(Request& req, Reply& reply) {
    auto name = TRY(req.string());
    auto target = TRY(req.string());
    TRY(req.end());
    TRY(check_name(name));
    // The target is data: any bytes but NUL, never resolved by the server.
    if (target.empty() || target.size() >= PATH_MAX) return fail(EINVAL, "symlink target");
    TRY(reply.need(sizeof(fuse_entry_out)));
    Inode* parent = TRY(parent_for_change(req.header.nodeid));
    TRY(require_fds(parent->share, 1));
    if (::symlinkat(std::string(target).c_str(), parent->fd.get(), std::string(name).c_str()) < 0)
        return sys_fail("symlinkat");
    put_entry(reply, TRY(adopt_created(req.header, *parent, name, S_IFLNK, 0)));
    return {};
}

Result<void> FuseServer::do_remove(Request& req, bool directory) {
    auto name = TRY(req.last_name());
    Inode* parent = TRY(parent_for_change(req.header.nodeid));
    if (::unlinkat(parent->fd.get(), std::string(name).c_str(), directory ? AT_REMOVEDIR : 0) < 0)
        return sys_fail("unlinkat");
    return {};
}

Result<void> FuseServer::do_rename(Request& req, bool with_flags) {
    uint64_t new_dir = 0;
    uint32_t flags = 0;
    if (with_flags) {
        auto in = TRY(req.take<fuse_rename2_in>());
        new_dir = in.newdir;
        flags = in.flags;
    } else {
        new_dir = TRY(req.take<fuse_rename_in>()).newdir;
    }
    auto old_name = TRY(req.string());
    auto new_name = TRY(req.string());
    TRY(req.end());
    TRY(check_name(old_name));
    TRY(check_name(new_name));
    // RENAME_WHITEOUT creates a character device (0/0) on the host: refused with everything unknown.
    if (flags & ~uint32_t(RENAME_NOREPLACE | RENAME_EXCHANGE)) return fail(EINVAL, "rename flags");
    if (req.header.nodeid == kRootNode || new_dir == kRootNode) return fail(EPERM, "the share list is read-only");
    Inode* from = TRY(find_inode(req.header.nodeid));
    Inode* to = TRY(find_inode(new_dir));
    if (from->share != to->share) return fail(EXDEV, "rename across shares");
    from = TRY(parent_for_change(req.header.nodeid));
    to = TRY(parent_for_change(new_dir));
    if (::renameat2(from->fd.get(), std::string(old_name).c_str(), to->fd.get(), std::string(new_name).c_str(), flags) <
        0)
        return sys_fail("renameat2");
    return {};
}

Result<void> FuseServer::do_link(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_link_in>());
    auto name = TRY(req.last_name());
    TRY(reply.need(sizeof(fuse_entry_out)));
    if (in.oldnodeid == kRootNode || req.header.nodeid == kRootNode) return fail(EPERM, "the share list is read-only");
    Inode* target = TRY(find_inode(in.oldnodeid));
    Inode* parent = TRY(find_inode(req.header.nodeid));
    if (target->share != parent->share) return fail(EXDEV, "link across shares");
    parent = TRY(parent_for_change(req.header.nodeid));
    if (S_ISDIR(target->type)) return fail(EPERM, "link of a directory");
    // Through /proc/self/fd with AT_SYMLINK_FOLLOW: the inode the O_PATH fd holds (a symlink as itself), with no
    // need for CAP_DAC_READ_SEARCH as AT_EMPTY_PATH would have.
    if (::linkat(m_proc_self_fd.get(), fd_name(target->fd.get()).text, parent->fd.get(), std::string(name).c_str(),
                 AT_SYMLINK_FOLLOW) < 0)
        return sys_fail("linkat");
    // The guest counts the reply as one more lookup of the target.
    Entry entry;
    entry.st = TRY(stat_fd(target->fd.get()));
    entry.node = in.oldnodeid;
    ++target->nlookup;
    put_entry(reply, entry);
    return {};
}

// ---- Files ------------------------------------------------------------------------------------------------

namespace {

Result<int> open_flags(uint32_t guest_flags, bool read_only_share) {
    int flags = int(guest_flags) & kOpenFlags;
    int access = flags & O_ACCMODE;
    if (access != O_RDONLY && access != O_WRONLY && access != O_RDWR) return fail(EINVAL, "open access mode");
    if (read_only_share && (access != O_RDONLY || (flags & O_TRUNC))) return fail(EROFS, "read-only share");
    return flags;
}

bool writable(int flags) {
    return (flags & O_ACCMODE) != O_RDONLY;
}

}  // namespace

Result<void> FuseServer::do_open(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_open_in>());
    TRY(reply.need(sizeof(fuse_open_out)));
    if (req.header.nodeid == kRootNode) return fail(EACCES, "open of a directory");
    Inode* inode = TRY(find_inode(req.header.nodeid));
    // Only regular files are opened on the host: a FIFO would block the VMM, a device would be the host's.
    if (!S_ISREG(inode->type)) return fail(EACCES, "open of a non-regular file");
    int flags = TRY(open_flags(in.flags, m_shares[inode->share].read_only));
    TRY(require_fds(inode->share, 1));
    Handle handle;
    handle.fd = TRY(reopen(*inode, flags));
    handle.node = req.header.nodeid;
    handle.share = inode->share;
    handle.writable = writable(flags);
    fuse_open_out out{};
    out.fh = add_handle(std::move(handle));
    reply.put(out);
    return {};
}

Result<void> FuseServer::do_create(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_create_in>());
    auto name = TRY(req.last_name());
    TRY(reply.need(sizeof(fuse_entry_out) + sizeof(fuse_open_out)));
    Inode* parent = TRY(parent_for_change(req.header.nodeid));
    int flags = TRY(open_flags(in.flags, false));
    // An inode fd and a handle.
    TRY(require_fds(parent->share, 2));
    UniqueFd file;
    bool created = false;
    {
        // O_EXCL first, so that an existing name is never opened by O_CREAT: it might be a FIFO or a device.
        auto made = open_beneath(parent->fd.get(), name, uint64_t(flags | O_CREAT | O_EXCL), in.mode & 07777);
        if (made) {
            file = made.release_value();
            created = true;
        } else if (made.error().code() != EEXIST || (in.flags & O_EXCL)) {
            return made.release_error();
        }
    }
    if (!created) {
        // It exists: open it as OPEN would, through its O_PATH fd once it is known to be a regular file.
        auto entry = TRY(lookup_child(parent->share, parent->fd.get(), name, m_limits.max_fds_per_share));
        Inode& inode = m_inodes.at(entry.node);
        auto opened = S_ISREG(inode.type)   ? reopen(inode, flags)
                      : S_ISDIR(inode.type) ? Result<UniqueFd>(fail(EISDIR, "create over a directory"))
                                            : Result<UniqueFd>(fail(EACCES, "create over a special file"));
        if (opened.is_error()) {
            forget(entry.node, 1);
            return opened.release_error();
        }
        Handle handle{opened.release_value(), entry.node, parent->share, false, writable(flags)};
        put_entry(reply, entry);
        fuse_open_out out{};
        out.fh = add_handle(std::move(handle));
        reply.put(out);
        return {};
    }
    // Created: the caller's ownership, then the inode's O_PATH fd from the open file (not by name: the host
    // could have replaced the name meanwhile).
    auto path_fd = [&]() -> Result<UniqueFd> {
        auto parent_st = TRY(stat_fd(parent->fd.get()));
        TRY(apply_owner_and_mode(req.header, parent_st, file.get(), S_IFREG, in.mode));
        int fd = ::openat(m_proc_self_fd.get(), fd_name(file.get()).text, O_PATH | O_CLOEXEC);
        if (fd < 0) return sys_fail("reopen O_PATH");
        return UniqueFd(fd);
    }();
    if (path_fd.is_error()) {
        (void)::unlinkat(parent->fd.get(), std::string(name).c_str(), 0);
        return path_fd.release_error();
    }
    auto entry = TRY(remember(parent->share, path_fd.release_value(), m_limits.max_fds_per_share));
    Handle handle{std::move(file), entry.node, parent->share, false, writable(flags)};
    put_entry(reply, entry);
    fuse_open_out out{};
    out.fh = add_handle(std::move(handle));
    reply.put(out);
    return {};
}

Result<void> FuseServer::do_read(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_read_in>());
    Handle* h = TRY(find_handle(in.fh));
    if (h->directory) return fail(EBADF, "read of a directory handle");
    if (in.offset > uint64_t(INT64_MAX)) return fail(EINVAL, "read offset");
    size_t size = std::min<size_t>({in.size, m_limits.max_write, reply.room()});
    ssize_t n;
    do {
        n = ::pread(h->fd.get(), reply.tail(), size, off_t(in.offset));
    } while (n < 0 && errno == EINTR);
    if (n < 0) return sys_fail("pread");
    reply.advance(size_t(n));
    return {};
}

Result<void> FuseServer::do_write(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_write_in>());
    // guest-controlled size: exactly the data that follows, and no more than max_write.
    if (in.size != req.args.size() || in.size > m_limits.max_write) return fail(EINVAL, "write size");
    TRY(reply.need(sizeof(fuse_write_out)));
    Handle* h = TRY(find_handle(in.fh));
    if (h->directory) return fail(EBADF, "write to a directory handle");
    if (m_shares[h->share].read_only) return fail(EROFS, "read-only share");
    if (!h->writable) return fail(EBADF, "handle not open for writing");
    if (in.offset > uint64_t(INT64_MAX)) return fail(EINVAL, "write offset");
    ssize_t n;
    do {
        n = ::pwrite(h->fd.get(), req.args.data(), in.size, off_t(in.offset));
    } while (n < 0 && errno == EINTR);
    if (n < 0) return sys_fail("pwrite");
    fuse_write_out out{};
    out.size = uint32_t(n);
    reply.put(out);
    return {};
}

Result<void> FuseServer::do_release(Request& req, bool directory) {
    auto in = TRY(req.take<fuse_release_in>());
    Handle* h = TRY(find_handle(in.fh));
    if (h->directory != directory) return fail(EBADF, "handle of the other kind");
    drop_handle(in.fh);
    return {};
}

Result<void> FuseServer::do_fsync(Request& req, bool directory) {
    auto in = TRY(req.take<fuse_fsync_in>());
    Handle* h = TRY(find_handle(in.fh));
    if (h->directory != directory) return fail(EBADF, "handle of the other kind");
    if (!h->fd) return {};  // the synthetic root: nothing to sync
    int r = (in.fsync_flags & FUSE_FSYNC_FDATASYNC) ? ::fdatasync(h->fd.get()) : ::fsync(h->fd.get());
    if (r < 0) return sys_fail("fsync");
    return {};
}

Result<void> FuseServer::do_flush(Request& req) {
    auto in = TRY(req.take<fuse_flush_in>());
    Handle* h = TRY(find_handle(in.fh));
    if (h->directory) return fail(EBADF, "flush of a directory handle");
    // Writes went to the host file as they came (no cache here), and no locks are held: nothing to do.
    return {};
}

Result<void> FuseServer::do_fallocate(Request& req) {
    auto in = TRY(req.take<fuse_fallocate_in>());
    Handle* h = TRY(find_handle(in.fh));
    if (h->directory) return fail(EBADF, "fallocate of a directory handle");
    if (m_shares[h->share].read_only) return fail(EROFS, "read-only share");
    if (!h->writable) return fail(EBADF, "handle not open for writing");
    if (in.offset > uint64_t(INT64_MAX) || in.length > uint64_t(INT64_MAX)) return fail(EINVAL, "fallocate range");
    if (::fallocate(h->fd.get(), int(in.mode), off_t(in.offset), off_t(in.length)) < 0) return sys_fail("fallocate");
    return {};
}

Result<void> FuseServer::do_lseek(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_lseek_in>());
    TRY(reply.need(sizeof(fuse_lseek_out)));
    Handle* h = TRY(find_handle(in.fh));
    if (h->directory) return fail(EBADF, "lseek of a directory handle");
    // The kernel asks only for holes and data; the file position itself is the guest's, not the handle's.
    if (in.whence != SEEK_DATA && in.whence != SEEK_HOLE) return fail(EINVAL, "lseek whence");
    if (in.offset > uint64_t(INT64_MAX)) return fail(ENXIO, "lseek offset");
    off_t at = ::lseek(h->fd.get(), off_t(in.offset), int(in.whence));
    if (at < 0) return sys_fail("lseek");
    fuse_lseek_out out{};
    out.offset = uint64_t(at);
    reply.put(out);
    return {};
}

// ---- Directories -------------------------------------------------------------------------------------------

Result<void> FuseServer::do_opendir(Request& req, Reply& reply) {
    TRY(req.take<fuse_open_in>());
    TRY(reply.need(sizeof(fuse_open_out)));
    Handle handle;
    handle.node = req.header.nodeid;
    handle.directory = true;
    if (req.header.nodeid == kRootNode) {
        // No fd, but memory: capped like a share's fds.
        if (m_root_handles >= m_limits.max_fds_per_share) return fail(ENFILE, "root handle limit");
    } else {
        Inode* inode = TRY(find_inode(req.header.nodeid));
        if (!S_ISDIR(inode->type)) return fail(ENOTDIR, "opendir");
        TRY(require_fds(inode->share, 1));
        handle.fd = TRY(reopen(*inode, O_RDONLY | O_DIRECTORY));
        handle.share = inode->share;
    }
    fuse_open_out out{};
    out.fh = add_handle(std::move(handle));
    reply.put(out);
    return {};
}

namespace {

// One directory record, fuse_dirent or fuse_direntplus, padded to 8 bytes (FUSE_DIRENT_ALIGN).
size_t record_size(size_t name_len, bool plus) {
    return FUSE_DIRENT_ALIGN((plus ? FUSE_NAME_OFFSET_DIRENTPLUS : FUSE_NAME_OFFSET) + name_len);
}

}  // namespace

// READDIRPLUS counts lookups, each an fd: it leaves the last quarter of a share's fds to explicit LOOKUP and
// OPEN, and answers the entries past that without attributes (node 0), as READDIR would.
size_t FuseServer::readdirplus_fd_limit() const {
    return m_limits.max_fds_per_share - m_limits.max_fds_per_share / 4;
}

void FuseServer::put_dirent(Reply& reply, bool plus, const Result<Entry>* looked_up, uint64_t ino, uint64_t off,
                            uint32_t type, std::string_view name) const {
    size_t size = record_size(name.size(), plus);
    if (size > reply.room()) return;  // the callers checked
    uint8_t* at = reply.tail();
    std::memset(at, 0, size);  // the padding too: no stale bytes reach the guest
    if (plus) {
        fuse_entry_out entry{};  // node 0: no entry (".", "..", or a lookup that failed)
        if (looked_up && !looked_up->is_error()) entry = entry_out(looked_up->value());
        std::memcpy(at, &entry, sizeof entry);
        at += sizeof entry;
    }
    fuse_dirent dirent{};
    dirent.ino = ino;
    dirent.off = off;
    dirent.namelen = uint32_t(name.size());
    dirent.type = type;
    std::memcpy(at, &dirent, FUSE_NAME_OFFSET);
    std::memcpy(at + FUSE_NAME_OFFSET, name.data(), name.size());
    reply.advance(size);
}

Result<void> FuseServer::readdir_root(uint64_t offset, size_t budget, Reply& reply, bool plus) {
    // Entries by index: ".", "..", then the shares; an entry's offset is the index of the next.
    size_t used = 0;
    for (uint64_t i = offset; i < 2 + m_shares.size(); ++i) {
        std::string_view name = i == 0 ? "." : i == 1 ? ".." : std::string_view(m_shares[i - 2].name);
        size_t size = record_size(name.size(), plus);
        if (used + size > budget) break;
        uint64_t ino = i < 2 ? kRootIno : m_shares[i - 2].ino;
        unsigned type = i >= 2 && m_shares[i - 2].file ? DT_REG : DT_DIR;
        if (plus && i >= 2) {
            auto looked_up = lookup_share(uint32_t(i - 2), readdirplus_fd_limit());
            put_dirent(reply, plus, &looked_up, ino, i + 1, type, name);
        } else {
            put_dirent(reply, plus, nullptr, ino, i + 1, type, name);
        }
        used += size;
    }
    return {};
}

Result<void> FuseServer::do_readdir(Request& req, Reply& reply, bool plus) {
    auto in = TRY(req.take<fuse_read_in>());
    Handle* h = TRY(find_handle(in.fh));
    if (!h->directory) return fail(EBADF, "readdir of a file handle");
    size_t budget = std::min<size_t>({in.size, m_limits.max_write, reply.room()});
    if (!h->fd) return readdir_root(in.offset, budget, reply, plus);

    // Offsets are the host's d_off cookies: every READDIR seeks to the one it is given.
    if (in.offset > uint64_t(INT64_MAX)) return fail(EINVAL, "readdir offset");
    if (::lseek(h->fd.get(), off_t(in.offset), SEEK_SET) < 0) return sys_fail("lseek directory");
    constexpr size_t kNameAt = offsetof(struct dirent64, d_name);
    size_t used = 0;
    for (;;) {
        ssize_t n = ::getdents64(h->fd.get(), m_dirents.data(), m_dirents.size());
        if (n < 0) {
            if (used) break;
            return sys_fail("getdents64");
        }
        if (n == 0) break;
        // linux_dirent64 records, read field by field: the buffer is the host kernel's, but bounds are checked.
        for (size_t pos = 0; pos + kNameAt <= size_t(n);) {
            const uint8_t* d = m_dirents.data() + pos;
            uint64_t d_ino, d_off;
            uint16_t reclen;
            uint8_t d_type;
            std::memcpy(&d_ino, d + offsetof(struct dirent64, d_ino), sizeof d_ino);
            std::memcpy(&d_off, d + offsetof(struct dirent64, d_off), sizeof d_off);
            std::memcpy(&reclen, d + offsetof(struct dirent64, d_reclen), sizeof reclen);
            std::memcpy(&d_type, d + offsetof(struct dirent64, d_type), sizeof d_type);
            if (reclen <= kNameAt || pos + reclen > size_t(n)) break;
            const char* name_at = reinterpret_cast<const char*>(d + kNameAt);
            std::string_view name(name_at, strnlen(name_at, reclen - kNameAt));
            size_t size = record_size(name.size(), plus);
            if (used + size > budget) return {};
            if (plus && name != "." && name != "..") {
                auto looked_up = lookup_child(h->share, h->fd.get(), name, readdirplus_fd_limit());
                put_dirent(reply, plus, &looked_up, d_ino, d_off, d_type, name);
            } else {
                put_dirent(reply, plus, nullptr, d_ino, d_off, d_type, name);
            }
            used += size;
            pos += reclen;
        }
    }
    return {};
}

// ---- Extended attributes -----------------------------------------------------------------------------------

Result<UniqueFd> FuseServer::xattr_fd(uint64_t node, bool change) {
    if (node == kRootNode) return fail(change ? EPERM : EOPNOTSUPP, "xattrs of the share list");
    Inode* inode = TRY(find_inode(node));
    if (change && m_shares[inode->share].read_only) return fail(EROFS, "read-only share");
    // f*xattr need an fd that is not O_PATH; only regular files and directories are ever opened.
    if (S_ISREG(inode->type)) return reopen(*inode, O_RDONLY);
    if (S_ISDIR(inode->type)) return reopen(*inode, O_RDONLY | O_DIRECTORY);
    return fail(EOPNOTSUPP, "xattrs of a symlink or special file");
}

Result<void> FuseServer::do_setxattr(Request& req) {
    // fuse_setxattr_in's short form: FUSE_SETXATTR_EXT is not negotiated.
    auto in = TRY(req.take_prefix<fuse_setxattr_in>(FUSE_COMPAT_SETXATTR_IN_SIZE));
    auto name = TRY(req.string());
    if (in.size != req.args.size()) return fail(EINVAL, "xattr value size");
    if (in.size > kXattrSizeMax) return fail(E2BIG, "xattr value size");
    if (in.flags & ~uint32_t(XATTR_CREATE | XATTR_REPLACE)) return fail(EINVAL, "setxattr flags");
    TRY(check_xattr_name(name));
    auto fd = TRY(xattr_fd(req.header.nodeid, true));
    if (::fsetxattr(fd.get(), std::string(name).c_str(), req.args.data(), in.size, int(in.flags)) < 0)
        return sys_fail("fsetxattr");
    return {};
}

Result<void> FuseServer::do_getxattr(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_getxattr_in>());
    auto name = TRY(req.string());
    TRY(req.end());
    TRY(check_xattr_name(name));
    if (in.size == 0) TRY(reply.need(sizeof(fuse_getxattr_out)));
    auto fd = TRY(xattr_fd(req.header.nodeid, false));
    if (in.size == 0) {
        ssize_t n = ::fgetxattr(fd.get(), std::string(name).c_str(), nullptr, 0);
        if (n < 0) return sys_fail("fgetxattr");
        fuse_getxattr_out out{};
        out.size = uint32_t(n);
        reply.put(out);
        return {};
    }
    size_t size = std::min<size_t>({in.size, reply.room(), kXattrSizeMax});
    ssize_t n = ::fgetxattr(fd.get(), std::string(name).c_str(), reply.tail(), size);
    if (n < 0) return sys_fail("fgetxattr");
    reply.advance(size_t(n));
    return {};
}

Result<void> FuseServer::do_listxattr(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_getxattr_in>());
    TRY(req.end());
    if (in.size == 0) TRY(reply.need(sizeof(fuse_getxattr_out)));
    auto fd = TRY(xattr_fd(req.header.nodeid, false));
    // The whole list, then without trusted.* (which a root server would see and the guest must not).
    std::vector<char> names;
    for (int attempt = 0;; ++attempt) {
        ssize_t n = ::flistxattr(fd.get(), nullptr, 0);
        if (n < 0) return sys_fail("flistxattr");
        names.resize(size_t(n));
        n = ::flistxattr(fd.get(), names.data(), names.size());
        if (n >= 0) {
            names.resize(size_t(n));
            break;
        }
        if (errno != ERANGE || attempt == 3) return sys_fail("flistxattr");  // ERANGE: it grew meanwhile
    }
    std::vector<char> visible;
    for (size_t at = 0; at < names.size();) {
        std::string_view name(names.data() + at, strnlen(names.data() + at, names.size() - at));
        if (!is_trusted(name)) {
            visible.insert(visible.end(), name.begin(), name.end());
            visible.push_back('\0');
        }
        at += name.size() + 1;
    }
    if (in.size == 0) {
        fuse_getxattr_out out{};
        out.size = uint32_t(visible.size());
        reply.put(out);
        return {};
    }
    if (visible.size() > in.size || visible.size() > reply.room()) return fail(ERANGE, "listxattr");
    reply.put_bytes(visible.data(), visible.size());
    return {};
}

Result<void> FuseServer::do_removexattr(Request& req) {
    auto name = TRY(req.string());
    TRY(req.end());
    TRY(check_xattr_name(name));
    auto fd = TRY(xattr_fd(req.header.nodeid, true));
    if (::fremovexattr(fd.get(), std::string(name).c_str()) < 0) return sys_fail("fremovexattr");
    return {};
}

}  // namespace husk::virtio::fs
