// virtio-blk's persisted state (BlockState, ../persist.h) and the capacity
// change a restore onto another disk size tells the driver.
#include "vmm/base/log.h"
#include "vmm/devices/virtio/block/block.h"

namespace husk::virtio {

void BlockState::encode(wire::Writer& w) const {
    w.u64(sectors);
}

BlockState BlockState::decode(wire::Reader& r) {
    return {r.u64()};
}

std::string Block::save_state() const {
    return persist(BlockState{m_sectors});
}

Result<void> Block::load_state(std::string_view bytes) {
    m_restored_sectors = TRY(read_persisted<BlockState>(bytes)).sectors;
    return {};
}

void Block::restored() {
    // The snapshot's disk was another size (a template's placeholder, say):
    // the driver rereads the capacity on a configuration change interrupt.
    if (m_restored_sectors != m_sectors && m_ctx.signal_config) {
        log::debug("virtio-blk: capacity {} -> {} sectors after restore", m_restored_sectors, m_sectors);
        m_ctx.signal_config();
    }
}

}  // namespace husk::virtio
