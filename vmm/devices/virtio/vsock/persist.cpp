// virtio-vsock's persisted state (VsockState, ../persist.h) and what a
// restore leaves of the guest's connections.
#include <algorithm>

#include "vmm/base/log.h"
#include "vmm/devices/virtio/vsock/internal.h"

namespace husk::virtio {

using namespace vsock;

void VsockState::encode(wire::Writer& w) const {
    w.u32(next_host_port);
}

VsockState VsockState::decode(wire::Reader& r) {
    return {r.u32()};
}

std::string Vsock::save_state() const {
    return persist(VsockState{m_next_host_port});
}

Result<void> Vsock::load_state(std::string_view bytes) {
    m_next_host_port = std::max(TRY(read_persisted<VsockState>(bytes)).next_host_port, kFirstHostPort);
    return {};
}

void Vsock::restored() {
    // The guest's connections were to host sockets that are gone: a transport
    // reset makes it drop them all (its listening sockets stay).
    if (!m_event) return;
    auto next = m_event->pop(*m_ctx.memory);
    if (next.is_error()) return m_ctx.fail(next.error());
    if (!next.value()) {
        log::warn("virtio-vsock: no event buffer to announce the transport reset");
        return;
    }
    uint32_t id = kEventTransportReset;
    uint32_t written =
        write_to_chain(*m_ctx.memory, *next.value(), std::span(reinterpret_cast<const uint8_t*>(&id), sizeof id));
    if (auto r = m_event->add_used(*m_ctx.memory, next.value()->head(), written); r.is_error())
        return m_ctx.fail(r.error());
    // The guest acknowledges by giving the buffer back; it has more queued,
    // so ask to hear of that one.
    auto avail = m_event->notify_on_next_buffer(*m_ctx.memory);
    if (avail.is_error()) return m_ctx.fail(avail.error());
    m_reset_avail = avail.value();
    m_reset_unacked = true;
    notify_if_wanted(*m_event, m_ctx);
}

}  // namespace husk::virtio
