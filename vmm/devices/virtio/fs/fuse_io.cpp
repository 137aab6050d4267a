// FuseServer's opcodes on open files and directories and on extended attributes: OPEN, READ, WRITE, RELEASE,
// FSYNC, FALLOCATE, LSEEK, STATFS, OPENDIR, READDIR, READDIRPLUS, RELEASEDIR, FSYNCDIR and the xattr calls.
#include <dirent.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <linux/limits.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "vmm/devices/virtio/fs/fuse_internal.h"
#include "vmm/devices/virtio/fs/fuse_server.h"

namespace husk::virtio::fs {
using namespace detail;  // the helpers shared by the FuseServer files (fuse_internal.h)

namespace {

constexpr size_t kXattrSizeMax = XATTR_SIZE_MAX;
constexpr std::string_view kTrustedPrefix = "trusted.";

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

// ---- Files ------------------------------------------------------------------------------------------------

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

namespace {

// The first `bytes` of `iov` (the last buffer cut short).
std::vector<iovec> first_bytes(std::span<const iovec> iov, size_t bytes) {
    std::vector<iovec> out;
    for (const iovec& v : iov) {
        if (bytes == 0) break;
        size_t take = std::min(v.iov_len, bytes);
        out.push_back({v.iov_base, take});
        bytes -= take;
    }
    return out;
}

// A write by a guest process without CAP_FSETID (the guest kernel's
// FUSE_WRITE_KILL_SUIDGID) clears the file's set-user-ID bit, and its
// set-group-ID bit where group execute is set, as a write on a local file
// system would. husk-vmm keeps CAP_FSETID (it serves every guest user), so
// its own write would keep them. Where it may not change the mode (jailed,
// without CAP_FOWNER) it has no CAP_FSETID either, and its write cleared them.
void kill_suidgid(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) < 0) return;
    mode_t mode = st.st_mode & 07777;
    mode_t kept = mode & ~mode_t(S_ISUID);
    if ((mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP)) kept &= ~mode_t(S_ISGID);
    if (kept != mode) (void)::fchmod(fd, kept);
}

}  // namespace

Result<void> FuseServer::do_read(Request& req, Reply& reply) {
    auto in = TRY(req.take<fuse_read_in>());
    Handle* h = TRY(find_handle(in.fh));
    if (h->directory) return fail(EBADF, "read of a directory handle");
    if (in.offset > uint64_t(INT64_MAX)) return fail(EINVAL, "read offset");
    if (req.data) {
        // Straight into the guest's buffers.
        auto iov = first_bytes(req.data->iov, std::min<size_t>({in.size, m_limits.max_write, req.data->bytes}));
        if (m_defer) return defer(req, *h, false, in.offset, std::move(iov), false);
        ssize_t n;
        do {
            n = ::preadv(h->fd.get(), iov.data(), int(iov.size()), off_t(in.offset));
        } while (n < 0 && errno == EINTR);
        if (n < 0) return sys_fail("preadv");
        reply.add_outside(size_t(n));
        return {};
    }
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
    // guest-controlled size: exactly the data that follows (in the request, or in guest buffers), and no more
    // than max_write.
    size_t data_bytes = req.data ? req.data->bytes : req.args.size();
    if ((req.data && !req.args.empty()) || in.size != data_bytes || in.size > m_limits.max_write)
        return fail(EINVAL, "write size");
    TRY(reply.need(sizeof(fuse_write_out)));
    Handle* h = TRY(find_handle(in.fh));
    if (h->directory) return fail(EBADF, "write to a directory handle");
    if (m_shares[h->share].read_only) return fail(EROFS, "read-only share");
    if (!h->writable) return fail(EBADF, "handle not open for writing");
    if (in.offset > uint64_t(INT64_MAX)) return fail(EINVAL, "write offset");
    if (req.data && m_defer)
        return defer(req, *h, true, in.offset, {req.data->iov.begin(), req.data->iov.end()},
                     in.write_flags & FUSE_WRITE_KILL_SUIDGID);
    ssize_t n;
    do {
        n = req.data ? ::pwritev(h->fd.get(), req.data->iov.data(), int(req.data->iov.size()), off_t(in.offset))
                     : ::pwrite(h->fd.get(), req.args.data(), in.size, off_t(in.offset));
    } while (n < 0 && errno == EINTR);
    if (n < 0) return sys_fail("pwrite");
    if (n > 0 && (in.write_flags & FUSE_WRITE_KILL_SUIDGID)) kill_suidgid(h->fd.get());
    fuse_write_out out{};
    out.size = uint32_t(n);
    reply.put(out);
    return {};
}

Result<void> FuseServer::defer(const Request& req, const Handle& h, bool write, uint64_t offset, std::vector<iovec> iov,
                               bool kill_suidgid) {
    // A duplicate: the guest may RELEASE the handle, or reset the device, before the I/O is done, and the
    // handle's fd number could then name another file by the time the caller's ring reads it.
    int fd = ::fcntl(h.fd.get(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return sys_fail("dup");
    m_defer->write = write;
    m_defer->fd = UniqueFd(fd);
    m_defer->offset = offset;
    m_defer->iov = std::move(iov);
    m_defer->unique = req.header.unique;
    m_defer->kill_suidgid = kill_suidgid;
    return {};
}

size_t FuseServer::complete(DeferredIo& io, int result, std::span<uint8_t> out) {
    UniqueFd fd = std::move(io.fd);
    if (out.size() < kDeferredReplyRoom) return 0;
    fuse_out_header h{uint32_t(sizeof h), 0, io.unique};
    if (result < 0) {
        h.error = result > -4096 ? result : -EIO;
    } else if (io.write) {
        if (result > 0 && io.kill_suidgid) kill_suidgid(fd.get());
        fuse_write_out w{};
        w.size = uint32_t(result);
        std::memcpy(out.data() + sizeof h, &w, sizeof w);
        h.len += uint32_t(sizeof w);
    } else {
        h.len += uint32_t(result);
    }
    std::memcpy(out.data(), &h, sizeof h);
    return h.len;
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

    // Offsets are the host's d_off cookies. A READDIR that goes on from where the last one stopped reads on from
    // the fd's position; any other seeks to the cookie it is given. The fd never reads past what the reply takes:
    // giving entries back would need a seek, and on tmpfs before Linux 6.6 and in overlayfs a seek counts entries
    // from the start, so after the guest removed the ones it was given (`rm -rf` between READDIRs) it would skip
    // as many.
    if (in.offset > uint64_t(INT64_MAX)) return fail(EINVAL, "readdir offset");
    if (in.offset != h->resume) {
        h->resume = ~uint64_t(0);  // unknown until the seek succeeds
        if (::lseek(h->fd.get(), off_t(in.offset), SEEK_SET) < 0) return sys_fail("lseek directory");
        h->resume = in.offset;
    }
    constexpr size_t kNameAt = offsetof(struct dirent64, d_name);
    // A linux_dirent64 record is at least 24 bytes, and the reply's record for the same name at most 8 bytes
    // (READDIRPLUS: 140) longer: reading room * 24 / (24 + that) bytes of records fills at most `room`.
    constexpr size_t kMinRecord = 24, kMaxGrowth = 8, kMaxGrowthPlus = 140;
    constexpr size_t kLargestRecord = 280;  // a 255-byte name
    size_t used = 0;
    uint64_t last = in.offset;  // the d_off of the last entry put in the reply
    // Only a reply too small for the largest record reads more than fits; what it cannot take goes back
    // by a seek, while the directory is still as getdents64 saw it.
    auto stop_early = [&]() -> Result<void> {
        h->resume = ~uint64_t(0);
        if (::lseek(h->fd.get(), off_t(last), SEEK_SET) < 0) return sys_fail("lseek directory");
        h->resume = last;
        return {};
    };
    for (;;) {
        size_t room = budget - used;
        size_t want = room * kMinRecord / (kMinRecord + (plus ? kMaxGrowthPlus : kMaxGrowth));
        if (used == 0) want = std::max(want, kLargestRecord);
        want = std::min(want, m_dirents.size());
        if (want < kMinRecord) break;
        ssize_t n = ::getdents64(h->fd.get(), m_dirents.data(), want);
        if (n < 0) {
            // EINVAL: the next record is larger than `want` (nothing was read); the next READDIR gets it.
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
            if (used + size > budget) return stop_early();
            if (plus && name != "." && name != "..") {
                auto looked_up = lookup_child(h->share, h->fd.get(), name, readdirplus_fd_limit());
                put_dirent(reply, plus, &looked_up, d_ino, d_off, d_type, name);
            } else {
                put_dirent(reply, plus, nullptr, d_ino, d_off, d_type, name);
            }
            used += size;
            last = d_off;
            pos += reclen;
        }
    }
    h->resume = last;
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
