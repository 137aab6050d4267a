#include "vmm/devices/virtio/fs/fuse_server.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <linux/limits.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "vmm/base/system.h"
#include "vmm/devices/virtio/fs/fuse_internal.h"

namespace husk::virtio::fs {
using namespace detail;  // the helpers shared by the FuseServer files (fuse_internal.h)

namespace {

// virtio-fs arrived with FUSE 7.31 (Linux 5.4): no driver of this device speaks an older minor, so none of the
// older, shorter argument layouts (FUSE_COMPAT_*) is accepted.
constexpr uint32_t kMinMinor = 31;
// Entry and attribute validity. A file share's is 0: an engine binds /etc/resolv.conf, /etc/hosts and
// /etc/hostname that way and may rewrite them in place after create (newer Docker does), and a guest that cached
// the old size would read the new text cut to it. Those files are small and seldom read.
constexpr uint64_t kTimeoutSeconds = 1;
// INIT flags the server implements; the reply carries those the driver offered.
constexpr uint32_t kInitFlags = FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO;

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

}  // namespace

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

size_t FuseServer::handle(std::span<const uint8_t> in, std::span<uint8_t> out, const DataBuffers& data,
                          DeferredIo& io) {
    io.fd.reset();
    m_defer = &io;
    size_t n = handle(in, out, data);
    m_defer = nullptr;
    return io.fd ? 0 : n;
}

size_t FuseServer::handle(std::span<const uint8_t> in, std::span<uint8_t> out, const DataBuffers& data) {
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
    // Data outside `in` belong to a READ (where its reply goes) or a WRITE (counted in len).
    bool with_data = data.bytes > 0;
    if (with_data) req.data = &data;
    bool well_formed = !with_data                        ? req.header.len == in.size()
                       : req.header.opcode == FUSE_WRITE ? uint64_t(req.header.len) == uint64_t(in.size()) + data.bytes
                       : req.header.opcode == FUSE_READ  ? req.header.len == in.size()
                                                         : false;

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
    fuse_out_header h{uint32_t(sizeof h + reply.size() + reply.outside()), 0, req.header.unique};
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
            // Sent at every close(). Writes reach the host file as they come and no locks are held, so there is
            // nothing to do; ENOSYS makes the driver stop sending it (fc->no_flush), one round trip (a VM exit
            // and an interrupt) less per file opened.
            return fail(ENOSYS, "flush: nothing to do");
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
    entry.share = share;
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

uint64_t FuseServer::validity(uint32_t share) const {
    return m_shares[share].file ? 0 : kTimeoutSeconds;
}

fuse_entry_out FuseServer::entry_out(const Entry& entry) const {
    fuse_entry_out out{};
    out.nodeid = entry.node;
    out.entry_valid = validity(entry.share);
    out.attr_valid = validity(entry.share);
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
        Inode* inode = TRY(find_inode(node));
        int fd = fh_fd >= 0 ? fh_fd : inode->fd.get();
        out.attr_valid = validity(inode->share);
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

}  // namespace husk::virtio::fs
