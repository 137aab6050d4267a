#include "vmm/devices/virtio/rng/rng.h"

#include <sys/random.h>

#include <cerrno>

namespace husk::virtio {

Result<void> Rng::activate(uint64_t, std::span<Queue> queues, DeviceContext ctx) {
    if (queues.empty() || !queues[0].ready()) return Error::from_string("virtio-rng: request queue not ready");
    m_queue = &queues[0];
    m_ctx = std::move(ctx);
    return {};
}

void Rng::queue_notify(size_t) {
    if (!m_queue) return;
    const GuestMemory& mem = *m_ctx.memory;
    bool used = false;
    for (;;) {
        auto next = m_queue->pop(mem);
        if (next.is_error()) return m_ctx.fail(next.error());
        if (!next.value()) break;
        auto& chain = *next.value();
        uint32_t written = 0;
        for (const auto& b : chain.buffers()) {
            if (!b.device_writable) continue;
            uint32_t want = std::min(b.len, kMaxRequest - written);
            if (want == 0) break;
            auto dst = mem.writable_slice(b.addr, want);  // checked at pop; cannot fail here
            if (dst.is_error()) return m_ctx.fail(dst.error());
            ssize_t got;
            do {
                got = getrandom(dst.value().data(), want, 0);
            } while (got < 0 && errno == EINTR);
            if (got <= 0) break;
            written += uint32_t(got);
            if (uint32_t(got) < want) break;
        }
        m_bytes += written;
        if (auto r = m_queue->add_used(mem, chain.head(), written); r.is_error()) return m_ctx.fail(r.error());
        used = true;
    }
    if (!used) return;
    notify_if_wanted(*m_queue, m_ctx);
}

}  // namespace husk::virtio
