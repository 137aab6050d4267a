// virtio-balloon's persisted state (BalloonState, ../persist.h).
#include "vmm/devices/virtio/balloon/balloon.h"

namespace husk::virtio {

void BalloonState::encode(wire::Writer& w) const {
    w.u32(target_pages).u32(actual_pages).i32(stats_head);
}

BalloonState BalloonState::decode(wire::Reader& r) {
    BalloonState s;
    s.target_pages = r.u32();
    s.actual_pages = r.u32();
    s.stats_head = r.i32();
    return s;
}

std::string Balloon::save_state() const {
    return persist(BalloonState{m_target, m_actual, m_stats_head});
}

Result<void> Balloon::load_state(std::string_view bytes) {
    auto s = TRY(read_persisted<BalloonState>(bytes));
    if (s.stats_head >= 0 && (m_stats_index == SIZE_MAX || size_t(s.stats_head) >= m_queues[m_stats_index].size()))
        return Error::from_string("virtio-balloon state: the held stats buffer is not on the stats queue", EINVAL);
    m_target = s.target_pages;
    m_actual = s.actual_pages;
    m_stats_head = s.stats_head;
    return {};
}

}  // namespace husk::virtio
