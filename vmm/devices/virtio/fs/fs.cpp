#include "vmm/devices/virtio/fs/fs.h"

#include <cstring>

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

void Fs::serve(Queue& queue) {
    const GuestMemory& mem = *m_ctx.memory;
    bool used = false;
    for (;;) {
        auto next = queue.pop(mem);
        if (next.is_error()) return m_ctx.fail(next.error());
        if (!next.value()) break;
        const DescriptorChain& chain = *next.value();
        // The request: every device-readable byte, in order (§5.11.6: the FUSE
        // in-header and arguments, then a WRITE's data).
        // A request over the limit is cut there: its length field then
        // disagrees with what arrived, and the server answers EINVAL.
        uint64_t in_len = std::min<uint64_t>(chain.readable_bytes(), kMaxMessage);
        std::span<uint8_t> in(m_in.get(), in_len);
        size_t at = 0;
        for (const auto& b : chain.buffers()) {
            if (b.device_writable || at == in_len) continue;
            size_t take = std::min<size_t>(b.len, in_len - at);
            if (auto r = mem.read(b.addr, in.subspan(at, take)); r.is_error()) return m_ctx.fail(r.error());
            at += take;
        }
        std::span<uint8_t> out(m_out.get(), std::min<uint64_t>(chain.writable_bytes(), kMaxMessage));
        size_t reply = m_server->handle(in, out);
        uint32_t written = reply ? write_to_chain(mem, chain, out.first(reply)) : 0;
        if (auto r = queue.add_used(mem, chain.head(), written); r.is_error()) return m_ctx.fail(r.error());
        ++m_requests;
        used = true;
    }
    if (used) notify_if_wanted(queue, m_ctx);
}

}  // namespace husk::virtio
