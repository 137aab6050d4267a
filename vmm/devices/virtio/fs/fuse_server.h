// FuseServer: the FUSE file system behind husk's virtio-fs device (virtio 1.2
// §5.11): one request in, one reply out, synchronously, on the caller's thread.
//
// The guest sees one tree. Node 1 is a synthetic read-only directory whose
// entries are the shares; below each share are real host files, every one
// held as an O_PATH|O_NOFOLLOW fd and reached only by openat2(RESOLVE_BENEATH
// | RESOLVE_NO_SYMLINKS) of a single validated name from its parent's fd. The
// server never follows a symlink, never opens anything but regular files and
// directories, never creates a device node, and holds at most
// max_fds_per_share fds per share whatever the guest forgets to FORGET.
//
// Not thread-safe: the device calls it from one thread (the event loop).
#pragma once

#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

struct fuse_in_header;
struct fuse_entry_out;
struct stat;

namespace husk::virtio::fs {

struct ShareOptions {
    std::string name;  // the share's directory name under the FUSE root: one path component
    std::string path;  // a host directory, or a regular file (a file bind: the root lists it as a file)
    bool read_only = false;
};

// A READ's destination or a WRITE's source left in guest memory: the host
// kernel reads into or writes from these buffers directly (preadv, pwritev),
// with no copy through `in` or `out`. guest-controlled: where they point is the
// caller's to check (they are the guest's own buffers).
struct DataBuffers {
    std::span<const struct iovec> iov;
    size_t bytes = 0;  // their total length
};

// A READ or WRITE whose data are in guest buffers, passed every check and left to the caller's io_uring
// (FuseServer::handle with a DeferredIo): preadv or pwritev of `iov` at `offset` on `fd`, then
// FuseServer::complete with the result for the reply.
struct DeferredIo {
    bool write = false;
    UniqueFd fd;  // a duplicate of the handle's: a RELEASE or reset meanwhile closes theirs, never this one
    uint64_t offset = 0;
    std::vector<struct iovec> iov;  // a READ's guest buffers cut to the size asked, or a WRITE's data
    uint64_t unique = 0;            // the request's
    bool kill_suidgid = false;      // a WRITE with FUSE_WRITE_KILL_SUIDGID
};

struct ServerLimits {
    uint32_t max_fds_per_share = 4096;  // inode O_PATH fds + open handles, per share
    uint32_t max_write = 1u << 20;      // negotiated max_write / max read size
};

class FuseServer {
public:
    // Opens every share's directory (O_PATH|O_DIRECTORY|O_CLOEXEC) and /proc/self/fd (kept as a dirfd, used to
    // reopen O_PATH fds) now, so it also works after the process has chrooted/pivoted into a jail.
    // Errors: a share that is neither a directory nor a regular file, duplicate or invalid names, limits out of
    // range.
    static Result<std::unique_ptr<FuseServer>> create(std::vector<ShareOptions> shares, ServerLimits limits = {});
    ~FuseServer();
    FuseServer(const FuseServer&) = delete;
    FuseServer& operator=(const FuseServer&) = delete;

    // One request: `in` is everything the driver put in the device-readable buffers (fuse_in_header, the opcode's
    // arguments, then WRITE's data), `out` is the space of the device-writable buffers. Writes the reply
    // (fuse_out_header, then its arguments / data) into `out` and returns its length; returns 0 when the opcode
    // takes no reply (FORGET, BATCH_FORGET, INTERRUPT, NOTIFY_REPLY). A malformed request (shorter than a header,
    // len != in.size(), arguments too short or with trailing bytes, out too small for the reply) gets -EINVAL when
    // out has room for a header, else 0. guest-controlled: every byte of `in`.
    //
    // With `data` (READ and WRITE only; any other opcode given data is malformed): for a WRITE, `in` ends at
    // fuse_write_in and its data are `data` (fuse_in_header.len counts them); for a READ, the data read go into
    // `data` and only the reply's fuse_out_header into `out` (its len, and the value returned, count them).
    size_t handle(std::span<const uint8_t> in, std::span<uint8_t> out, const DataBuffers& data = {});
    // The same for a caller that does READ's and WRITE's I/O itself, on its io_uring: a READ or WRITE with `data`
    // that passes every check is not done but described in `io` (its fd set), and 0 is returned. Any other
    // request is handled as above, and `io`'s fd is left unset.
    size_t handle(std::span<const uint8_t> in, std::span<uint8_t> out, const DataBuffers& data, DeferredIo& io);
    // The reply to a DeferredIo whose I/O returned `result` (bytes, or -errno): written into `out`, which has
    // room for a fuse_out_header and a fuse_write_out (kDeferredReplyRoom). Returns its length, a READ's data (in
    // the guest's buffers already) counted. Closes io.fd.
    static constexpr size_t kDeferredReplyRoom = 24;
    static size_t complete(DeferredIo& io, int result, std::span<uint8_t> out);
    // Device reset / unmount: drops every inode and handle (closes their fds); the next request must be INIT.
    void reset();
    // Fds held for share `index`: its inodes' O_PATH fds and its open handles. The share directory's own fd,
    // opened by create() and kept for the server's life, is not counted: 0 after reset().
    size_t open_fds(size_t share_index) const;

private:
    struct Share {
        std::string name;
        bool read_only = false;
        UniqueFd root;  // O_PATH: the share's directory or file
        bool file = false;
        dev_t dev = 0;
        ino_t ino = 0;
        size_t fds = 0;  // held: its inodes' fds and its handles' fds
    };
    struct Inode {
        UniqueFd fd;  // O_PATH|O_NOFOLLOW: the file itself, a symlink as the link
        uint32_t share = 0;
        mode_t type = 0;  // S_IFMT bits: a host inode's type never changes
        dev_t dev = 0;
        ino_t ino = 0;
        uint64_t nlookup = 0;  // the guest's references (FUSE lookup count)
    };
    static constexpr uint32_t kNoShare = UINT32_MAX;  // a handle on the synthetic root
    struct Handle {
        UniqueFd fd;  // O_RDONLY/O_WRONLY/O_RDWR file or directory; none for the synthetic root
        uint64_t node = 0;
        uint32_t share = kNoShare;
        bool directory = false;
        bool writable = false;
        // A directory's fd stands right after the entry whose d_off this is: a READDIR from there reads on
        // without seeking. (A seek by cookie counts entries from the start on tmpfs before Linux 6.6 and in
        // overlayfs: after the guest removed the entries it was given, as `rm -rf` does between READDIRs, it
        // would skip as many.)
        uint64_t resume = 0;
    };
    struct Request;
    class Reply;
    struct Entry;
    // Which host file a node is: the same (share, st_dev, st_ino) looked up twice is one node.
    using InodeKey = std::tuple<uint32_t, dev_t, ino_t>;

    FuseServer(std::vector<Share> shares, ServerLimits limits, UniqueFd proc_self_fd, timespec created);

    Result<void> dispatch(Request& req, Reply& reply);

    // Tables.
    Result<Inode*> find_inode(uint64_t node);
    Result<Handle*> find_handle(uint64_t fh);
    // The directory `node` as the parent of a name being created, removed or renamed.
    Result<Inode*> parent_for_change(uint64_t node);
    Result<void> require_fds(uint32_t share, size_t count) const;
    // Counts a host file looked up in `share` (held by `fd`): a known one gets its lookup count raised and `fd`
    // is closed; a new one becomes a node if the share holds fewer than `fd_limit` fds.
    Result<Entry> remember(uint32_t share, UniqueFd fd, size_t fd_limit);
    Result<Entry> lookup_child(uint32_t share, int parent_fd, std::string_view name, size_t fd_limit);
    Result<Entry> lookup_share(uint32_t share, size_t fd_limit);
    void forget(uint64_t node, uint64_t nlookup);
    uint64_t add_handle(Handle handle);
    void drop_handle(uint64_t fh);
    // Reopens an inode's O_PATH fd through /proc/self/fd with real access `flags`.
    Result<UniqueFd> reopen(const Inode& inode, int flags) const;
    // Gives a just-created entry the caller's ownership and its exact mode, then counts it as a lookup.
    Result<Entry> adopt_created(const fuse_in_header& header, const Inode& parent, std::string_view name, mode_t type,
                                mode_t mode);
    Result<void> apply_owner_and_mode(const fuse_in_header& header, const struct stat& parent, int fd, mode_t type,
                                      mode_t mode);
    // Seconds the guest may cache a node's entry and attributes for (FUSE entry_valid, attr_valid).
    uint64_t validity(uint32_t share) const;
    fuse_entry_out entry_out(const Entry& entry) const;
    void put_entry(Reply& reply, const Entry& entry) const;
    Result<void> put_attr(Reply& reply, uint64_t node, int fh_fd);

    // Opcodes.
    Result<void> do_init(Request& req, Reply& reply);
    Result<void> do_lookup(Request& req, Reply& reply);
    Result<void> do_batch_forget(Request& req);
    Result<void> do_getattr(Request& req, Reply& reply);
    Result<void> do_setattr(Request& req, Reply& reply);
    Result<void> do_readlink(Request& req, Reply& reply);
    Result<void> do_symlink(Request& req, Reply& reply);
    Result<void> do_mknod(Request& req, Reply& reply);
    Result<void> do_mkdir(Request& req, Reply& reply);
    Result<void> do_remove(Request& req, bool directory);
    Result<void> do_rename(Request& req, bool with_flags);
    Result<void> do_link(Request& req, Reply& reply);
    Result<void> do_open(Request& req, Reply& reply);
    Result<void> do_create(Request& req, Reply& reply);
    Result<void> do_read(Request& req, Reply& reply);
    Result<void> do_write(Request& req, Reply& reply);
    // A READ or WRITE handed to handle()'s caller (m_defer), on a duplicate of the handle's fd.
    Result<void> defer(const Request& req, const Handle& h, bool write, uint64_t offset, std::vector<struct iovec> iov,
                       bool kill_suidgid);
    Result<void> do_statfs(Request& req, Reply& reply);
    Result<void> do_release(Request& req, bool directory);
    Result<void> do_fsync(Request& req, bool directory);
    Result<void> do_opendir(Request& req, Reply& reply);
    Result<void> do_readdir(Request& req, Reply& reply, bool plus);
    Result<void> readdir_root(uint64_t offset, size_t budget, Reply& reply, bool plus);
    size_t readdirplus_fd_limit() const;
    // One fuse_dirent (READDIR) or fuse_direntplus (READDIRPLUS, with `looked_up`'s entry if it succeeded).
    void put_dirent(Reply& reply, bool plus, const Result<Entry>* looked_up, uint64_t ino, uint64_t off, uint32_t type,
                    std::string_view name) const;
    Result<void> do_fallocate(Request& req);
    Result<void> do_lseek(Request& req, Reply& reply);
    Result<void> do_setxattr(Request& req);
    Result<void> do_getxattr(Request& req, Reply& reply);
    Result<void> do_listxattr(Request& req, Reply& reply);
    Result<void> do_removexattr(Request& req);
    // The fd xattr calls work on: regular files and directories, reopened read-only.
    Result<UniqueFd> xattr_fd(uint64_t node, bool change);

    std::vector<Share> m_shares;
    ServerLimits m_limits;
    DeferredIo* m_defer = nullptr;  // handle()'s DeferredIo for this request, if its caller does the I/O
    UniqueFd m_proc_self_fd;        // /proc/self/fd, O_PATH: where O_PATH fds are reopened for I/O
    timespec m_created;             // the synthetic root's timestamps
    bool m_initialized = false;
    uint64_t m_next_node = 2;    // node 1 is the synthetic root; ids are never reused
    uint64_t m_next_handle = 1;  // never reused either: a stale fh is EBADF, not someone else's file
    std::unordered_map<uint64_t, Inode> m_inodes;
    std::map<InodeKey, uint64_t> m_nodes_by_key;
    std::unordered_map<uint64_t, Handle> m_handles;
    size_t m_root_handles = 0;       // OPENDIR of the synthetic root: no fd, capped like a share's fds
    std::vector<uint8_t> m_dirents;  // getdents64 buffer
};

}  // namespace husk::virtio::fs
