// FuseServer's opcodes that change the tree: attributes (SETATTR), and names made, linked, renamed and removed
// (MKNOD, MKDIR, SYMLINK, LINK, UNLINK, RMDIR, RENAME, RENAME2, CREATE), with the ownership and mode a created
// entry gets.
#include <fcntl.h>
#include <linux/fuse.h>
#include <linux/limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "vmm/devices/virtio/fs/fuse_internal.h"
#include "vmm/devices/virtio/fs/fuse_server.h"

namespace husk::virtio::fs {
using namespace detail;  // the helpers shared by the FuseServer files (fuse_internal.h)

// ---- Attributes ----------------------------------------------------------------------------------------------

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
    entry.share = target->share;
    ++target->nlookup;
    put_entry(reply, entry);
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

}  // namespace husk::virtio::fs
