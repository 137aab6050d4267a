// The FUSE server driven as the guest kernel drives it, one request at a time,
// over shares in a temporary directory: the protocol, and above all the wall
// around each share (names, symlinks, swapped directories, devices, FIFOs,
// read-only shares, other shares, the fd cap).
#include "vmm/devices/virtio/fs/fuse_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

namespace husk::virtio::fs {
namespace {

constexpr uint64_t kRoot = FUSE_ROOT_ID;
constexpr size_t kOutSize = (1 << 20) + 4096;

std::string errno_text(int code) {
    return std::generic_category().message(code);
}

// A directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
public:
    // Under `base`, else $TMPDIR or /tmp.
    explicit TempDir(std::string base = "") {
        const char* tmp = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe): before any thread
        if (base.empty()) base = tmp && *tmp ? tmp : "/tmp";
        std::string tmpl = base + "/husk-fuse-test-XXXXXX";
        if (!::mkdtemp(tmpl.data())) ADD_FAILURE() << "mkdtemp: " << errno_text(errno);
        m_path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(m_path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return m_path; }
    std::string operator/(std::string_view name) const { return m_path + "/" + std::string(name); }

private:
    std::string m_path;
};

void write_host_file(const std::string& path, std::string_view text) {
    std::ofstream(path, std::ios::binary) << text;
}

std::string read_host_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

struct stat host_lstat(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st;
}

// A request's arguments, in order.
class Args {
public:
    template <typename T>
    Args& add(const T& v) {
        const auto* p = reinterpret_cast<const uint8_t*>(&v);
        m_bytes.insert(m_bytes.end(), p, p + sizeof v);
        return *this;
    }
    // A FUSE string: the bytes, then a NUL.
    Args& name(std::string_view s) {
        m_bytes.insert(m_bytes.end(), s.begin(), s.end());
        m_bytes.push_back(0);
        return *this;
    }
    Args& raw(std::string_view s) {
        m_bytes.insert(m_bytes.end(), s.begin(), s.end());
        return *this;
    }
    std::vector<uint8_t> bytes() const { return m_bytes; }

private:
    std::vector<uint8_t> m_bytes;
};

struct Answer {
    bool replied = false;
    int error = 0;  // positive errno
    std::vector<uint8_t> body;

    template <typename T>
    T as(size_t offset = 0) const {
        T v{};
        EXPECT_GE(body.size(), offset + sizeof v);
        if (body.size() >= offset + sizeof v) std::memcpy(&v, body.data() + offset, sizeof v);
        return v;
    }
    std::string text() const { return std::string(body.begin(), body.end()); }
};

struct DirEntry {
    std::string name;
    uint64_t ino = 0, off = 0, node = 0;
    uint32_t type = 0;
};

// The guest kernel's side: builds requests, checks the reply's header, keeps uid and gid.
class Guest {
public:
    explicit Guest(FuseServer& server) : m_server(server) {}
    uint32_t uid = 0, gid = 0;

    Answer call(uint32_t opcode, uint64_t node, const Args& args = {}, size_t out_size = kOutSize) {
        std::vector<uint8_t> in(sizeof(fuse_in_header));
        auto payload = args.bytes();
        in.insert(in.end(), payload.begin(), payload.end());
        fuse_in_header h{};
        h.len = uint32_t(in.size());
        h.opcode = opcode;
        h.unique = ++m_unique;
        h.nodeid = node;
        h.uid = uid;
        h.gid = gid;
        h.pid = 42;
        std::memcpy(in.data(), &h, sizeof h);
        std::vector<uint8_t> out(out_size);
        size_t n = m_server.handle(in, out);
        Answer a;
        if (n == 0) return a;
        a.replied = true;
        EXPECT_GE(n, sizeof(fuse_out_header));
        EXPECT_LE(n, out.size());
        fuse_out_header oh{};
        std::memcpy(&oh, out.data(), sizeof oh);
        EXPECT_EQ(oh.len, n);
        EXPECT_EQ(oh.unique, h.unique);
        EXPECT_LE(oh.error, 0);
        a.error = -oh.error;
        if (oh.error) {
            EXPECT_EQ(n, sizeof oh) << "an error carries no arguments";
        }
        a.body.assign(out.begin() + sizeof oh, out.begin() + long(n));
        return a;
    }

    // A request as the device hands over a READ or WRITE: its data in separate
    // buffers. `len_extra` is added to fuse_in_header.len (a WRITE's data).
    // The reply's header, and how much handle() said the reply holds.
    std::pair<fuse_out_header, size_t> call_with_data(uint32_t opcode, const Args& args, uint32_t len_extra,
                                                      const DataBuffers& data, size_t out_size = kOutSize,
                                                      DeferredIo* io = nullptr) {
        std::vector<uint8_t> in(sizeof(fuse_in_header));
        auto payload = args.bytes();
        in.insert(in.end(), payload.begin(), payload.end());
        fuse_in_header h{};
        h.len = uint32_t(in.size()) + len_extra;
        h.opcode = opcode;
        h.unique = ++m_unique;
        h.uid = uid;
        h.gid = gid;
        std::memcpy(in.data(), &h, sizeof h);
        std::vector<uint8_t> out(out_size);
        size_t n = io ? m_server.handle(in, out, data, *io) : m_server.handle(in, out, data);
        fuse_out_header oh{};
        if (n >= sizeof oh) std::memcpy(&oh, out.data(), sizeof oh);
        EXPECT_EQ(oh.unique, n ? h.unique : 0);
        return {oh, n};
    }

    Answer init(uint32_t minor = FUSE_KERNEL_MINOR_VERSION, uint32_t flags = 0xffffffffu) {
        fuse_init_in in{};
        in.major = FUSE_KERNEL_VERSION;
        in.minor = minor;
        in.max_readahead = 128 << 10;
        in.flags = flags;
        return call(FUSE_INIT, 0, Args().add(in));
    }
    Answer lookup(uint64_t parent, std::string_view name) { return call(FUSE_LOOKUP, parent, Args().name(name)); }
    // LOOKUP that must succeed: the node id.
    uint64_t node(uint64_t parent, std::string_view name) {
        auto a = lookup(parent, name);
        EXPECT_EQ(a.error, 0) << "lookup " << name << ": " << errno_text(a.error);
        return a.error ? 0 : a.as<fuse_entry_out>().nodeid;
    }
    Answer getattr(uint64_t node) { return call(FUSE_GETATTR, node, Args().add(fuse_getattr_in{})); }
    fuse_attr attr(uint64_t node) { return getattr(node).as<fuse_attr_out>().attr; }
    void forget(uint64_t node, uint64_t n) {
        EXPECT_FALSE(call(FUSE_FORGET, node, Args().add(fuse_forget_in{n})).replied);
    }
    Answer mkdir(uint64_t parent, std::string_view name, uint32_t mode = 0755) {
        return call(FUSE_MKDIR, parent, Args().add(fuse_mkdir_in{mode, 0}).name(name));
    }
    Answer mknod(uint64_t parent, std::string_view name, uint32_t mode, uint32_t rdev = 0) {
        return call(FUSE_MKNOD, parent, Args().add(fuse_mknod_in{mode, rdev, 0, 0}).name(name));
    }
    Answer create(uint64_t parent, std::string_view name, uint32_t flags = O_RDWR | O_CREAT, uint32_t mode = 0644) {
        return call(FUSE_CREATE, parent, Args().add(fuse_create_in{flags, S_IFREG | mode, 0, 0}).name(name));
    }
    Answer symlink(uint64_t parent, std::string_view name, std::string_view target) {
        return call(FUSE_SYMLINK, parent, Args().name(name).name(target));
    }
    Answer readlink(uint64_t node) { return call(FUSE_READLINK, node); }
    Answer unlink(uint64_t parent, std::string_view name) { return call(FUSE_UNLINK, parent, Args().name(name)); }
    Answer rmdir(uint64_t parent, std::string_view name) { return call(FUSE_RMDIR, parent, Args().name(name)); }
    Answer rename(uint64_t parent, std::string_view from, uint64_t new_parent, std::string_view to) {
        return call(FUSE_RENAME, parent, Args().add(fuse_rename_in{new_parent}).name(from).name(to));
    }
    Answer rename2(uint64_t parent, std::string_view from, uint64_t new_parent, std::string_view to, uint32_t flags) {
        return call(FUSE_RENAME2, parent, Args().add(fuse_rename2_in{new_parent, flags, 0}).name(from).name(to));
    }
    Answer link(uint64_t node, uint64_t new_parent, std::string_view name) {
        return call(FUSE_LINK, new_parent, Args().add(fuse_link_in{node}).name(name));
    }
    Answer open(uint64_t node, uint32_t flags) { return call(FUSE_OPEN, node, Args().add(fuse_open_in{flags, 0})); }
    // OPEN that must succeed: the handle.
    uint64_t fh(uint64_t node, uint32_t flags) {
        auto a = open(node, flags);
        EXPECT_EQ(a.error, 0) << errno_text(a.error);
        return a.error ? 0 : a.as<fuse_open_out>().fh;
    }
    Answer read(uint64_t fh, uint64_t offset, uint32_t size, size_t out_size = kOutSize) {
        fuse_read_in in{};
        in.fh = fh;
        in.offset = offset;
        in.size = size;
        return call(FUSE_READ, 0, Args().add(in), out_size);
    }
    Answer write(uint64_t fh, uint64_t offset, std::string_view data, uint32_t write_flags = 0) {
        fuse_write_in in{};
        in.fh = fh;
        in.offset = offset;
        in.size = uint32_t(data.size());
        in.write_flags = write_flags;
        return call(FUSE_WRITE, 0, Args().add(in).raw(data));
    }
    Answer release(uint64_t fh, uint32_t opcode = FUSE_RELEASE) {
        fuse_release_in in{};
        in.fh = fh;
        return call(opcode, 0, Args().add(in));
    }
    Answer opendir(uint64_t node) { return call(FUSE_OPENDIR, node, Args().add(fuse_open_in{O_RDONLY, 0})); }
    Answer readdir(uint64_t fh, uint64_t offset, uint32_t size = 4096, bool plus = false, size_t out_size = kOutSize) {
        fuse_read_in in{};
        in.fh = fh;
        in.offset = offset;
        in.size = size;
        return call(plus ? FUSE_READDIRPLUS : FUSE_READDIR, 0, Args().add(in), out_size);
    }
    Answer setattr(uint64_t node, const fuse_setattr_in& in) { return call(FUSE_SETATTR, node, Args().add(in)); }
    Answer setxattr(uint64_t node, std::string_view name, std::string_view value, uint32_t flags = 0) {
        // The 8-byte form: FUSE_SETXATTR_EXT is not negotiated.
        return call(FUSE_SETXATTR, node, Args().add(uint32_t(value.size())).add(flags).name(name).raw(value));
    }
    Answer getxattr(uint64_t node, std::string_view name, uint32_t size) {
        return call(FUSE_GETXATTR, node, Args().add(fuse_getxattr_in{size, 0}).name(name));
    }
    Answer listxattr(uint64_t node, uint32_t size) {
        return call(FUSE_LISTXATTR, node, Args().add(fuse_getxattr_in{size, 0}));
    }
    Answer removexattr(uint64_t node, std::string_view name) { return call(FUSE_REMOVEXATTR, node, Args().name(name)); }

    // Every entry of a directory, READDIR after READDIR from each reply's last offset.
    std::vector<DirEntry> list(uint64_t dir, uint32_t size = 4096, bool plus = false) {
        auto opened = opendir(dir);
        EXPECT_EQ(opened.error, 0);
        uint64_t handle = opened.as<fuse_open_out>().fh;
        std::vector<DirEntry> all;
        uint64_t offset = 0;
        for (int calls = 0; calls < 10000; ++calls) {
            auto a = readdir(handle, offset, size, plus);
            EXPECT_EQ(a.error, 0);
            auto page = parse_dirents(a.body, plus);
            if (page.empty()) break;
            offset = page.back().off;
            all.insert(all.end(), page.begin(), page.end());
        }
        EXPECT_EQ(release(handle, FUSE_RELEASEDIR).error, 0);
        return all;
    }

    static std::vector<DirEntry> parse_dirents(const std::vector<uint8_t>& body, bool plus) {
        std::vector<DirEntry> out;
        size_t head = plus ? FUSE_NAME_OFFSET_DIRENTPLUS : FUSE_NAME_OFFSET;
        for (size_t at = 0; at + head <= body.size();) {
            fuse_entry_out entry{};
            fuse_dirent d{};
            if (plus) std::memcpy(&entry, body.data() + at, sizeof entry);
            std::memcpy(&d, body.data() + at + (plus ? sizeof entry : 0), FUSE_NAME_OFFSET);
            EXPECT_LE(at + head + d.namelen, body.size());
            DirEntry e;
            e.name.assign(reinterpret_cast<const char*>(body.data() + at + head), d.namelen);
            e.ino = d.ino;
            e.off = d.off;
            e.type = d.type;
            e.node = entry.nodeid;
            out.push_back(e);
            at += FUSE_DIRENT_ALIGN(head + d.namelen);
        }
        return out;
    }

private:
    FuseServer& m_server;
    uint64_t m_unique = 0;
};

std::set<std::string> names_of(const std::vector<DirEntry>& entries) {
    std::set<std::string> names;
    for (const auto& e : entries) names.insert(e.name);
    return names;
}

// Three shares: data (read-write), ro (read-only), other (read-write); `outside` is beside them, never shared.
class FuseServerTest : public ::testing::Test {
protected:
    void SetUp() override {
        for (const char* d : {"data", "ro", "other", "outside"}) ASSERT_EQ(::mkdir((tmp / d).c_str(), 0755), 0);
        write_host_file(tmp / "ro/file", "read me");
        ASSERT_EQ(::mkdir((tmp / "ro/sub").c_str(), 0755), 0);
        write_host_file(tmp / "outside/secret", "not for the guest");
        start({});
    }
    void start(ServerLimits limits) {
        guest.reset();
        server.reset();
        auto created = FuseServer::create(
            {{"data", tmp / "data", false}, {"ro", tmp / "ro", true}, {"other", tmp / "other", false}}, limits);
        ASSERT_TRUE(created) << created.error().message();
        server = created.release_value();
        guest = std::make_unique<Guest>(*server);
        ASSERT_EQ(guest->init().error, 0);
        data = guest->node(kRoot, "data");
        ro = guest->node(kRoot, "ro");
        other = guest->node(kRoot, "other");
    }
    Guest& g() { return *guest; }
    size_t open_fds_total() const { return server->open_fds(0) + server->open_fds(1) + server->open_fds(2); }

    TempDir tmp;
    std::unique_ptr<FuseServer> server;
    std::unique_ptr<Guest> guest;
    uint64_t data = 0, ro = 0, other = 0;
};

TEST(FuseServerCreate, RefusesWhatIsNotAShare) {
    TempDir tmp;
    write_host_file(tmp / "file", "x");
    auto dir = tmp.path();
    ASSERT_EQ(::mkfifo((tmp / "fifo").c_str(), 0600), 0);
    EXPECT_FALSE(FuseServer::create({{"a", tmp / "fifo"}}));
    EXPECT_FALSE(FuseServer::create({{"a", "/dev/null"}}));
    EXPECT_FALSE(FuseServer::create({{"a", tmp / "missing"}}));
    EXPECT_FALSE(FuseServer::create({{"a", dir}, {"a", dir}}));
    for (const std::string& bad :
         std::vector<std::string>{"", ".", "..", "a/b", std::string(256, 'n'), std::string("a\0b", 3)})
        EXPECT_FALSE(FuseServer::create({{bad, dir}})) << bad;
    EXPECT_FALSE(FuseServer::create({{"a", dir}}, {.max_fds_per_share = 1}));
    EXPECT_FALSE(FuseServer::create({{"a", dir}}, {.max_write = 100}));
    EXPECT_TRUE(FuseServer::create({{"a", dir}, {"b", dir, true}}));
    EXPECT_TRUE(FuseServer::create({}));
}

// A file bind (the engine's /etc/hosts): a share that is one regular file,
// listed in the root as a file, read and written in place, or read-only.
TEST(FuseServerFiles, AShareMayBeOneRegularFile) {
    TempDir tmp;
    write_host_file(tmp / "hosts", "127.0.0.1 localhost\n");
    write_host_file(tmp / "resolv", "nameserver 10.0.0.1\n");
    auto created = FuseServer::create({{"file0", tmp / "hosts", false}, {"file1", tmp / "resolv", true}});
    ASSERT_TRUE(created) << created.error().message();
    auto server = created.release_value();
    Guest g(*server);
    ASSERT_EQ(g.init().error, 0);
    auto entries = g.list(kRoot);
    ASSERT_EQ(entries.size(), 4u);
    EXPECT_EQ(entries[2].name, "file0");
    EXPECT_EQ(entries[2].type, uint32_t(DT_REG));
    uint64_t hosts = g.node(kRoot, "file0");
    EXPECT_TRUE(S_ISREG(g.attr(hosts).mode));
    EXPECT_EQ(g.lookup(hosts, "x").error, ENOTDIR);
    uint64_t fh = g.fh(hosts, O_RDWR);
    ASSERT_NE(fh, 0u);
    EXPECT_EQ(g.read(fh, 0, 100).text(), "127.0.0.1 localhost\n");
    EXPECT_EQ(g.write(fh, 0, "10.0.0.99").error, 0);
    EXPECT_EQ(read_host_file(tmp / "hosts"), "10.0.0.99 localhost\n");
    uint64_t resolv = g.node(kRoot, "file1");
    EXPECT_EQ(g.open(resolv, O_WRONLY).error, EROFS);
    // Never cached: an engine may rewrite the file in place after create, and the guest must see its new size.
    auto entry = g.lookup(kRoot, "file1").as<fuse_entry_out>();
    EXPECT_EQ(entry.entry_valid, 0u);
    EXPECT_EQ(entry.attr_valid, 0u);
    write_host_file(tmp / "resolv", "nameserver 127.0.0.11\noptions ndots:0\n");
    auto attr = g.getattr(resolv).as<fuse_attr_out>();
    EXPECT_EQ(attr.attr_valid, 0u);
    EXPECT_EQ(attr.attr.size, 38u);
}

TEST_F(FuseServerTest, InitNegotiatesOnlyWhatIsImplemented) {
    start({.max_fds_per_share = 64, .max_write = 256 << 10});
    auto a = g().init();  // a new INIT restarts the session
    ASSERT_EQ(a.error, 0);
    auto out = a.as<fuse_init_out>();
    EXPECT_EQ(out.major, 7u);
    EXPECT_EQ(out.minor, uint32_t(FUSE_KERNEL_MINOR_VERSION));
    EXPECT_EQ(out.max_readahead, 128u << 10);
    EXPECT_EQ(out.max_write, 256u << 10);
    EXPECT_EQ(out.max_pages, 64);
    EXPECT_EQ(out.time_gran, 1u);
    EXPECT_TRUE(out.flags & FUSE_BIG_WRITES);
    EXPECT_TRUE(out.flags & FUSE_MAX_PAGES);
    EXPECT_TRUE(out.flags & FUSE_DO_READDIRPLUS);
    EXPECT_FALSE(out.flags & (FUSE_WRITEBACK_CACHE | FUSE_DONT_MASK | FUSE_POSIX_LOCKS | FUSE_ASYNC_READ |
                              FUSE_EXPORT_SUPPORT | FUSE_SETXATTR_EXT | FUSE_POSIX_ACL | FUSE_HANDLE_KILLPRIV));
    EXPECT_EQ(open_fds_total(), 0u) << "a new INIT drops the old session";

    // Only flags the driver offered; an older minor is answered with it.
    out = g().init(36, FUSE_BIG_WRITES).as<fuse_init_out>();
    EXPECT_EQ(out.flags, uint32_t(FUSE_BIG_WRITES));
    EXPECT_EQ(out.minor, 36u);
    // Older than virtio-fs: refused.
    EXPECT_EQ(g().init(30).error, EPROTO);
}

TEST_F(FuseServerTest, NothingBeforeInit) {
    server->reset();
    EXPECT_EQ(g().getattr(kRoot).error, EIO);
    EXPECT_EQ(g().lookup(kRoot, "data").error, EIO);
    ASSERT_EQ(g().init().error, 0);
    EXPECT_EQ(g().getattr(kRoot).error, 0);
}

TEST_F(FuseServerTest, RootIsASyntheticListOfShares) {
    auto attr = g().attr(kRoot);
    EXPECT_EQ(attr.mode, uint32_t(S_IFDIR | 0555));
    EXPECT_EQ(attr.nlink, 5u);
    EXPECT_EQ(attr.uid, 0u);
    EXPECT_EQ(attr.gid, 0u);
    EXPECT_EQ(attr.ino, 1u);

    auto entries = g().list(kRoot);
    ASSERT_EQ(entries.size(), 5u);
    EXPECT_EQ(entries[0].name, ".");
    EXPECT_EQ(entries[1].name, "..");
    EXPECT_EQ(entries[2].name, "data");
    EXPECT_EQ(entries[3].name, "ro");
    EXPECT_EQ(entries[4].name, "other");
    EXPECT_EQ(entries[2].ino, host_lstat(tmp / "data").st_ino);
    EXPECT_EQ(entries[2].type, uint32_t(DT_DIR));
    // From an offset on: the rest.
    auto h = g().opendir(kRoot).as<fuse_open_out>().fh;
    auto rest = Guest::parse_dirents(g().readdir(h, 3).body, false);
    ASSERT_EQ(rest.size(), 2u);
    EXPECT_EQ(rest[0].name, "ro");
    EXPECT_EQ(g().release(h, FUSE_RELEASEDIR).error, 0);

    // A share is its host directory; the same share looked up again is the same node.
    EXPECT_EQ(g().node(kRoot, "data"), data);
    EXPECT_EQ(g().attr(data).ino, host_lstat(tmp / "data").st_ino);
    EXPECT_EQ(g().lookup(kRoot, "nope").error, ENOENT);
    EXPECT_EQ(g().lookup(kRoot, "outside").error, ENOENT);
    EXPECT_EQ(g().call(FUSE_STATFS, kRoot).error, 0);

    // Nothing about it changes.
    EXPECT_EQ(g().mkdir(kRoot, "new").error, EPERM);
    EXPECT_EQ(g().create(kRoot, "new").error, EPERM);
    EXPECT_EQ(g().mknod(kRoot, "new", S_IFREG | 0644).error, EPERM);
    EXPECT_EQ(g().symlink(kRoot, "new", "data").error, EPERM);
    EXPECT_EQ(g().unlink(kRoot, "data").error, EPERM);
    EXPECT_EQ(g().rmdir(kRoot, "data").error, EPERM);
    EXPECT_EQ(g().rename(kRoot, "data", kRoot, "x").error, EPERM);
    EXPECT_EQ(g().rename(kRoot, "data", data, "x").error, EPERM);
    EXPECT_EQ(g().rename(data, "x", kRoot, "x").error, EPERM);
    EXPECT_EQ(g().link(data, kRoot, "x").error, EPERM);
    fuse_setattr_in chmod{};
    chmod.valid = FATTR_MODE;
    chmod.mode = 0777;
    EXPECT_EQ(g().setattr(kRoot, chmod).error, EPERM);
    EXPECT_EQ(g().setxattr(kRoot, "user.x", "1").error, EPERM);
    EXPECT_EQ(g().removexattr(kRoot, "user.x").error, EPERM);
    EXPECT_EQ(g().getxattr(kRoot, "user.x", 0).error, EOPNOTSUPP);
    EXPECT_EQ(g().open(kRoot, O_RDONLY).error, EACCES);
    EXPECT_EQ(g().attr(kRoot).mode, uint32_t(S_IFDIR | 0555));
}

TEST_F(FuseServerTest, LookupAndGetattrOfHostFiles) {
    write_host_file(tmp / "data/file", "twelve bytes");
    ASSERT_EQ(::link((tmp / "data/file").c_str(), (tmp / "data/hardlink").c_str()), 0);
    auto a = g().lookup(data, "file");
    ASSERT_EQ(a.error, 0);
    auto entry = a.as<fuse_entry_out>();
    EXPECT_EQ(entry.attr.size, 12u);
    EXPECT_EQ(entry.attr.ino, host_lstat(tmp / "data/file").st_ino);
    EXPECT_TRUE(S_ISREG(entry.attr.mode));
    EXPECT_EQ(entry.entry_valid, 1u);
    EXPECT_EQ(entry.attr_valid, 1u);
    EXPECT_GT(entry.nodeid, kRoot);
    // One host file, one node, whatever the name.
    EXPECT_EQ(g().node(data, "file"), entry.nodeid);
    EXPECT_EQ(g().node(data, "hardlink"), entry.nodeid);
    EXPECT_EQ(server->open_fds(0), 2u) << "the share's root and the file";
    EXPECT_EQ(g().attr(entry.nodeid).nlink, 2u);
    EXPECT_EQ(g().lookup(data, "missing").error, ENOENT);
    EXPECT_EQ(g().getattr(987654).error, ESTALE);

    // GETATTR through a handle.
    uint64_t fh = g().fh(entry.nodeid, O_RDONLY);
    fuse_getattr_in in{FUSE_GETATTR_FH, 0, fh};
    auto by_fh = g().call(FUSE_GETATTR, entry.nodeid, Args().add(in));
    ASSERT_EQ(by_fh.error, 0);
    EXPECT_EQ(by_fh.as<fuse_attr_out>().attr.size, 12u);
    in.fh = fh + 1000;
    EXPECT_EQ(g().call(FUSE_GETATTR, entry.nodeid, Args().add(in)).error, EBADF);

    auto st = g().call(FUSE_STATFS, entry.nodeid);
    ASSERT_EQ(st.error, 0);
    EXPECT_GT(st.as<fuse_statfs_out>().st.bsize, 0u);
}

// A guest writer without CAP_FSETID (FUSE_WRITE_KILL_SUIDGID) clears set-user-ID,
// and set-group-ID where group execute is set, as on a local file system; a
// writer with it (no flag) keeps them.
TEST_F(FuseServerTest, AWriteWithoutFsetidClearsSetIdBits) {
    auto a = g().create(data, "s", O_RDWR | O_CREAT | O_EXCL, 0644);
    ASSERT_EQ(a.error, 0);
    uint64_t fh = a.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;
    auto mode = [&] { return host_lstat(tmp / "data/s").st_mode & 07777; };
    ASSERT_EQ(::chmod((tmp / "data/s").c_str(), 06755), 0);
    EXPECT_EQ(g().write(fh, 0, "kept").error, 0);
    EXPECT_EQ(mode(), 06755u);
    EXPECT_EQ(g().write(fh, 0, "cleared", FUSE_WRITE_KILL_SUIDGID).error, 0);
    EXPECT_EQ(mode(), 0755u);
    // Set-group-ID without group execute marks mandatory locking, not privilege: it stays.
    ASSERT_EQ(::chmod((tmp / "data/s").c_str(), 06744), 0);
    EXPECT_EQ(g().write(fh, 0, "again", FUSE_WRITE_KILL_SUIDGID).error, 0);
    EXPECT_EQ(mode(), 02744u);
    EXPECT_EQ(read_host_file(tmp / "data/s").substr(0, 7), "agained");
    EXPECT_EQ(g().release(fh).error, 0);
}

TEST_F(FuseServerTest, CreateWriteReadRelease) {
    auto a = g().create(data, "f", O_RDWR | O_CREAT | O_EXCL, 0640);
    ASSERT_EQ(a.error, 0);
    auto entry = a.as<fuse_entry_out>();
    uint64_t fh = a.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;
    EXPECT_TRUE(S_ISREG(entry.attr.mode));
    EXPECT_EQ(server->open_fds(0), 3u) << "root, the file's inode, its handle";

    auto w = g().write(fh, 0, "hello, world");
    ASSERT_EQ(w.error, 0);
    EXPECT_EQ(w.as<fuse_write_out>().size, 12u);
    EXPECT_EQ(g().write(fh, 100, "tail").error, 0);
    auto r = g().read(fh, 7, 5);
    ASSERT_EQ(r.error, 0);
    EXPECT_EQ(r.text(), "world");
    // A read past the end is short; a read is capped by the reply buffer.
    EXPECT_EQ(g().read(fh, 102, 100).text(), "il");
    EXPECT_EQ(g().read(fh, 0, 100, sizeof(fuse_out_header) + 5).text(), "hello");
    EXPECT_EQ(read_host_file(tmp / "data/f").substr(0, 12), "hello, world");
    EXPECT_EQ(host_lstat(tmp / "data/f").st_size, 104);

    // FLUSH has nothing to do: ENOSYS, which Linux takes as success and stops sending.
    EXPECT_EQ(g().call(FUSE_FLUSH, entry.nodeid, Args().add(fuse_flush_in{fh, 0, 0, 0})).error, ENOSYS);
    EXPECT_EQ(g().call(FUSE_FSYNC, entry.nodeid, Args().add(fuse_fsync_in{fh, FUSE_FSYNC_FDATASYNC, 0})).error, 0);
    EXPECT_EQ(g().call(FUSE_FSYNC, entry.nodeid, Args().add(fuse_fsync_in{fh, 0, 0})).error, 0);
    EXPECT_EQ(g().release(fh).error, 0);
    EXPECT_EQ(server->open_fds(0), 2u);
    // A released handle is gone; so is one never given.
    EXPECT_EQ(g().read(fh, 0, 10).error, EBADF);
    EXPECT_EQ(g().write(fh, 0, "x").error, EBADF);
    EXPECT_EQ(g().release(fh).error, EBADF);
    EXPECT_EQ(g().read(0, 0, 10).error, EBADF);

    // O_EXCL on an existing name; without it the file is opened (and truncated if asked).
    EXPECT_EQ(g().create(data, "f", O_RDWR | O_CREAT | O_EXCL).error, EEXIST);
    auto again = g().create(data, "f", O_RDWR | O_CREAT | O_TRUNC);
    ASSERT_EQ(again.error, 0);
    EXPECT_EQ(again.as<fuse_entry_out>().nodeid, entry.nodeid);
    EXPECT_EQ(host_lstat(tmp / "data/f").st_size, 0);
    EXPECT_EQ(g().release(again.as<fuse_open_out>(sizeof(fuse_entry_out)).fh).error, 0);

    // A read-only handle does not write; a write-only one is still a file.
    uint64_t rdonly = g().fh(entry.nodeid, O_RDONLY);
    EXPECT_EQ(g().write(rdonly, 0, "x").error, EBADF);
    EXPECT_EQ(g().open(entry.nodeid, O_ACCMODE).error, EINVAL);
    // OPEN of a directory node is refused; OPENDIR of a file too.
    EXPECT_EQ(g().open(data, O_RDONLY).error, EACCES);
    EXPECT_EQ(g().opendir(entry.nodeid).error, ENOTDIR);
}

// READ and WRITE as the device passes them: the data stay in guest buffers
// (three pieces here), moved by preadv/pwritev, never copied through the
// request or the reply.
TEST_F(FuseServerTest, ReadAndWriteUseTheGuestsBuffersDirectly) {
    auto a = g().create(data, "f");
    ASSERT_EQ(a.error, 0);
    uint64_t fh = a.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;

    char p1[] = "hello", p2[] = ", ", p3[] = "world";
    iovec pieces[] = {{p1, 5}, {p2, 2}, {p3, 5}};
    fuse_write_in w{};
    w.fh = fh;
    w.size = 12;
    auto [wh, wn] = g().call_with_data(FUSE_WRITE, Args().add(w), 12, DataBuffers{pieces, 12});
    ASSERT_EQ(wh.error, 0);
    EXPECT_EQ(wn, sizeof(fuse_out_header) + sizeof(fuse_write_out));
    EXPECT_EQ(read_host_file(tmp / "data/f"), "hello, world");

    char b1[3] = {}, b2[4] = {}, b3[100] = {};
    iovec into[] = {{b1, sizeof b1}, {b2, sizeof b2}, {b3, sizeof b3}};
    fuse_read_in r{};
    r.fh = fh;
    r.offset = 1;
    r.size = 9;  // fewer than the buffers hold: the rest stays untouched
    auto [rh, rn] = g().call_with_data(FUSE_READ, Args().add(r), 0, DataBuffers{into, 107});
    ASSERT_EQ(rh.error, 0);
    EXPECT_EQ(rn, sizeof(fuse_out_header) + 9) << "the reply counts the data in the guest's buffers";
    EXPECT_EQ(rh.len, rn);
    EXPECT_EQ(std::string(b1, 3) + std::string(b2, 4) + std::string(b3, 2), "ello, wor");
    EXPECT_EQ(b3[2], 0);
    r.offset = 10;  // past the end: short
    auto [eh, en] = g().call_with_data(FUSE_READ, Args().add(r), 0, DataBuffers{into, 107});
    EXPECT_EQ(en, sizeof(fuse_out_header) + 2);

    // A WRITE whose size disagrees with its data, data beside the arguments,
    // and data given to any other opcode are malformed.
    w.size = 11;
    EXPECT_EQ(g().call_with_data(FUSE_WRITE, Args().add(w), 12, DataBuffers{pieces, 12}).first.error, -EINVAL);
    w.size = 12;
    EXPECT_EQ(g().call_with_data(FUSE_WRITE, Args().add(w), 11, DataBuffers{pieces, 12}).first.error, -EINVAL)
        << "len must count the data";
    EXPECT_EQ(g().call_with_data(FUSE_WRITE, Args().add(w).raw("x"), 12, DataBuffers{pieces, 12}).first.error, -EINVAL);
    EXPECT_EQ(g().call_with_data(FUSE_GETATTR, Args().add(fuse_getattr_in{}), 0, DataBuffers{into, 107}).first.error,
              -EINVAL);
    // Read-only shares and handles still refuse.
    uint64_t rdonly = g().fh(a.as<fuse_entry_out>().nodeid, O_RDONLY);
    w.fh = rdonly;
    EXPECT_EQ(g().call_with_data(FUSE_WRITE, Args().add(w), 12, DataBuffers{pieces, 12}).first.error, -EBADF);
    EXPECT_EQ(read_host_file(tmp / "data/f"), "hello, world");
}

// The device leaves READ's and WRITE's I/O to its io_uring: the server checks the request, hands the I/O over
// on a duplicate fd (a RELEASE before it completes closes only the handle's), and answers from the result.
TEST_F(FuseServerTest, DeferredReadAndWriteOutliveTheirHandle) {
    auto a = g().create(data, "f", O_RDWR | O_CREAT | O_EXCL, 0644);
    ASSERT_EQ(a.error, 0);
    uint64_t node = a.as<fuse_entry_out>().nodeid;
    uint64_t fh = a.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;
    ASSERT_EQ(::chmod((tmp / "data/f").c_str(), 06755), 0);
    char text[] = "deferred";
    iovec piece{text, 8};
    fuse_write_in w{};
    w.fh = fh;
    w.size = 8;
    w.write_flags = FUSE_WRITE_KILL_SUIDGID;
    DeferredIo io;
    auto [wh, wn] = g().call_with_data(FUSE_WRITE, Args().add(w), 8, DataBuffers{{&piece, 1}, 8}, kOutSize, &io);
    EXPECT_EQ(wn, 0u) << "no reply yet";
    ASSERT_TRUE(io.fd);
    EXPECT_TRUE(io.write);
    EXPECT_EQ(io.offset, 0u);
    ASSERT_EQ(io.iov.size(), 1u);
    EXPECT_EQ(read_host_file(tmp / "data/f"), "") << "the caller writes";
    size_t held = server->open_fds(0);
    EXPECT_EQ(g().release(fh).error, 0);
    EXPECT_EQ(server->open_fds(0), held - 1);
    ssize_t n = ::pwritev(io.fd.get(), io.iov.data(), int(io.iov.size()), off_t(io.offset));
    ASSERT_EQ(n, 8) << "the duplicate outlives the handle";
    std::array<uint8_t, FuseServer::kDeferredReplyRoom> out{};
    size_t len = FuseServer::complete(io, int(n), out);
    ASSERT_EQ(len, sizeof(fuse_out_header) + sizeof(fuse_write_out));
    fuse_out_header h{};
    std::memcpy(&h, out.data(), sizeof h);
    EXPECT_EQ(h.len, len);
    EXPECT_EQ(h.error, 0);
    EXPECT_NE(h.unique, 0u);
    fuse_write_out wo{};
    std::memcpy(&wo, out.data() + sizeof h, sizeof wo);
    EXPECT_EQ(wo.size, 8u);
    EXPECT_FALSE(io.fd) << "closed by complete()";
    EXPECT_EQ(read_host_file(tmp / "data/f"), "deferred");
    EXPECT_EQ(host_lstat(tmp / "data/f").st_mode & 07777, 0755u) << "KILL_SUIDGID applied on completion";

    // A READ: the guest's buffers cut to the size asked; the reply counts the data.
    uint64_t rfh = g().fh(node, O_RDONLY);
    char buffer[16] = {};
    iovec into{buffer, sizeof buffer};
    fuse_read_in r{};
    r.fh = rfh;
    r.offset = 2;
    r.size = 4;
    DeferredIo rio;
    auto [rh, rn] = g().call_with_data(FUSE_READ, Args().add(r), 0, DataBuffers{{&into, 1}, 16}, kOutSize, &rio);
    EXPECT_EQ(rn, 0u);
    ASSERT_TRUE(rio.fd);
    EXPECT_FALSE(rio.write);
    EXPECT_EQ(rio.offset, 2u);
    ASSERT_EQ(rio.iov.size(), 1u);
    EXPECT_EQ(rio.iov[0].iov_len, 4u);
    n = ::preadv(rio.fd.get(), rio.iov.data(), int(rio.iov.size()), off_t(rio.offset));
    ASSERT_EQ(n, 4);
    len = FuseServer::complete(rio, int(n), out);
    EXPECT_EQ(len, sizeof(fuse_out_header) + 4);
    std::memcpy(&h, out.data(), sizeof h);
    EXPECT_EQ(h.len, len);
    EXPECT_EQ(std::string(buffer, 4), "ferr");
    // A failed I/O is the request's error; a result beyond errno's range is EIO.
    DeferredIo failing;
    (void)g().call_with_data(FUSE_READ, Args().add(r), 0, DataBuffers{{&into, 1}, 16}, kOutSize, &failing);
    ASSERT_TRUE(failing.fd);
    EXPECT_EQ(FuseServer::complete(failing, -ENOSPC, out), sizeof(fuse_out_header));
    std::memcpy(&h, out.data(), sizeof h);
    EXPECT_EQ(h.error, -ENOSPC);
    // Every check still comes first: a stale handle is answered at once, with nothing handed over.
    r.fh = fh;
    DeferredIo stale;
    auto [sh, sn] = g().call_with_data(FUSE_READ, Args().add(r), 0, DataBuffers{{&into, 1}, 16}, kOutSize, &stale);
    EXPECT_EQ(sn, sizeof(fuse_out_header));
    EXPECT_EQ(sh.error, -EBADF);
    EXPECT_FALSE(stale.fd);
    // So is any other request.
    DeferredIo none;
    fuse_getattr_in ga{};
    auto [gh, gn] = g().call_with_data(FUSE_GETATTR, Args().add(ga), 0, DataBuffers{}, kOutSize, &none);
    EXPECT_EQ(gh.len, gn);
    EXPECT_GE(gn, sizeof(fuse_out_header));
    EXPECT_FALSE(none.fd);
    EXPECT_EQ(g().release(rfh).error, 0);
}

TEST_F(FuseServerTest, FallocateLseekAndWriteLimits) {
    auto a = g().create(data, "sparse");
    ASSERT_EQ(a.error, 0);
    uint64_t fh = a.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;
    ASSERT_EQ(g().write(fh, 1 << 20, "data").error, 0);
    fuse_lseek_in seek{fh, 0, SEEK_DATA, 0};
    auto s = g().call(FUSE_LSEEK, 0, Args().add(seek));
    ASSERT_EQ(s.error, 0);
    EXPECT_GT(s.as<fuse_lseek_out>().offset, 0u) << "the start is a hole";
    seek.whence = SEEK_SET;
    EXPECT_EQ(g().call(FUSE_LSEEK, 0, Args().add(seek)).error, EINVAL);
    fuse_fallocate_in falloc{fh, 0, 4096, 0, 0};
    EXPECT_EQ(g().call(FUSE_FALLOCATE, 0, Args().add(falloc)).error, 0);
    // WRITE's size must be what follows it, and at most max_write.
    fuse_write_in w{};
    w.fh = fh;
    w.size = 10;
    EXPECT_EQ(g().call(FUSE_WRITE, 0, Args().add(w).raw("short")).error, EINVAL);
    w.size = (1u << 20) + 1;
    EXPECT_EQ(g().call(FUSE_WRITE, 0, Args().add(w).raw(std::string(w.size, 'x'))).error, EINVAL);
}

TEST_F(FuseServerTest, NamespaceOperations) {
    // mkdir, rmdir
    auto d = g().mkdir(data, "dir", 0750);
    ASSERT_EQ(d.error, 0);
    uint64_t dir = d.as<fuse_entry_out>().nodeid;
    EXPECT_TRUE(S_ISDIR(host_lstat(tmp / "data/dir").st_mode));
    EXPECT_EQ(host_lstat(tmp / "data/dir").st_mode & 07777, 0750u);
    EXPECT_EQ(g().mkdir(data, "dir").error, EEXIST);
    write_host_file(tmp / "data/dir/inside", "");
    EXPECT_EQ(g().rmdir(data, "dir").error, ENOTEMPTY);
    EXPECT_EQ(g().unlink(dir, "inside").error, 0);
    EXPECT_EQ(g().unlink(data, "dir").error, EISDIR);
    EXPECT_EQ(g().rmdir(data, "dir").error, 0);
    EXPECT_FALSE(std::filesystem::exists(tmp / "data/dir"));

    // rename, rename2
    write_host_file(tmp / "data/a", "A");
    write_host_file(tmp / "data/b", "B");
    ASSERT_EQ(g().mkdir(data, "sub").error, 0);
    uint64_t sub = g().node(data, "sub");
    EXPECT_EQ(g().rename2(data, "a", data, "b", RENAME_NOREPLACE).error, EEXIST);
    EXPECT_EQ(g().rename2(data, "a", data, "b", RENAME_EXCHANGE).error, 0);
    EXPECT_EQ(read_host_file(tmp / "data/a"), "B");
    EXPECT_EQ(g().rename2(data, "a", data, "c", RENAME_WHITEOUT).error, EINVAL);
    EXPECT_EQ(g().rename2(data, "a", data, "c", 1u << 20).error, EINVAL);
    EXPECT_EQ(g().rename(data, "a", sub, "moved").error, 0);
    EXPECT_EQ(read_host_file(tmp / "data/sub/moved"), "B");
    EXPECT_EQ(g().rename(data, "nothing", data, "x").error, ENOENT);

    // link: the same node, counted once more
    uint64_t b = g().node(data, "b");
    auto l = g().link(b, sub, "b-link");
    ASSERT_EQ(l.error, 0);
    EXPECT_EQ(l.as<fuse_entry_out>().nodeid, b);
    EXPECT_EQ(l.as<fuse_entry_out>().attr.nlink, 2u);
    EXPECT_EQ(host_lstat(tmp / "data/sub/b-link").st_ino, host_lstat(tmp / "data/b").st_ino);
    EXPECT_EQ(g().link(sub, data, "dir-link").error, EPERM);
    g().forget(b, 2);
    EXPECT_EQ(g().getattr(b).error, ESTALE) << "two lookups (LOOKUP and LINK), two forgotten";

    // symlink, readlink: the target is only data
    auto s = g().symlink(data, "link", "../../../etc/passwd");
    ASSERT_EQ(s.error, 0);
    uint64_t link = s.as<fuse_entry_out>().nodeid;
    EXPECT_TRUE(S_ISLNK(s.as<fuse_entry_out>().attr.mode));
    char target[64] = {};
    ASSERT_GT(::readlink((tmp / "data/link").c_str(), target, sizeof target - 1), 0);
    EXPECT_STREQ(target, "../../../etc/passwd");
    auto r = g().readlink(link);
    ASSERT_EQ(r.error, 0);
    EXPECT_EQ(r.text(), "../../../etc/passwd");
    EXPECT_EQ(g().readlink(b).error, ESTALE);
    EXPECT_EQ(g().readlink(sub).error, EINVAL);
    EXPECT_EQ(g().symlink(data, "empty", "").error, EINVAL);
    EXPECT_EQ(g().call(FUSE_SYMLINK, data, Args().name("x").raw("no-nul")).error, EINVAL);
    // A link can be renamed and removed as itself.
    EXPECT_EQ(g().rename(data, "link", sub, "link2").error, 0);
    EXPECT_EQ(g().unlink(sub, "link2").error, 0);
    EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(tmp / "data/sub/link2")));
}

TEST_F(FuseServerTest, SetattrSizeModeOwnerAndTimes) {
    write_host_file(tmp / "data/f", "0123456789");
    uint64_t f = g().node(data, "f");
    fuse_setattr_in in{};
    in.valid = FATTR_SIZE;
    in.size = 4;
    auto a = g().setattr(f, in);
    ASSERT_EQ(a.error, 0);
    EXPECT_EQ(a.as<fuse_attr_out>().attr.size, 4u);
    EXPECT_EQ(read_host_file(tmp / "data/f"), "0123");
    // Through a handle.
    uint64_t fh = g().fh(f, O_RDWR);
    in.valid = FATTR_SIZE | FATTR_FH;
    in.fh = fh;
    in.size = 2;
    EXPECT_EQ(g().setattr(f, in).error, 0);
    EXPECT_EQ(read_host_file(tmp / "data/f"), "01");
    in.fh = fh + 99;
    EXPECT_EQ(g().setattr(f, in).error, EBADF);

    in = {};
    in.valid = FATTR_MODE;
    in.mode = S_IFREG | 0604;
    ASSERT_EQ(g().setattr(f, in).error, 0);
    EXPECT_EQ(host_lstat(tmp / "data/f").st_mode & 07777, 0604u);

    in = {};
    in.valid = FATTR_ATIME | FATTR_MTIME;
    in.atime = 1000000000;
    in.atimensec = 5;
    in.mtime = 1200000000;
    in.mtimensec = 7;
    auto t = g().setattr(f, in);
    ASSERT_EQ(t.error, 0);
    EXPECT_EQ(t.as<fuse_attr_out>().attr.mtime, 1200000000u);
    auto st = host_lstat(tmp / "data/f");
    EXPECT_EQ(st.st_atim.tv_sec, 1000000000);
    EXPECT_EQ(st.st_atim.tv_nsec, 5);
    EXPECT_EQ(st.st_mtim.tv_sec, 1200000000);
    in.valid = FATTR_MTIME | FATTR_MTIME_NOW | FATTR_CTIME;
    ASSERT_EQ(g().setattr(f, in).error, 0);
    EXPECT_GT(host_lstat(tmp / "data/f").st_mtim.tv_sec, 1600000000);
    EXPECT_EQ(host_lstat(tmp / "data/f").st_atim.tv_sec, 1000000000) << "atime untouched";
    in.valid = FATTR_ATIME;
    in.atimensec = 2000000000;
    EXPECT_EQ(g().setattr(f, in).error, EINVAL);

    // A symlink keeps its (nonexistent) mode, and so does its target; its times are its own.
    ASSERT_EQ(::symlink("f", (tmp / "data/l").c_str()), 0);
    uint64_t l = g().node(data, "l");
    in = {};
    in.valid = FATTR_MODE;
    in.mode = 0777;
    EXPECT_EQ(g().setattr(l, in).error, EOPNOTSUPP);
    EXPECT_EQ(host_lstat(tmp / "data/f").st_mode & 07777, 0604u);
    in.valid = FATTR_MTIME;
    in.mtime = 1300000000;
    ASSERT_EQ(g().setattr(l, in).error, 0);
    EXPECT_EQ(host_lstat(tmp / "data/l").st_mtim.tv_sec, 1300000000);
    EXPECT_NE(host_lstat(tmp / "data/f").st_mtim.tv_sec, 1300000000);
    in.valid = FATTR_SIZE;
    EXPECT_EQ(g().setattr(l, in).error, EINVAL);
    EXPECT_EQ(g().setattr(data, in).error, EISDIR);

    if (::geteuid() == 0) {
        in = {};
        in.valid = FATTR_UID | FATTR_GID;
        in.uid = 1234;
        in.gid = 5678;
        ASSERT_EQ(g().setattr(l, in).error, 0);
        EXPECT_EQ(host_lstat(tmp / "data/l").st_uid, 1234u);
        EXPECT_EQ(host_lstat(tmp / "data/f").st_uid, 0u) << "the link, not its target";
    }
}

TEST_F(FuseServerTest, ReaddirPagesThroughAHundredEntriesByOffset) {
    std::set<std::string> expected = {".", ".."};
    for (int i = 0; i < 100; ++i) {
        std::string name = "entry-" + std::to_string(i) + std::string(size_t(i % 7) * 3, 'x');
        write_host_file(tmp / ("data/" + name), "");
        expected.insert(name);
    }
    for (uint32_t size : {64u, 100u, 256u, 4096u}) {
        auto entries = g().list(data, size);
        EXPECT_EQ(entries.size(), expected.size()) << "buffer " << size << ": every entry exactly once";
        EXPECT_EQ(names_of(entries), expected);
    }
    // The reply buffer limits as the request size does.
    auto h = g().opendir(data).as<fuse_open_out>().fh;
    auto small = g().readdir(h, 0, 4096, false, sizeof(fuse_out_header) + 64);
    ASSERT_EQ(small.error, 0);
    EXPECT_LE(small.body.size(), 64u);
    EXPECT_FALSE(small.body.empty());
    EXPECT_EQ(g().read(h, 0, 10).error, EBADF) << "a directory handle is not a file";
    EXPECT_EQ(g().release(h).error, EBADF) << "RELEASE is for files";
    EXPECT_EQ(g().release(h, FUSE_RELEASEDIR).error, 0);
    EXPECT_EQ(server->open_fds(0), 1u);
}

// `rm -rf`: READDIR a page, unlink what it listed (or the first half of it,
// as the guest kernel uses a reply when its caller's buffer fills), READDIR
// on from the last offset used. On tmpfs (and in overlayfs) a directory offset counts entries from
// the start, so seeking to it after removals would skip as many entries and
// leave the directory "not empty". Tried on the test's own file system and on
// /dev/shm (tmpfs) when it is one.
TEST(FuseServerReaddir, RemovingWhatWasListedSkipsNothing) {
    std::vector<std::string> bases = {""};
    struct statfs shm {};
    if (::statfs("/dev/shm", &shm) == 0 && shm.f_type == TMPFS_MAGIC && ::access("/dev/shm", W_OK) == 0)
        bases.push_back("/dev/shm");
    for (const auto& base : bases) {
        TempDir tmp(base);
        ASSERT_EQ(::mkdir((tmp / "data").c_str(), 0755), 0);
        constexpr int kFiles = 300;
        for (int i = 0; i < kFiles; ++i) write_host_file(tmp / ("data/file-" + std::to_string(i)), "");
        auto created = FuseServer::create({{"data", tmp / "data", false}});
        ASSERT_TRUE(created) << created.error().message();
        auto server = created.release_value();
        Guest g(*server);
        ASSERT_EQ(g.init().error, 0);
        uint64_t data = g.node(kRoot, "data");
        for (bool plus : {false, true}) {
            if (plus)
                for (int i = 0; i < kFiles; ++i) write_host_file(tmp / ("data/file-" + std::to_string(i)), "");
            uint64_t handle = g.opendir(data).as<fuse_open_out>().fh;
            uint64_t offset = 0;
            int removed = 0;
            for (int calls = 0; calls < 10000; ++calls) {
                auto a = g.readdir(handle, offset, plus ? 2048 : 512, plus);
                ASSERT_EQ(a.error, 0);
                auto page = Guest::parse_dirents(a.body, plus);
                if (page.empty()) break;
                // As the guest kernel does when its caller's buffer fills: only the first part of the reply
                // is used, and the next READDIR starts after the last entry used.
                if (calls % 2 && page.size() > 2) page.resize(page.size() / 2);
                offset = page.back().off;
                for (const auto& e : page) {
                    if (e.name == "." || e.name == "..") continue;
                    ASSERT_EQ(g.unlink(data, e.name).error, 0) << e.name;
                    ++removed;
                }
            }
            EXPECT_EQ(removed, kFiles) << (base.empty() ? "TMPDIR" : base) << (plus ? ", READDIRPLUS" : ", READDIR");
            EXPECT_EQ(g.release(handle, FUSE_RELEASEDIR).error, 0);
            std::error_code ec;
            EXPECT_TRUE(std::filesystem::is_empty(tmp / "data", ec)) << "entries were skipped";
        }
    }
}

TEST_F(FuseServerTest, ReaddirplusCountsEachEntryAsALookup) {
    for (const char* name : {"a", "b", "c"}) write_host_file(tmp / (std::string("data/") + name), name);
    auto entries = g().list(data, 4096, true);
    ASSERT_EQ(names_of(entries), (std::set<std::string>{".", "..", "a", "b", "c"}));
    EXPECT_EQ(server->open_fds(0), 4u) << "the share and three files";
    for (const auto& e : entries) {
        if (e.name == "." || e.name == "..") {
            EXPECT_EQ(e.node, 0u);
            continue;
        }
        EXPECT_NE(e.node, 0u);
        EXPECT_EQ(g().node(data, e.name), e.node);
        g().forget(e.node, 2);
    }
    EXPECT_EQ(server->open_fds(0), 1u);
    // The root's entries are the shares, looked up.
    auto root = g().list(kRoot, 4096, true);
    ASSERT_EQ(root.size(), 5u);
    EXPECT_EQ(root[2].node, data);
    EXPECT_EQ(root[0].node, 0u);
}

TEST_F(FuseServerTest, NamesThatAreNotOneComponentAreRefused) {
    write_host_file(tmp / "data/f", "");
    // ".." is EINVAL, like every other name that is not one component: the kernel never sends it (no
    // FUSE_EXPORT_SUPPORT), so only a hostile driver does.
    for (const std::string& bad :
         std::vector<std::string>{"..", ".", "a/b", "/etc", "", std::string(256, 'n'), "../outside", "./f"}) {
        EXPECT_EQ(g().lookup(data, bad).error, EINVAL) << bad;
        EXPECT_EQ(g().mkdir(data, bad).error, EINVAL) << bad;
        EXPECT_EQ(g().create(data, bad).error, EINVAL) << bad;
        EXPECT_EQ(g().mknod(data, bad, S_IFREG | 0644).error, EINVAL) << bad;
        EXPECT_EQ(g().symlink(data, bad, "t").error, EINVAL) << bad;
        EXPECT_EQ(g().unlink(data, bad).error, EINVAL) << bad;
        EXPECT_EQ(g().rmdir(data, bad).error, EINVAL) << bad;
        EXPECT_EQ(g().rename(data, "f", data, bad).error, EINVAL) << bad;
        EXPECT_EQ(g().rename(data, bad, data, "g").error, EINVAL) << bad;
        EXPECT_EQ(g().link(g().node(data, "f"), data, bad).error, EINVAL) << bad;
        EXPECT_EQ(g().lookup(kRoot, bad).error, EINVAL) << bad;
    }
    // A NUL inside the name: the bytes after it are not ignored.
    EXPECT_EQ(g().call(FUSE_LOOKUP, data, Args().raw(std::string("f\0/etc/passwd\0", 14))).error, EINVAL);
    EXPECT_EQ(g().call(FUSE_LOOKUP, data, Args().raw(std::string("f\0\0", 3))).error, EINVAL);
    EXPECT_EQ(g().call(FUSE_LOOKUP, data, Args().raw("f")).error, EINVAL) << "no NUL at all";
    EXPECT_EQ(g().call(FUSE_MKDIR, data, Args().add(fuse_mkdir_in{0755, 0}).raw(std::string("d\0x\0", 4))).error,
              EINVAL);
    // The longest name is fine.
    EXPECT_EQ(g().lookup(data, std::string(255, 'n')).error, ENOENT);
    EXPECT_FALSE(std::filesystem::exists(tmp / "outside/g"));
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp / "data"), {}), 1);
}

TEST_F(FuseServerTest, ASymlinkOutIsOnlyALink) {
    ASSERT_EQ(::symlink("/etc", (tmp / "data/x").c_str()), 0);
    ASSERT_EQ(::symlink((tmp / "outside").c_str(), (tmp / "data/out").c_str()), 0);
    auto a = g().lookup(data, "x");
    ASSERT_EQ(a.error, 0);
    uint64_t x = a.as<fuse_entry_out>().nodeid;
    EXPECT_TRUE(S_ISLNK(a.as<fuse_entry_out>().attr.mode));
    EXPECT_EQ(a.as<fuse_entry_out>().attr.ino, host_lstat(tmp / "data/x").st_ino);
    EXPECT_EQ(g().readlink(x).text(), "/etc");
    // Nothing goes through it.
    EXPECT_EQ(g().lookup(x, "passwd").error, ENOTDIR);
    EXPECT_EQ(g().opendir(x).error, ENOTDIR);
    EXPECT_EQ(g().open(x, O_RDONLY).error, EACCES);
    EXPECT_EQ(g().getxattr(x, "user.x", 0).error, EOPNOTSUPP);
    uint64_t out = g().node(data, "out");
    EXPECT_EQ(g().lookup(out, "secret").error, ENOTDIR);
    EXPECT_EQ(g().mkdir(out, "new").error, ENOTDIR);
    EXPECT_EQ(g().create(out, "new").error, ENOTDIR);
    EXPECT_EQ(g().symlink(out, "new", "t").error, ENOTDIR);
    EXPECT_EQ(g().unlink(out, "secret").error, ENOTDIR);
    EXPECT_EQ(g().rename(data, "x", out, "moved").error, ENOTDIR);
    EXPECT_EQ(g().link(x, out, "l").error, ENOTDIR);
    fuse_setattr_in in{};
    in.valid = FATTR_SIZE;
    EXPECT_EQ(g().setattr(out, in).error, EINVAL);
    EXPECT_EQ(read_host_file(tmp / "outside/secret"), "not for the guest");
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp / "outside"), {}), 1);

    // A symlink to a directory inside the share is not a parent either.
    ASSERT_EQ(::mkdir((tmp / "data/real").c_str(), 0755), 0);
    write_host_file(tmp / "data/real/child", "c");
    ASSERT_EQ(::symlink("real", (tmp / "data/alias").c_str()), 0);
    uint64_t alias = g().node(data, "alias");
    EXPECT_EQ(g().lookup(alias, "child").error, ENOTDIR);
    EXPECT_EQ(g().opendir(alias).error, ENOTDIR);
    // A file created as a link's name does not follow it.
    EXPECT_EQ(g().create(data, "out", O_WRONLY | O_CREAT).error, EACCES);
    EXPECT_EQ(g().create(data, "out", O_WRONLY | O_CREAT | O_EXCL).error, EEXIST);
    EXPECT_EQ(g().mkdir(data, "out").error, EEXIST);
}

TEST_F(FuseServerTest, ADirectorySwappedForASymlinkDoesNotLeadOut) {
    ASSERT_EQ(::mkdir((tmp / "data/d").c_str(), 0755), 0);
    write_host_file(tmp / "data/d/inner", "in");
    uint64_t d = g().node(data, "d");
    // The host (or a race) moves the directory out and puts a symlink to `outside` in its place.
    ASSERT_EQ(::rename((tmp / "data/d").c_str(), (tmp / "moved").c_str()), 0);
    ASSERT_EQ(::symlink((tmp / "outside").c_str(), (tmp / "data/d").c_str()), 0);
    // The node is still the directory it was: what is in `outside` is not found through it.
    EXPECT_EQ(g().lookup(d, "secret").error, ENOENT);
    EXPECT_EQ(g().lookup(d, "inner").error, 0);
    EXPECT_EQ(g().create(d, "new").error, 0);
    EXPECT_TRUE(std::filesystem::exists(tmp / "moved/new"));
    EXPECT_FALSE(std::filesystem::exists(tmp / "outside/new"));
    // Looked up again by name, "d" is the link, and nothing resolves through it.
    auto again = g().lookup(data, "d");
    ASSERT_EQ(again.error, 0);
    EXPECT_TRUE(S_ISLNK(again.as<fuse_entry_out>().attr.mode));
    EXPECT_NE(again.as<fuse_entry_out>().nodeid, d);
    EXPECT_EQ(g().lookup(again.as<fuse_entry_out>().nodeid, "secret").error, ENOTDIR);
    // A file swapped for a symlink: its open reaches the file it was, never the link's target.
    write_host_file(tmp / "data/f", "mine");
    uint64_t f = g().node(data, "f");
    ASSERT_EQ(::rename((tmp / "data/f").c_str(), (tmp / "f-moved").c_str()), 0);
    ASSERT_EQ(::symlink((tmp / "outside/secret").c_str(), (tmp / "data/f").c_str()), 0);
    uint64_t fh = g().fh(f, O_RDONLY);
    EXPECT_EQ(g().read(fh, 0, 100).text(), "mine");
}

TEST_F(FuseServerTest, NoDevicesAreMadeAndNoFifoIsOpened) {
    // A FIFO opened on the host would block the VMM's thread: if that ever happens, fail loudly, not hang.
    ::alarm(20);
    EXPECT_EQ(g().mknod(data, "chr", S_IFCHR | 0666, makedev(1, 3)).error, EPERM);
    EXPECT_EQ(g().mknod(data, "blk", S_IFBLK | 0666, makedev(8, 0)).error, EPERM);
    EXPECT_EQ(g().mknod(data, "sock", S_IFSOCK | 0666).error, EPERM);
    EXPECT_EQ(g().mknod(data, "none", 0666).error, EPERM);
    EXPECT_FALSE(std::filesystem::exists(tmp / "data/chr"));
    auto reg = g().mknod(data, "reg", S_IFREG | 0640);
    ASSERT_EQ(reg.error, 0);
    EXPECT_TRUE(S_ISREG(host_lstat(tmp / "data/reg").st_mode));
    auto fifo = g().mknod(data, "fifo", S_IFIFO | 0644);
    ASSERT_EQ(fifo.error, 0);
    EXPECT_TRUE(S_ISFIFO(host_lstat(tmp / "data/fifo").st_mode));
    uint64_t node = fifo.as<fuse_entry_out>().nodeid;
    EXPECT_EQ(g().open(node, O_RDONLY).error, EACCES);
    EXPECT_EQ(g().open(node, O_WRONLY).error, EACCES);
    EXPECT_EQ(g().create(data, "fifo", O_RDONLY | O_CREAT).error, EACCES);
    EXPECT_EQ(g().opendir(node).error, ENOTDIR);
    EXPECT_EQ(g().getxattr(node, "user.x", 0).error, EOPNOTSUPP);
    fuse_setattr_in in{};
    in.valid = FATTR_SIZE;
    EXPECT_EQ(g().setattr(node, in).error, EINVAL);
    EXPECT_EQ(server->open_fds(0), 3u) << "share, reg, fifo: no handle";
    ::alarm(0);
}

TEST_F(FuseServerTest, AReadOnlyShareRefusesEveryChange) {
    uint64_t file = g().node(ro, "file");
    uint64_t sub = g().node(ro, "sub");
    fuse_setattr_in in{};
    in.valid = FATTR_MODE;
    in.mode = 0777;
    EXPECT_EQ(g().setattr(file, in).error, EROFS);
    in.valid = FATTR_SIZE;
    EXPECT_EQ(g().setattr(file, in).error, EROFS);
    EXPECT_EQ(g().mknod(ro, "n", S_IFREG | 0644).error, EROFS);
    EXPECT_EQ(g().mkdir(ro, "n").error, EROFS);
    EXPECT_EQ(g().symlink(ro, "n", "t").error, EROFS);
    EXPECT_EQ(g().link(file, ro, "n").error, EROFS);
    EXPECT_EQ(g().unlink(ro, "file").error, EROFS);
    EXPECT_EQ(g().rmdir(ro, "sub").error, EROFS);
    EXPECT_EQ(g().rename(ro, "file", sub, "n").error, EROFS);
    EXPECT_EQ(g().rename2(ro, "file", ro, "sub", RENAME_EXCHANGE).error, EROFS);
    EXPECT_EQ(g().create(ro, "n").error, EROFS);
    EXPECT_EQ(g().create(ro, "file", O_RDONLY | O_CREAT).error, EROFS);
    EXPECT_EQ(g().open(file, O_WRONLY).error, EROFS);
    EXPECT_EQ(g().open(file, O_RDWR).error, EROFS);
    EXPECT_EQ(g().open(file, O_RDONLY | O_TRUNC).error, EROFS);
    EXPECT_EQ(g().setxattr(file, "user.x", "1").error, EROFS);
    EXPECT_EQ(g().removexattr(file, "user.x").error, EROFS);
    // Reading is fine; a read-only handle neither writes nor allocates.
    uint64_t fh = g().fh(file, O_RDONLY);
    EXPECT_EQ(g().read(fh, 0, 100).text(), "read me");
    EXPECT_EQ(g().write(fh, 0, "x").error, EROFS);
    EXPECT_EQ(g().call(FUSE_FALLOCATE, 0, Args().add(fuse_fallocate_in{fh, 0, 4096, 0, 0})).error, EROFS);
    EXPECT_EQ(names_of(g().list(ro)), (std::set<std::string>{".", "..", "file", "sub"}));
    EXPECT_EQ(read_host_file(tmp / "ro/file"), "read me");
    EXPECT_EQ(host_lstat(tmp / "ro/file").st_mode & 07777, 0644u);
}

TEST_F(FuseServerTest, NothingCrossesBetweenShares) {
    write_host_file(tmp / "data/f", "f");
    uint64_t f = g().node(data, "f");
    EXPECT_EQ(g().rename(data, "f", other, "f").error, EXDEV);
    EXPECT_EQ(g().rename2(data, "f", other, "f", RENAME_NOREPLACE).error, EXDEV);
    EXPECT_EQ(g().rename(data, "f", ro, "f").error, EXDEV);
    EXPECT_EQ(g().link(f, other, "f").error, EXDEV);
    EXPECT_FALSE(std::filesystem::exists(tmp / "other/f"));
    // A handle of one share is not a handle of another node for GETATTR/SETATTR.
    uint64_t fh = g().fh(f, O_RDWR);
    fuse_setattr_in in{};
    in.valid = FATTR_SIZE | FATTR_FH;
    in.fh = fh;
    EXPECT_EQ(g().setattr(other, in).error, EBADF);
}

TEST_F(FuseServerTest, TheFdCapHoldsAndForgetMakesRoom) {
    start({.max_fds_per_share = 8});
    for (int i = 0; i < 10; ++i) write_host_file(tmp / ("data/f" + std::to_string(i)), "x");
    std::vector<uint64_t> nodes;
    for (int i = 0; i < 7; ++i) nodes.push_back(g().node(data, "f" + std::to_string(i)));
    EXPECT_EQ(server->open_fds(0), 8u);
    EXPECT_EQ(g().lookup(data, "f7").error, ENFILE);
    EXPECT_EQ(g().lookup(data, "f0").error, 0) << "a known file needs no new fd";
    EXPECT_EQ(g().open(nodes[0], O_RDONLY).error, ENFILE);
    EXPECT_EQ(g().opendir(data).error, ENFILE);
    EXPECT_EQ(g().create(data, "new").error, ENFILE);
    EXPECT_EQ(g().mkdir(data, "new").error, ENFILE);
    EXPECT_EQ(g().mknod(data, "new", S_IFREG | 0644).error, ENFILE);
    EXPECT_EQ(g().symlink(data, "new", "t").error, ENFILE);
    EXPECT_FALSE(std::filesystem::exists(tmp / "data/new")) << "refused before it is made";
    EXPECT_EQ(server->open_fds(0), 8u);
    // Other shares have their own room.
    EXPECT_EQ(g().mkdir(other, "d").error, 0);
    // FORGET (of every lookup) frees an fd.
    g().forget(nodes[0], 1);
    EXPECT_EQ(server->open_fds(0), 8u) << "f0 was looked up twice";
    g().forget(nodes[0], 1);
    EXPECT_EQ(server->open_fds(0), 7u);
    uint64_t h = g().fh(nodes[1], O_RDONLY);
    EXPECT_EQ(server->open_fds(0), 8u);
    EXPECT_EQ(g().lookup(data, "f7").error, ENFILE);
    EXPECT_EQ(g().release(h).error, 0);
    EXPECT_EQ(g().node(data, "f7") != 0, true);
    // BATCH_FORGET, with a count larger than what was sent: only what was sent counts.
    Args batch;
    batch.add(fuse_batch_forget_in{1000, 0});
    for (int i = 1; i < 4; ++i) batch.add(fuse_forget_one{nodes[size_t(i)], 1});
    EXPECT_FALSE(g().call(FUSE_BATCH_FORGET, 0, batch).replied);
    EXPECT_EQ(server->open_fds(0), 5u);
    // READDIRPLUS never takes the last quarter: entries past it come without a node.
    auto entries = g().list(data, 4096, true);
    EXPECT_EQ(entries.size(), 12u);
    EXPECT_EQ(server->open_fds(0), 5u);
    EXPECT_EQ(std::count_if(entries.begin(), entries.end(), [](const DirEntry& e) { return e.node == 0; }), 2 + 6)
        << "the dots, and the six files without a node";
}

TEST_F(FuseServerTest, XattrsUserRoundTripNoTrusted) {
    write_host_file(tmp / "data/f", "");
    if (::setxattr((tmp / "data/f").c_str(), "user.probe", "1", 1, 0) < 0)
        GTEST_SKIP() << "no user xattrs on " << tmp.path() << ": " << errno_text(errno);
    ASSERT_EQ(::removexattr((tmp / "data/f").c_str(), "user.probe"), 0);
    uint64_t f = g().node(data, "f");
    EXPECT_EQ(g().setxattr(f, "trusted.overlay.opaque", "y").error, EPERM);
    EXPECT_EQ(g().getxattr(f, "trusted.x", 0).error, EPERM);
    EXPECT_EQ(g().removexattr(f, "trusted.x").error, EPERM);

    ASSERT_EQ(g().setxattr(f, "user.color", "blue").error, 0);
    EXPECT_EQ(g().setxattr(f, "user.color", "red", XATTR_CREATE).error, EEXIST);
    EXPECT_EQ(g().setxattr(f, "user.other", "red", XATTR_REPLACE).error, ENODATA);
    EXPECT_EQ(g().setxattr(f, "user.x", "1", 0x100).error, EINVAL);
    auto size = g().getxattr(f, "user.color", 0);
    ASSERT_EQ(size.error, 0);
    EXPECT_EQ(size.as<fuse_getxattr_out>().size, 4u);
    EXPECT_EQ(g().getxattr(f, "user.color", 100).text(), "blue");
    EXPECT_EQ(g().getxattr(f, "user.color", 3).error, ERANGE);
    EXPECT_EQ(g().getxattr(f, "user.none", 100).error, ENODATA);
    EXPECT_EQ(g().getxattr(f, std::string(256, 'x'), 100).error, ERANGE);
    char host[16] = {};
    EXPECT_EQ(::getxattr((tmp / "data/f").c_str(), "user.color", host, sizeof host), 4);
    // A directory's too.
    ASSERT_EQ(g().setxattr(data, "user.dir", "d").error, 0);
    EXPECT_EQ(g().getxattr(data, "user.dir", 10).text(), "d");
    ASSERT_EQ(g().removexattr(data, "user.dir").error, 0);

    // The list leaves trusted.* out (set on the host by its root).
    bool trusted = ::setxattr((tmp / "data/f").c_str(), "trusted.secret", "s", 1, 0) == 0;
    auto list_size = g().listxattr(f, 0);
    ASSERT_EQ(list_size.error, 0);
    EXPECT_EQ(list_size.as<fuse_getxattr_out>().size, sizeof("user.color"));
    auto list = g().listxattr(f, 100);
    ASSERT_EQ(list.error, 0);
    EXPECT_EQ(list.text(), std::string("user.color\0", 11));
    EXPECT_EQ(g().listxattr(f, 5).error, ERANGE);
    if (trusted) {
        EXPECT_EQ(g().getxattr(f, "trusted.secret", 10).error, EPERM);
    }

    ASSERT_EQ(g().removexattr(f, "user.color").error, 0);
    EXPECT_EQ(g().getxattr(f, "user.color", 10).error, ENODATA);
    EXPECT_EQ(g().removexattr(f, "user.color").error, ENODATA);
    // Oversized values and sizes that do not match the bytes sent.
    EXPECT_EQ(g().setxattr(f, "user.big", std::string(65537, 'x')).error, E2BIG);
    EXPECT_EQ(g().call(FUSE_SETXATTR, f, Args().add(uint32_t(10)).add(uint32_t(0)).name("user.x").raw("abc")).error,
              EINVAL);
}

TEST_F(FuseServerTest, CreatedFilesBelongToTheCaller) {
    if (::geteuid() != 0) GTEST_SKIP() << "giving files away needs root (CAP_CHOWN)";
    ::umask(077);  // the host's umask must not apply: the guest applied its own
    g().uid = 1234;
    g().gid = 5678;
    ASSERT_EQ(g().create(data, "file", O_RDWR | O_CREAT, 0664).error, 0);
    ASSERT_EQ(g().mkdir(data, "dir", 0775).error, 0);
    ASSERT_EQ(g().symlink(data, "link", "file").error, 0);
    ASSERT_EQ(g().mknod(data, "fifo", S_IFIFO | 0660).error, 0);
    ASSERT_EQ(g().mknod(data, "reg", S_IFREG | 0606).error, 0);
    for (const char* name : {"file", "dir", "link", "fifo", "reg"}) {
        auto st = host_lstat(tmp / (std::string("data/") + name));
        EXPECT_EQ(st.st_uid, 1234u) << name;
        EXPECT_EQ(st.st_gid, 5678u) << name;
    }
    EXPECT_EQ(host_lstat(tmp / "data/file").st_mode & 07777, 0664u);
    EXPECT_EQ(host_lstat(tmp / "data/dir").st_mode & 07777, 0775u);
    EXPECT_EQ(host_lstat(tmp / "data/fifo").st_mode & 07777, 0660u);
    EXPECT_EQ(host_lstat(tmp / "data/reg").st_mode & 07777, 0606u);
    // The entry reply says so too.
    auto entry = g().lookup(data, "file").as<fuse_entry_out>();
    EXPECT_EQ(entry.attr.uid, 1234u);

    // Under a set-group-ID directory: its group; a new directory keeps the bit; a file in a group not the
    // caller's loses set-group-ID.
    ASSERT_EQ(::mkdir((tmp / "data/shared").c_str(), 0775), 0);
    ASSERT_EQ(::chown((tmp / "data/shared").c_str(), 0, 4242), 0);
    ASSERT_EQ(::chmod((tmp / "data/shared").c_str(), 02775), 0);
    uint64_t shared = g().node(data, "shared");
    ASSERT_EQ(g().create(shared, "f", O_RDWR | O_CREAT, 02755).error, 0);
    ASSERT_EQ(g().mkdir(shared, "d", 0755).error, 0);
    auto f = host_lstat(tmp / "data/shared/f");
    EXPECT_EQ(f.st_gid, 4242u);
    EXPECT_EQ(f.st_mode & 07777, 0755u);
    auto d = host_lstat(tmp / "data/shared/d");
    EXPECT_EQ(d.st_gid, 4242u);
    EXPECT_EQ(d.st_mode & 07777, 02755u);
    // In the caller's own group a set-group-ID file keeps it.
    g().gid = 4242;
    ASSERT_EQ(g().create(shared, "g", O_RDWR | O_CREAT, 02755).error, 0);
    EXPECT_EQ(host_lstat(tmp / "data/shared/g").st_mode & 07777, 02755u);
    ::umask(022);
}

TEST_F(FuseServerTest, MalformedRequestsGetEinvalAndNeverCrash) {
    auto raw = [&](std::vector<uint8_t> in, size_t out_size, int* error = nullptr) {
        std::vector<uint8_t> out(out_size);
        size_t n = server->handle(in, out);
        EXPECT_LE(n, out_size);
        if (n >= sizeof(fuse_out_header) && error) {
            fuse_out_header h{};
            std::memcpy(&h, out.data(), sizeof h);
            EXPECT_EQ(h.len, n);
            *error = -h.error;
        }
        return n;
    };
    auto header = [](uint32_t opcode, uint32_t len, uint64_t node = FUSE_ROOT_ID) {
        std::vector<uint8_t> in(sizeof(fuse_in_header));
        fuse_in_header h{};
        h.len = len;
        h.opcode = opcode;
        h.unique = 77;
        h.nodeid = node;
        std::memcpy(in.data(), &h, sizeof h);
        return in;
    };
    int error = 0;
    // Shorter than a header.
    EXPECT_EQ(raw({1, 2, 3}, 4096, &error), sizeof(fuse_out_header));
    EXPECT_EQ(error, EINVAL);
    EXPECT_EQ(raw({}, 4096, &error), sizeof(fuse_out_header));
    // len that is not the request's size.
    auto in = header(FUSE_GETATTR, 1000);
    in.resize(sizeof(fuse_in_header) + sizeof(fuse_getattr_in));
    EXPECT_EQ(raw(in, 4096, &error), sizeof(fuse_out_header));
    EXPECT_EQ(error, EINVAL);
    in = header(FUSE_GETATTR, 10);
    in.resize(sizeof(fuse_in_header) + sizeof(fuse_getattr_in));
    raw(in, 4096, &error);
    EXPECT_EQ(error, EINVAL);
    // Arguments too short.
    in = header(FUSE_GETATTR, sizeof(fuse_in_header) + 4);
    in.resize(sizeof(fuse_in_header) + 4);
    raw(in, 4096, &error);
    EXPECT_EQ(error, EINVAL);
    // No room for a header: no reply at all; room for a header but not the reply: EINVAL, nothing counted.
    in = header(FUSE_LOOKUP, sizeof(fuse_in_header) + 5, data);
    in.insert(in.end(), {'f', 'i', 'l', 'e', 0});
    write_host_file(tmp / "data/file", "");
    EXPECT_EQ(raw(in, 8), 0u);
    EXPECT_EQ(raw(in, sizeof(fuse_out_header) + 10, &error), sizeof(fuse_out_header));
    EXPECT_EQ(error, EINVAL);
    EXPECT_EQ(server->open_fds(0), 1u);
    EXPECT_EQ(raw(in, 4096, &error), sizeof(fuse_out_header) + sizeof(fuse_entry_out));
    EXPECT_EQ(error, 0);
    // Unknown and unimplemented opcodes.
    for (uint32_t opcode : {0u, 7u, 19u, uint32_t(FUSE_ACCESS), uint32_t(FUSE_GETLK), uint32_t(FUSE_SETLK),
                            uint32_t(FUSE_SETLKW), uint32_t(FUSE_IOCTL), uint32_t(FUSE_POLL), uint32_t(FUSE_BMAP),
                            uint32_t(FUSE_COPY_FILE_RANGE), uint32_t(FUSE_SETUPMAPPING), uint32_t(FUSE_REMOVEMAPPING),
                            uint32_t(FUSE_SYNCFS), uint32_t(FUSE_TMPFILE), 4096u, 0xffffffffu}) {
        in = header(opcode, sizeof(fuse_in_header));
        raw(in, 4096, &error);
        EXPECT_EQ(error, ENOSYS) << opcode;
    }
    // No reply for FORGET, BATCH_FORGET and INTERRUPT, well-formed or not.
    for (uint32_t opcode : {FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT}) {
        EXPECT_EQ(raw(header(opcode, sizeof(fuse_in_header)), 4096), 0u);
        EXPECT_EQ(raw(header(opcode, 12345), 4096), 0u);
    }

    // Random requests: valid headers, random opcodes, nodes, handles and arguments.
    std::mt19937_64 rng(1234);
    for (int i = 0; i < 20000; ++i) {
        uint32_t opcode = uint32_t(rng() % 52);
        size_t size = rng() % 300;
        std::vector<uint8_t> req(sizeof(fuse_in_header) + size);
        for (auto& b : req) b = uint8_t(rng());
        // Mostly small numbers, so that nodes and handles are sometimes real.
        for (size_t at = sizeof(fuse_in_header); at + 8 <= req.size(); at += 8)
            if (rng() % 2) {
                uint64_t small = rng() % 8;
                std::memcpy(req.data() + at, &small, 8);
            }
        fuse_in_header h{};
        std::memcpy(&h, req.data(), sizeof h);
        h.len = uint32_t(req.size());
        // Not INIT or DESTROY (they would only end the session), nor FALLOCATE (it would fill the disk).
        bool skip = opcode == FUSE_INIT || opcode == FUSE_DESTROY || opcode == FUSE_FALLOCATE;
        h.opcode = skip ? uint32_t(FUSE_GETATTR) : opcode;
        h.nodeid = rng() % 3 ? rng() % 8 : rng();
        std::memcpy(req.data(), &h, sizeof h);
        raw(req, size_t(rng() % 2 ? 4096 : rng() % 200));
    }
    // Nothing escaped: the neighbours are untouched.
    EXPECT_EQ(read_host_file(tmp / "outside/secret"), "not for the guest");
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp / "outside"), {}), 1);
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp.path()), {}), 4);
}

TEST_F(FuseServerTest, ResetAndDestroyCloseEverything) {
    write_host_file(tmp / "data/f", "x");
    uint64_t f = g().node(data, "f");
    uint64_t fh = g().fh(f, O_RDONLY);
    uint64_t dh = g().opendir(data).as<fuse_open_out>().fh;
    uint64_t rh = g().opendir(kRoot).as<fuse_open_out>().fh;
    (void)rh;
    EXPECT_EQ(server->open_fds(0), 4u);
    EXPECT_EQ(server->open_fds(1), 1u);
    server->reset();
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(server->open_fds(i), 0u);
    EXPECT_EQ(server->open_fds(99), 0u);
    EXPECT_EQ(g().getattr(kRoot).error, EIO) << "INIT first";
    ASSERT_EQ(g().init().error, 0);
    EXPECT_EQ(g().getattr(f).error, ESTALE);
    EXPECT_EQ(g().read(fh, 0, 1).error, EBADF);
    EXPECT_EQ(g().readdir(dh, 0).error, EBADF);

    // DESTROY (unmount) ends the session the same way.
    data = g().node(kRoot, "data");
    g().fh(g().node(data, "f"), O_RDONLY);
    EXPECT_EQ(server->open_fds(0), 3u);
    auto destroyed = g().call(FUSE_DESTROY, 0);
    EXPECT_TRUE(destroyed.replied);
    EXPECT_EQ(destroyed.error, 0);
    EXPECT_EQ(server->open_fds(0), 0u);
    EXPECT_EQ(g().lookup(kRoot, "data").error, EIO);
}

}  // namespace
}  // namespace husk::virtio::fs
