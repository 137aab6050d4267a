// FUSE requests from a hostile virtio-fs driver, against a real directory
// tree: a read-write share, a read-only share, and beside them a directory no
// request may reach (a symlink in the share points at it). Any change there,
// or in the read-only share, is an escape and aborts.
//
// Input: one byte of options (bit 0: the harness sends a well-formed INIT
// first; bit 1: a cap of 8 fds per share instead of 64; bit 2: READ and WRITE
// get their data in separate buffers, as the device passes them; bit 3: with
// bit 2, their I/O left to the harness, as the device leaves it to its io_uring), then records of
//   u16 in_len, u16 out (bit 15: keep the request's own fuse_in_header.len,
//   else it is set to in_len; bits 0-14: the reply buffer's size), in_len bytes.
// Every input gets a fresh tree and a fresh server, so a crash reproduces.
#include <dirent.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "vmm/devices/virtio/fs/fuse_server.h"

namespace {

std::string base_dir() {
    static std::string base = [] {
        const char* tmp = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe): one thread
        std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/husk-fuse-fuzz-XXXXXX";
        if (!::mkdtemp(tmpl.data())) std::abort();
        return tmpl;
    }();
    static bool cleanup = [] {
        std::atexit([] {
            std::error_code ec;
            std::filesystem::remove_all(base, ec);
        });
        return true;
    }();
    (void)cleanup;
    return base;
}

void write_file(const std::string& path, const std::string& text) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ::write(fd, text.data(), text.size()) != ssize_t(text.size())) std::abort();
    ::close(fd);
}

std::string read_file(const std::string& path) {
    char buf[64] = {};
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return "<missing>";
    ssize_t n = ::read(fd, buf, sizeof buf);
    ::close(fd);
    return std::string(buf, n > 0 ? size_t(n) : 0);
}

size_t entries(const std::string& dir) {
    std::error_code ec;
    size_t n = 0;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) ++n;
    return n;
}

// What must never change: `outside` (one canary file) and the read-only share (a file and a directory).
void make_fixed_tree() {
    static bool made = false;
    if (made) return;
    made = true;
    std::string base = base_dir();
    if (::mkdir((base + "/outside").c_str(), 0755) < 0 || ::mkdir((base + "/ro").c_str(), 0755) < 0 ||
        ::mkdir((base + "/ro/sub").c_str(), 0755) < 0)
        std::abort();
    write_file(base + "/outside/canary", "canary");
    write_file(base + "/ro/file", "read-only");
}

void check_walls() {
    std::string base = base_dir();
    if (read_file(base + "/outside/canary") != "canary" || entries(base + "/outside") != 1 ||
        read_file(base + "/ro/file") != "read-only" || entries(base + "/ro") != 2 || entries(base + "/ro/sub") != 0) {
        std::fprintf(stderr, "fuse_request_fuzz: a request reached outside its share\n");
        std::abort();
    }
}

// The read-write share, fresh for every input.
std::string make_share() {
    std::string base = base_dir();
    std::string share = base + "/share-XXXXXX";
    if (!::mkdtemp(share.data())) std::abort();
    write_file(share + "/f", "hello, fuzzer");
    if (::mkdir((share + "/d").c_str(), 0755) < 0 || ::symlink("../outside", (share + "/l").c_str()) < 0 ||
        ::symlink((base + "/outside/canary").c_str(), (share + "/abs").c_str()) < 0 ||
        ::mkfifo((share + "/p").c_str(), 0644) < 0)
        std::abort();
    write_file(share + "/d/g", "g");
    return share;
}

void remove_share(const std::string& share) {
    std::error_code ec;
    // A request may have left a directory without permissions (matters when not run as root).
    for (std::filesystem::recursive_directory_iterator it(share, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_directory(ec) && !it->is_symlink(ec)) ::chmod(it->path().c_str(), 0700);
    ::chmod(share.c_str(), 0700);
    std::filesystem::remove_all(share, ec);
}

uint16_t u16(const uint8_t* p) {
    return uint16_t(p[0] | (p[1] << 8));
}

// A READ or WRITE the way the device does it (bit 3): left to the caller, which does the I/O on the duplicate
// fd it is given, then asks for the reply. Nothing handed over may exceed the data given.
void deferred(husk::virtio::fs::FuseServer& server, std::span<const uint8_t> in, std::span<uint8_t> out,
              const husk::virtio::fs::DataBuffers& data, size_t bytes) {
    using namespace husk::virtio::fs;
    DeferredIo io;
    size_t n = server.handle(in, out, data, io);
    if (!io.fd) {
        if (n > out.size()) std::abort();
        return;
    }
    if (n != 0) std::abort();
    size_t handed = 0;
    for (const auto& v : io.iov) handed += v.iov_len;
    if (handed > bytes) std::abort();
    ssize_t r = io.write ? ::pwritev(io.fd.get(), io.iov.data(), int(io.iov.size()), off_t(io.offset))
                         : ::preadv(io.fd.get(), io.iov.data(), int(io.iov.size()), off_t(io.offset));
    std::array<uint8_t, FuseServer::kDeferredReplyRoom> reply{};
    size_t len = FuseServer::complete(io, r < 0 ? -errno : int(r), reply);
    fuse_out_header h{};
    std::memcpy(&h, reply.data(), sizeof h);
    if (len < sizeof h || h.len != len || h.error > 0 || (!io.write && len > sizeof h + handed) || io.fd) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace husk::virtio::fs;
    if (size < 1) return 0;
    make_fixed_tree();
    uint8_t options = data[0];
    data += 1;
    size -= 1;

    std::string share = make_share();
    ServerLimits limits;
    limits.max_fds_per_share = (options & 2) ? 8 : 64;
    limits.max_write = 64 << 10;
    auto server =
        FuseServer::create({{"share", share, false}, {"ro", base_dir() + "/ro", true}}, limits).release_value();

    std::vector<uint8_t> in, out;
    if (options & 1) {
        in.assign(sizeof(fuse_in_header) + sizeof(fuse_init_in), 0);
        fuse_in_header h{};
        h.len = uint32_t(in.size());
        h.opcode = FUSE_INIT;
        h.unique = 1;
        fuse_init_in init{};
        init.major = FUSE_KERNEL_VERSION;
        init.minor = FUSE_KERNEL_MINOR_VERSION;
        init.flags = 0xffffffffu;
        std::memcpy(in.data(), &h, sizeof h);
        std::memcpy(in.data() + sizeof h, &init, sizeof init);
        out.assign(4096, 0);
        if (server->handle(in, out) != sizeof(fuse_out_header) + sizeof(fuse_init_out)) std::abort();
    }
    while (size >= 4) {
        size_t in_len = std::min<size_t>(u16(data), size - 4);
        uint16_t out_field = u16(data + 2);
        in.assign(data + 4, data + 4 + in_len);
        data += 4 + in_len;
        size -= 4 + in_len;
        if (!(out_field & 0x8000) && in.size() >= sizeof(uint32_t)) {
            uint32_t len = uint32_t(in.size());
            std::memcpy(in.data(), &len, sizeof len);
        }
        // FALLOCATE could fill the disk: at most 1 MiB per request here.
        if (in.size() >= sizeof(fuse_in_header) + sizeof(fuse_fallocate_in)) {
            fuse_in_header h{};
            std::memcpy(&h, in.data(), sizeof h);
            if (h.opcode == FUSE_FALLOCATE) {
                fuse_fallocate_in f{};
                std::memcpy(&f, in.data() + sizeof h, sizeof f);
                f.length %= 1 << 20;
                f.offset %= 1ull << 30;
                std::memcpy(in.data() + sizeof h, &f, sizeof f);
            }
        }
        out.assign(out_field & 0x7fff, 0xa5);
        fuse_in_header head{};
        if (in.size() >= sizeof head) std::memcpy(&head, in.data(), sizeof head);
        constexpr size_t kWriteHead = sizeof(fuse_in_header) + sizeof(fuse_write_in);
        if ((options & 4) && head.opcode == FUSE_WRITE && in.size() > kWriteHead) {
            // The data in two pieces beside the request, as the device splits a WRITE.
            size_t bytes = in.size() - kWriteHead, half = bytes / 2;
            iovec pieces[] = {{in.data() + kWriteHead, half}, {in.data() + kWriteHead + half, bytes - half}};
            if (options & 8) {
                deferred(*server, std::span(in).first(kWriteHead), out, DataBuffers{pieces, bytes}, bytes);
                continue;
            }
            size_t n = server->handle(std::span(in).first(kWriteHead), out, DataBuffers{pieces, bytes});
            if (n > out.size()) std::abort();
            continue;
        }
        if ((options & 4) && head.opcode == FUSE_READ && out.size() > sizeof(fuse_out_header)) {
            // The out-header alone in `out`, the data in two pieces after it.
            std::vector<uint8_t> room(out.size() - sizeof(fuse_out_header));
            size_t half = room.size() / 2;
            iovec pieces[] = {{room.data(), half}, {room.data() + half, room.size() - half}};
            if (options & 8) {
                deferred(*server, in, std::span(out).first(sizeof(fuse_out_header)), DataBuffers{pieces, room.size()},
                         room.size());
                continue;
            }
            size_t n =
                server->handle(in, std::span(out).first(sizeof(fuse_out_header)), DataBuffers{pieces, room.size()});
            if (n > out.size()) std::abort();
            if (n) {
                fuse_out_header h{};
                std::memcpy(&h, out.data(), sizeof h);
                if (h.len != n || h.error > 0 || (h.error && n != sizeof h)) std::abort();
            }
            continue;
        }
        size_t n = server->handle(in, out);
        if (n > out.size()) std::abort();
        if (n) {
            fuse_out_header h{};
            if (n < sizeof h) std::abort();
            std::memcpy(&h, out.data(), sizeof h);
            if (h.len != n || h.error > 0 || h.error < -4095 || (h.error && n != sizeof h)) std::abort();
        }
    }
    server.reset();
    remove_share(share);
    check_walls();
    return 0;
}
