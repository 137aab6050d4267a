#include "vmm/devices/virtio/fs/fs.h"

#include <linux/fuse.h>
#include <sys/uio.h>

#include <array>
#include <climits>
#include <cstring>
#include <vector>

#include "vmm/io/event_loop.h"

namespace husk::virtio {
namespace {

// §5.11.4 configuration layout.
struct [[gnu::packed]] FsConfig {
    char tag[36];
    uint32_t num_request_queues;
};
static_assert(sizeof(FsConfig) == 40);

}  // namespace

Result<std::unique_ptr<Fs>> Fs::create(std::vector<fs::ShareOptions> shares) {
    auto server = TRY(fs::FuseServer::create(std::move(shares)).context("virtio-fs"));
    return std::unique_ptr<Fs>(new Fs(std::move(server)));
}

void Fs::read_config(uint64_t offset, std::span<uint8_t> data) const {
    FsConfig c{};
    std::memcpy(c.tag, kTag, std::strlen(kTag));
    c.num_request_queues = 1;
    read_config_bytes(std::span(reinterpret_cast<const uint8_t*>(&c), sizeof c), offset, data);
}

Result<void> Fs::activate(uint64_t, std::span<Queue> queues, DeviceContext ctx) {
    if (queues.size() < 2 || !queues[1].ready()) return Error::from_string("virtio-fs: request queue not ready");
    m_queues = queues;
    m_ctx = std::move(ctx);
    return {};
}

void Fs::reset() {
    m_queues = {};
    ++m_generation;
    m_server->reset();
}

void Fs::restored() {
    m_server->reset();
}

void Fs::queue_notify(size_t index) {
    if (index >= m_queues.size() || !m_queues[index].ready()) return;
    if (!m_ctx.loop->on_loop_thread()) {
        // Activation on a vCPU thread with requests already queued: the file
        // system calls belong to the event loop (its seccomp list has them).
        auto r = m_ctx.loop->submit([](io_uring_sqe* sqe) { io_uring_prep_nop(sqe); },
                                    [this, index, gen = m_generation](int) {
                                        std::lock_guard guard(*m_ctx.lock);
                                        if (gen == m_generation) queue_notify(index);
                                    });
        if (r.is_error()) m_ctx.fail(r.error());
        return;
    }
    serve(m_queues[index]);
}

namespace {

// The chain's device-readable (or, with `writable`, device-writable) bytes
// from `skip` on, at most `limit`, as host iovecs. Writable ones come through
// writable_slice, which records them as written for a reset.
std::vector<iovec> guest_iov(const GuestMemory& mem, const DescriptorChain& chain, bool writable, uint64_t skip,
                             uint64_t limit) {
    std::vector<iovec> out;
    for (const auto& b : chain.buffers()) {
        if (b.device_writable != writable) continue;
        uint64_t addr = b.addr, len = b.len;
        uint64_t s = std::min(skip, len);
        addr += s;
        len -= s;
        skip -= s;
        len = std::min(len, limit);
        if (len == 0) continue;
        limit -= len;
        // Checked when the chain was popped: these cannot fail.
        uint8_t* base = writable ? mem.writable_slice(addr, len).value().data()
                                 : const_cast<uint8_t*>(mem.slice(addr, len).value().data());
        out.push_back({base, size_t(len)});
    }
    return out;
}

size_t total(const std::vector<iovec>& iov) {
    size_t n = 0;
    for (const auto& v : iov) n += v.iov_len;
    return n;
}

}  // namespace

struct Fs::InFlight {
    InFlight(fs::DeferredIo deferred, DescriptorChain request) : io(std::move(deferred)), chain(std::move(request)) {}
    fs::DeferredIo io;
    DescriptorChain chain;
};

void Fs::serve(Queue& queue) {
    const GuestMemory& mem = *m_ctx.memory;
    constexpr size_t kWriteHead = sizeof(fuse_in_header) + sizeof(fuse_write_in);
    bool used = false;
    for (;;) {
        auto next = queue.pop(mem);
        if (next.is_error()) return m_ctx.fail(next.error());
        if (!next.value()) break;
        DescriptorChain& chain = *next.value();
        // The request (§5.11.6): the device-readable bytes are the FUSE
        // in-header and arguments, then a WRITE's data; the device-writable
        // ones take the out-header, then the reply's arguments or a READ's
        // data. A READ's and a WRITE's data stay in the guest's buffers: the
        // host kernel moves them (fs::DataBuffers).
        // A request over the limit is cut there: its length field then
        // disagrees with what arrived, and the server answers EINVAL.
        uint64_t readable = std::min<uint64_t>(chain.readable_bytes(), kMaxMessage);
        uint64_t writable = std::min<uint64_t>(chain.writable_bytes(), kMaxMessage);
        fuse_in_header header{};
        uint32_t opcode = 0;
        if (readable >= sizeof header) {
            auto head = guest_iov(mem, chain, false, 0, sizeof header);
            size_t at = 0;
            for (const auto& v : head) {
                std::memcpy(reinterpret_cast<uint8_t*>(&header) + at, v.iov_base, v.iov_len);
                at += v.iov_len;
            }
            opcode = header.opcode;
        }
        std::vector<iovec> data;
        uint64_t in_len = readable, out_len = writable;
        if (opcode == FUSE_WRITE && readable > kWriteHead) {
            data = guest_iov(mem, chain, false, kWriteHead, readable - kWriteHead);
            in_len = kWriteHead;
        } else if (opcode == FUSE_READ && writable > sizeof(fuse_out_header)) {
            data = guest_iov(mem, chain, true, sizeof(fuse_out_header), writable - sizeof(fuse_out_header));
            out_len = sizeof(fuse_out_header);
        }
        if (data.size() > IOV_MAX) {  // more buffers than one call takes: copied instead
            data.clear();
            in_len = readable;
            out_len = writable;
        }
        std::span<uint8_t> in(m_in.get(), in_len);
        size_t at = 0;
        for (const auto& v : guest_iov(mem, chain, false, 0, in_len)) {
            std::memcpy(in.data() + at, v.iov_base, v.iov_len);
            at += v.iov_len;
        }
        std::span<uint8_t> out(m_out.get(), out_len);
        fs::DataBuffers buffers{data, total(data)};
        fs::DeferredIo io;
        size_t reply = m_server->handle(in, out, buffers, io);
        if (io.fd) {
            submit(queue, std::make_shared<InFlight>(std::move(io), std::move(chain)));
            continue;
        }
        // With a READ's data in place, only the out-header is in `out`; the rest is already in the guest.
        uint32_t written = reply ? write_to_chain(mem, chain, out.first(std::min<size_t>(reply, out.size()))) : 0;
        if (reply > out.size()) written = uint32_t(reply);
        if (auto r = queue.add_used(mem, chain.head(), written); r.is_error()) return m_ctx.fail(r.error());
        ++m_requests;
        used = true;
    }
    if (used) notify_if_wanted(queue, m_ctx);
}

void Fs::submit(Queue& queue, std::shared_ptr<InFlight> op) {
    ++m_in_flight;
    auto r = m_ctx.loop->submit(
        [op](io_uring_sqe* sqe) {
            auto& io = op->io;
            if (io.write)
                io_uring_prep_writev(sqe, io.fd.get(), io.iov.data(), unsigned(io.iov.size()), io.offset);
            else
                io_uring_prep_readv(sqe, io.fd.get(), io.iov.data(), unsigned(io.iov.size()), io.offset);
        },
        [this, &queue, op, gen = m_generation](int result) {
            std::lock_guard guard(*m_ctx.lock);
            --m_in_flight;
            if (gen != m_generation || m_queues.empty()) return;  // reset meanwhile: the duplicate fd closes with op
            finish(queue, *op, result);
            schedule_notify(queue);
        });
    if (r.is_error()) {
        --m_in_flight;
        finish(queue, *op, -EIO);
        notify_if_wanted(queue, m_ctx);
    }
}

void Fs::finish(Queue& queue, InFlight& op, int result) {
    const GuestMemory& mem = *m_ctx.memory;
    std::array<uint8_t, fs::FuseServer::kDeferredReplyRoom> out{};
    size_t reply = fs::FuseServer::complete(op.io, result, out);
    // A READ's data are in the guest's buffers already, right after the out-header: only the header is written
    // here, and the used length counts the data with it.
    size_t head = op.io.write ? reply : std::min(reply, sizeof(fuse_out_header));
    uint32_t written = write_to_chain(mem, op.chain, std::span(out).first(std::min(head, out.size())));
    if (!op.io.write) written = uint32_t(reply);
    if (auto r = queue.add_used(mem, op.chain.head(), written); r.is_error()) return m_ctx.fail(r.error());
    ++m_requests;
}

void Fs::schedule_notify(Queue& queue) {
    // Completions reaped together are told to the guest with one interrupt, once the loop has run them all.
    if (m_notify_scheduled) return;
    m_notify_scheduled = true;
    m_ctx.loop->defer([this, &queue, gen = m_generation] {
        std::lock_guard guard(*m_ctx.lock);
        m_notify_scheduled = false;
        if (gen != m_generation || m_queues.empty()) return;
        notify_if_wanted(queue, m_ctx);
    });
}

}  // namespace husk::virtio
