#include "vmm/devices/virtio/mmio/mmio_transport.h"

#include <fmt/format.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/base/wire.h"
#include "vmm/devices/virtio/persist.h"
#include "vmm/io/event_loop.h"
#include "vmm/kvm/vm.h"

namespace husk::virtio {
namespace {

// Register offsets (§4.2.2, table "MMIO Device Register Layout").
enum : uint64_t {
    kMagic = 0x000,
    kVersion = 0x004,
    kDeviceId = 0x008,
    kVendorId = 0x00c,
    kDeviceFeatures = 0x010,
    kDeviceFeaturesSel = 0x014,
    kDriverFeatures = 0x020,
    kDriverFeaturesSel = 0x024,
    kQueueSel = 0x030,
    kQueueNumMax = 0x034,
    kQueueNum = 0x038,
    kQueueReady = 0x044,
    kQueueNotify = 0x050,
    kInterruptStatus = 0x060,
    kInterruptAck = 0x064,
    kStatus = 0x070,
    kQueueDescLow = 0x080,
    kQueueDescHigh = 0x084,
    kQueueDriverLow = 0x090,
    kQueueDriverHigh = 0x094,
    kQueueDeviceLow = 0x0a0,
    kQueueDeviceHigh = 0x0a4,
    kShmLenLow = 0x0b0,
    kShmLenHigh = 0x0b4,
    kShmBaseLow = 0x0b8,
    kShmBaseHigh = 0x0bc,
    kConfigGeneration = 0x0fc,
    kConfig = 0x100,
};
constexpr uint32_t kMagicValue = 0x74726976;  // "virt"
constexpr uint32_t kVendor = 0x4b535548;      // "HUSK"
constexpr uint64_t kTransportFeatures = kFeatureVersion1 | kFeatureEventIdx | kFeatureIndirectDesc;

void set_low(uint64_t& v, uint32_t lo) {
    v = (v & ~0xffffffffull) | lo;
}
void set_high(uint64_t& v, uint32_t hi) {
    v = (v & 0xffffffffull) | (uint64_t(hi) << 32);
}

}  // namespace

MmioTransport::MmioTransport(std::unique_ptr<VirtioDevice> device, std::string id, const GuestMemory& memory,
                             EventLoop& loop, uint32_t gsi)
    : m_device(std::move(device)), m_memory(memory), m_loop(loop), m_gsi(gsi), m_id(std::move(id)) {
    for (uint16_t max : m_device->queue_max_sizes()) m_queues.emplace_back(max);
}

Result<void> MmioTransport::attach(Vm& vm, uint64_t base) {
    m_irqfd = TRY(sys::eventfd(0, EFD_NONBLOCK));
    TRY(vm.register_irqfd(m_irqfd.get(), m_gsi).context("virtio-mmio irqfd"));
    for (size_t i = 0; i < m_queues.size(); ++i) {
        auto fd = TRY(sys::eventfd(0, EFD_NONBLOCK));
        TRY(vm.register_ioeventfd(fd.get(), base + kNotifyOffset, 4, /*pio=*/false, uint32_t(i))
                .context("virtio-mmio queue notify ioeventfd"));
        TRY(m_loop.watch_eventfd(fd.get(), [this, i] { on_queue_notify(i); }));
        m_notify_fds.push_back(std::move(fd));
    }
    return {};
}

std::string MmioTransport::cmdline_entry(uint64_t base) const {
    return fmt::format("virtio_mmio.device=4K@{:#x}:{}", base, m_gsi);
}

uint32_t MmioTransport::status() const {
    std::lock_guard guard(m_lock);
    return m_status;
}

uint32_t MmioTransport::interrupt_status() const {
    std::lock_guard guard(m_lock);
    return m_interrupt_status;
}

Queue* MmioTransport::selected_queue() {
    return m_queue_sel < m_queues.size() ? &m_queues[m_queue_sel] : nullptr;
}

void MmioTransport::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard guard(m_lock);
    if (m_unplugged && offset >= kConfig) {
        std::fill(data.begin(), data.end(), 0);
        return;
    }
    if (offset >= kConfig) {
        m_device->read_config(offset - kConfig, data);
        return;
    }
    // §4.2.2.2: registers are read with 32-bit accesses; anything else reads as zero.
    std::fill(data.begin(), data.end(), 0);
    if (data.size() != 4 || offset % 4) return;
    if (m_unplugged && offset != kMagic && offset != kVersion) return;
    uint32_t v = read_register(offset);
    std::memcpy(data.data(), &v, 4);
}

void MmioTransport::write(uint64_t offset, std::span<const uint8_t> data) {
    std::lock_guard guard(m_lock);
    if (m_unplugged) return;
    if (offset >= kConfig) {
        m_device->write_config(offset - kConfig, data);
        ++m_config_generation;
        return;
    }
    if (data.size() != 4 || offset % 4) return;  // wrong width: ignored
    uint32_t v;
    std::memcpy(&v, data.data(), 4);
    write_register(offset, v);
}

uint32_t MmioTransport::read_register(uint64_t offset) {
    switch (offset) {
        case kMagic:
            return kMagicValue;
        case kVersion:
            return 2;
        case kDeviceId:
            return m_device->device_type();
        case kVendorId:
            return kVendor;
        case kDeviceFeatures: {
            uint64_t f = m_device->device_features() | kTransportFeatures;
            return m_device_features_sel == 0 ? uint32_t(f) : m_device_features_sel == 1 ? uint32_t(f >> 32) : 0;
        }
        case kQueueNumMax: {
            Queue* q = selected_queue();
            return q ? q->max_size() : 0;
        }
        case kQueueReady: {
            Queue* q = selected_queue();
            return q && q->ready() ? 1 : 0;
        }
        case kInterruptStatus:
            return m_interrupt_status;
        case kStatus:
            return m_status;
        case kConfigGeneration:
            return m_config_generation;
        case kShmLenLow:
        case kShmLenHigh:
        case kShmBaseLow:
        case kShmBaseHigh:
            // No shared memory regions (§4.2.2: a length of all ones means
            // absent), so virtio-fs probes without a DAX window.
            return 0xffffffff;
        default:
            return 0;
    }
}

void MmioTransport::write_register(uint64_t offset, uint32_t v) {
    // Queue and feature registers only mean something before DRIVER_OK (§4.2.3.2).
    bool configuring = !(m_status & kStatusDriverOk);
    Queue* q = selected_queue();
    switch (offset) {
        case kDeviceFeaturesSel:
            m_device_features_sel = v;
            break;
        case kDriverFeaturesSel:
            m_driver_features_sel = v;
            break;
        case kDriverFeatures:
            if (configuring && !(m_status & kStatusFeaturesOk)) {
                if (m_driver_features_sel == 0)
                    set_low(m_driver_features, v);
                else if (m_driver_features_sel == 1)
                    set_high(m_driver_features, v);
            }
            break;
        case kQueueSel:
            m_queue_sel = v;
            break;
        case kQueueNum:
            if (q && configuring) q->set_size(uint16_t(std::min<uint32_t>(v, kMaxQueueSize)));
            break;
        case kQueueReady:
            if (q && configuring) q->set_ready(v == 1);
            break;
        case kQueueDescLow:
            if (q && configuring) {
                uint64_t a = q->desc_table();
                set_low(a, v);
                q->set_desc_table(a);
            }
            break;
        case kQueueDescHigh:
            if (q && configuring) {
                uint64_t a = q->desc_table();
                set_high(a, v);
                q->set_desc_table(a);
            }
            break;
        case kQueueDriverLow:
            if (q && configuring) {
                uint64_t a = q->avail_ring();
                set_low(a, v);
                q->set_avail_ring(a);
            }
            break;
        case kQueueDriverHigh:
            if (q && configuring) {
                uint64_t a = q->avail_ring();
                set_high(a, v);
                q->set_avail_ring(a);
            }
            break;
        case kQueueDeviceLow:
            if (q && configuring) {
                uint64_t a = q->used_ring();
                set_low(a, v);
                q->set_used_ring(a);
            }
            break;
        case kQueueDeviceHigh:
            if (q && configuring) {
                uint64_t a = q->used_ring();
                set_high(a, v);
                q->set_used_ring(a);
            }
            break;
        case kQueueNotify:
            // Normally caught by the ioeventfd; a write that reaches us (no ioeventfd) is handled the same way.
            if (m_active && v < m_queues.size() && !(m_status & kStatusNeedsReset)) m_device->queue_notify(v);
            break;
        case kInterruptAck:
            m_interrupt_status &= ~v;
            break;
        case kStatus:
            set_status(v);
            break;
        default:
            break;  // unknown or read-only register: ignored
    }
}

void MmioTransport::set_status(uint32_t v) {
    if (v == 0) {
        reset_locked();
        return;
    }
    // Status bits only go on (§2.1.1); a driver that wants one off resets the
    // device. Taking DRIVER_OK off would reopen the queue registers under a
    // device that is still using its queues.
    if ((v & m_status) != m_status) {
        log::debug("virtio device {}: status {:#x} would clear bits of {:#x}; ignored", m_device->device_type(), v,
                   m_status);
        return;
    }
    // FEATURES_OK: the device accepts the subset unless it asks for bits we never offered (§3.1.1).
    if ((v & kStatusFeaturesOk) && !(m_status & kStatusFeaturesOk)) {
        uint64_t offered = m_device->device_features() | kTransportFeatures;
        if ((m_driver_features & ~offered) || !(m_driver_features & kFeatureVersion1)) v &= ~kStatusFeaturesOk;
    }
    if ((v & kStatusDriverOk) && !(m_status & kStatusDriverOk)) {
        if (!(v & kStatusFeaturesOk)) {
            m_status = v | kStatusNeedsReset;
            return;
        }
        for (auto& q : m_queues) {
            q.set_event_idx(m_driver_features & kFeatureEventIdx);
            if (!q.ready()) continue;
            if (auto r = q.validate(m_memory); r.is_error()) {
                m_status = v;
                fail(r.error());
                return;
            }
        }
        if (auto r = activate_device(); r.is_error()) {
            m_status = v;
            fail(r.error());
            return;
        }
        m_active = true;
    }
    m_status = v;
}

Result<void> MmioTransport::activate_device() {
    DeviceContext ctx;
    ctx.memory = &m_memory;
    ctx.loop = &m_loop;
    ctx.lock = &m_lock;
    ctx.signal_used = [this] { signal(1); };
    ctx.signal_config = [this] {
        ++m_config_generation;
        signal(2);
    };
    ctx.fail = [this](const Error& e) { fail(e); };
    return m_device->activate(m_driver_features, std::span(m_queues), std::move(ctx));
}

void MmioState::encode(wire::Writer& w) const {
    w.u32(device_type).u32(status).u64(driver_features).u32(device_features_sel);
    w.u32(driver_features_sel).u32(queue_sel).u32(interrupt_status).u32(config_generation);
    w.u32(uint32_t(queues.size()));
    for (const auto& q : queues)
        w.u16(q.size)
            .boolean(q.ready)
            .u64(q.desc_table)
            .u64(q.avail_ring)
            .u64(q.used_ring)
            .u16(q.next_avail)
            .u16(q.next_used);
    w.str(device);
}

MmioState MmioState::decode(wire::Reader& r) {
    MmioState s;
    s.device_type = r.u32();
    s.status = r.u32();
    s.driver_features = r.u64();
    s.device_features_sel = r.u32();
    s.driver_features_sel = r.u32();
    s.queue_sel = r.u32();
    s.interrupt_status = r.u32();
    s.config_generation = r.u32();
    uint32_t queues = r.count(31);  // the bytes of one queue's record
    for (uint32_t i = 0; i < queues && !r.failed(); ++i) {
        MmioState::QueueState q;
        q.size = r.u16();
        q.ready = r.boolean();
        q.desc_table = r.u64();
        q.avail_ring = r.u64();
        q.used_ring = r.u64();
        q.next_avail = r.u16();
        q.next_used = r.u16();
        s.queues.push_back(q);
    }
    s.device = r.str();
    return s;
}

std::string MmioTransport::save_state_locked() const {
    MmioState s;
    s.device_type = m_device->device_type();
    s.status = m_status;
    s.driver_features = m_driver_features;
    s.device_features_sel = m_device_features_sel;
    s.driver_features_sel = m_driver_features_sel;
    s.queue_sel = m_queue_sel;
    s.interrupt_status = m_interrupt_status;
    s.config_generation = m_config_generation;
    for (const auto& q : m_queues)
        s.queues.push_back(
            {q.size(), q.ready(), q.desc_table(), q.avail_ring(), q.used_ring(), q.next_avail(), q.next_used()});
    if (m_active) s.device = m_device->save_state();
    return persist(s);
}

Result<void> MmioTransport::load_state(std::string_view bytes) {
    std::lock_guard guard(m_lock);
    reset_locked();
    // Whole and of this version before anything of it is applied.
    const MmioState s = TRY(read_persisted<MmioState>(bytes));
    if (s.device_type != m_device->device_type())
        return Error::from_string(fmt::format("snapshot: a virtio device of type {} where this VM has type {}",
                                              s.device_type, m_device->device_type()));
    if (s.queues.size() != m_queues.size())
        return Error::from_string(fmt::format("snapshot: virtio device {} has {} queues, not {}", s.device_type,
                                              s.queues.size(), m_queues.size()));
    // A device the guest's driver had set up was plugged then, whatever this VM was told.
    if (s.status != 0) m_unplugged = false;
    m_driver_features = s.driver_features;
    m_device_features_sel = s.device_features_sel;
    m_driver_features_sel = s.driver_features_sel;
    m_queue_sel = s.queue_sel;
    m_config_generation = s.config_generation;
    std::vector<std::pair<uint16_t, uint16_t>> indices;
    for (size_t i = 0; i < s.queues.size(); ++i) {
        const auto& saved = s.queues[i];
        Queue& q = m_queues[i];
        q.set_size(std::min(saved.size, q.max_size()));
        q.set_ready(saved.ready);
        q.set_desc_table(saved.desc_table);
        q.set_avail_ring(saved.avail_ring);
        q.set_used_ring(saved.used_ring);
        indices.emplace_back(saved.next_avail, saved.next_used);
    }
    const uint32_t status = s.status, interrupt_status = s.interrupt_status;
    const std::string& device_state = s.device;
    // Before the device's restored(): what it signals then adds to this.
    m_interrupt_status = interrupt_status;
    m_status = status & ~kStatusNeedsReset;
    // The same rules as a driver's own status writes: a snapshot file is input, not trust.
    uint64_t offered = m_device->device_features() | kTransportFeatures;
    bool features_ok =
        (m_status & kStatusFeaturesOk) && !(m_driver_features & ~offered) && (m_driver_features & kFeatureVersion1);
    if ((m_status & kStatusDriverOk) && !features_ok)
        return Error::from_string("snapshot: a virtio device is DRIVER_OK without valid negotiated features", EINVAL);
    if ((m_status & kStatusDriverOk) && !(status & kStatusNeedsReset)) {
        for (auto& q : m_queues) {
            q.set_event_idx(m_driver_features & kFeatureEventIdx);
            if (q.ready()) TRY(q.validate(m_memory).context("snapshot: virtio queue"));
        }
        TRY(activate_device().context("snapshot: reactivate virtio device"));
        m_active = true;
        for (size_t i = 0; i < m_queues.size(); ++i) m_queues[i].set_indices(indices[i].first, indices[i].second);
        TRY(m_device->load_state(device_state).context("snapshot: virtio device state"));
        m_device->restored();
        // A notification the guest sent just before the snapshot died with the
        // old eventfd, and with EVENT_IDX it will not send another: look at
        // every queue once.
        for (size_t i = 0; i < m_queues.size(); ++i)
            if (m_queues[i].ready() && !(m_status & kStatusNeedsReset)) m_device->queue_notify(i);
    } else {
        // A device the driver had not finished setting up, or one it broke: it
        // stays as the guest left it and needs a reset.
        m_status = status;
    }
    return {};
}

void MmioTransport::reset_locked() {
    if (m_active) m_device->reset();
    m_active = false;
    for (auto& q : m_queues) q.reset();
    m_status = 0;
    m_driver_features = 0;
    m_device_features_sel = m_driver_features_sel = m_queue_sel = 0;
    m_interrupt_status = 0;
}

void MmioTransport::signal(uint32_t bits) {
    m_interrupt_status |= bits;
    if (m_irqfd) {
        uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(m_irqfd.get(), &one, sizeof one);
    }
}

void MmioTransport::fail(const Error& error) {
    if (m_status & kStatusNeedsReset) return;
    log::warn("virtio device {}: {}; device needs reset", m_device->device_type(), error.message());
    m_status |= kStatusNeedsReset;
    // §2.1.2: tell the driver through a configuration change interrupt.
    signal(2);
}

void MmioTransport::on_queue_notify(size_t index) {
    std::lock_guard guard(m_lock);
    if (!m_active || (m_status & kStatusNeedsReset) || index >= m_queues.size()) return;
    m_device->queue_notify(index);
}

}  // namespace husk::virtio
