#include "vmm/devices/virtio/net/net.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "vmm/base/system.h"
#include "vmm/io/event_loop.h"

namespace husk::virtio {

Result<std::array<uint8_t, 6>> parse_mac(std::string_view text) {
    std::array<uint8_t, 6> mac{};
    unsigned v[6];
    char extra;
    std::string s(text);
    if (std::sscanf(s.c_str(), "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &extra) != 6)
        return Error::from_string("MAC `" + s + "` is not of the form aa:bb:cc:dd:ee:ff");
    for (int i = 0; i < 6; ++i) {
        if (v[i] > 0xff) return Error::from_string("MAC `" + s + "` has a byte over ff");
        mac[size_t(i)] = uint8_t(v[i]);
    }
    if (mac[0] & 1) return Error::from_string("MAC `" + s + "` is a multicast address");
    return mac;
}

Result<std::unique_ptr<Net>> Net::open(const NetOptions& o) {
    if (o.tap.empty() || o.tap.size() >= IFNAMSIZ)
        return Error::from_string("TAP name `" + o.tap + "` is empty or too long");
    auto fd = TRY(sys::open("/dev/net/tun", O_RDWR | O_NONBLOCK).context("open TAP device"));
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, o.tap.c_str(), o.tap.size());
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    TRY(sys::ioctl(fd.get(), TUNSETIFF, &ifr, "TUNSETIFF `" + o.tap + "` (does it exist, and may this user use it?)"));
    // The TAP's header is the device's own: it passes between the TAP and the guest untouched.
    int header_size = int(kHeaderSize);
    TRY(sys::ioctl(fd.get(), TUNSETVNETHDRSZ, &header_size, "TUNSETVNETHDRSZ"));
    // No offloads towards the guest until it says which it takes (activate).
    TRY(sys::ioctl(fd.get(), TUNSETOFFLOAD, reinterpret_cast<void*>(0ul), "TUNSETOFFLOAD"));
    NetOptions opts = o;
    if (opts.mac == std::array<uint8_t, 6>{}) {
        // Locally administered, unicast: 02:xx:xx:xx:xx:xx.
        if (getrandom(opts.mac.data(), opts.mac.size(), 0) != 6) return Error::from_errno(errno, "getrandom");
        opts.mac[0] = 0x02;
    }
    return std::unique_ptr<Net>(new Net(std::move(opts), std::move(fd)));
}

void Net::read_config(uint64_t offset, std::span<uint8_t> data) const {
    // §5.1.4: mac[6], status (only with VIRTIO_NET_F_STATUS, not offered).
    read_config_bytes(std::span(m_options.mac.data(), m_options.mac.size()), offset, data);
}

Result<void> Net::activate(uint64_t features, std::span<Queue> queues, DeviceContext ctx) {
    if (queues.size() < 2 || !queues[0].ready() || !queues[1].ready())
        return Error::from_string("virtio-net: rx/tx queues not ready");
    // What the TAP may hand us for the guest: partial checksums and TCP segments only if it took them.
    unsigned long offloads = 0;
    if (features & kFeatureGuestCsum) {
        offloads |= TUN_F_CSUM;
        if (features & kFeatureGuestTso4) offloads |= TUN_F_TSO4;
        if (features & kFeatureGuestTso6) offloads |= TUN_F_TSO6;
    }
    if (::ioctl(m_tap.get(), TUNSETOFFLOAD, offloads) < 0) return Error::from_errno(errno, "virtio-net: TUNSETOFFLOAD");
    m_rx = &queues[0];
    m_tx = &queues[1];
    m_ctx = std::move(ctx);
    arm_tap_read();
    return {};
}

void Net::reset() {
    m_rx = m_tx = nullptr;
    m_pending.clear();
    m_read_armed = false;
    ++m_generation;
}

void Net::queue_notify(size_t index) {
    if (!m_rx) return;
    if (index == 1)
        process_tx();
    else
        process_rx();
}

void Net::process_tx() {
    const GuestMemory& mem = *m_ctx.memory;
    // On the loop thread (the guest's kick through its ioeventfd) each frame
    // is written to the TAP at once, which never blocks, and the guest hears
    // of the whole batch once; from another thread (an MMIO kick on a vCPU)
    // through io_uring, one completion a frame.
    bool direct = m_ctx.loop->on_loop_thread();
    bool used = false;
    for (;;) {
        auto next = m_tx->pop(mem);
        if (next.is_error()) return m_ctx.fail(next.error());
        if (!next.value()) break;
        auto& chain = *next.value();
        // The virtio-net header and the frame, written to the TAP (which reads
        // the same header) straight from guest memory.
        std::shared_ptr<std::vector<iovec>> owned;  // an io_uring write's, kept until it completes
        if (!direct) owned = std::make_shared<std::vector<iovec>>();
        std::vector<iovec>& iov = direct ? m_tx_iov : *owned;
        iov.clear();
        size_t packet = 0;
        for (const auto& b : chain.buffers()) {
            if (b.device_writable) break;
            auto bytes = mem.slice(b.addr, b.len).value();
            if (bytes.empty()) continue;
            // iovec's base is never const; writev only reads it.
            iov.push_back({const_cast<uint8_t*>(bytes.data()), bytes.size()});
            packet += bytes.size();
        }
        uint16_t head = chain.head();
        // A frame the TAP cannot take (too big, empty) is dropped, as a NIC would.
        if (packet <= kHeaderSize || packet > kMaxPacket) {
            if (auto r = m_tx->add_used(mem, head, 0); r.is_error()) return m_ctx.fail(r.error());
            used = true;
            continue;
        }
        int fd = m_tap.get();
        if (direct) {
            ssize_t n;
            do {
                n = ::writev(fd, iov.data(), int(iov.size()));
            } while (n < 0 && errno == EINTR);
            if (n > 0) ++m_tx_frames;  // else dropped (the TAP's queue full, its link down), as a NIC would
            if (auto r = m_tx->add_used(mem, head, 0); r.is_error()) return m_ctx.fail(r.error());
            used = true;
            continue;
        }
        uint64_t gen = m_generation;
        auto done = [this, head, gen](int res) {
            std::lock_guard guard(*m_ctx.lock);
            --m_tx_in_flight;  // counted across resets: the write read guest memory until now
            if (gen != m_generation || !m_tx) return;
            if (res > 0) ++m_tx_frames;
            if (auto r = m_tx->add_used(*m_ctx.memory, head, 0); r.is_error()) return m_ctx.fail(r.error());
            schedule_notify(*m_tx);
        };
        ++m_tx_in_flight;
        auto r = m_ctx.loop->submit(
            [fd, owned](io_uring_sqe* sqe) {
                io_uring_prep_writev(sqe, fd, owned->data(), unsigned(owned->size()), 0);
            },
            [owned, done](int res) { done(res); });
        if (r.is_error()) {
            --m_tx_in_flight;
            if (auto u = m_tx->add_used(mem, head, 0); u.is_error()) return m_ctx.fail(u.error());
            used = true;
        }
    }
    if (used) schedule_notify(*m_tx);
}

void Net::schedule_notify(Queue& q) {
    auto check = [this, &q, gen = m_generation] {
        std::lock_guard guard(*m_ctx.lock);
        if (gen != m_generation || !m_rx) return;
        notify_if_wanted(q, m_ctx);
    };
    if (m_ctx.loop->on_loop_thread()) {
        m_ctx.loop->defer(check);
    } else {
        notify_if_wanted(q, m_ctx);
    }
}

void Net::process_rx() {
    const GuestMemory& mem = *m_ctx.memory;
    bool used = false;
    size_t batch = 0;
    while (!m_pending.empty()) {
        auto next = m_rx->pop(mem);
        if (next.is_error()) return m_ctx.fail(next.error());
        if (!next.value()) break;  // no rx buffer: keep the frame until the guest posts one
        auto& chain = *next.value();
        if (chain.writable_bytes() < m_pending.size()) {
            // Too small for this packet (no mergeable buffers): drop it, give the buffer back empty.
            m_pending.clear();
            if (auto r = m_rx->add_used(mem, chain.head(), 0); r.is_error()) return m_ctx.fail(r.error());
            used = true;
            break;
        }
        // The TAP wrote the header but for num_buffers, which is 1 without mergeable buffers.
        m_pending[10] = 1;
        m_pending[11] = 0;
        write_to_chain(mem, chain, std::span(reinterpret_cast<const uint8_t*>(m_pending.data()), m_pending.size()));
        if (auto r = m_rx->add_used(mem, chain.head(), uint32_t(m_pending.size())); r.is_error())
            return m_ctx.fail(r.error());
        m_pending.clear();
        ++m_rx_frames;
        used = true;
        // Batching: on the loop thread, with no read in flight (which would
        // come first), the next packets are read here while the guest has
        // buffers, and the guest hears of them all at once.
        if (++batch < kRxBatch && !m_read_armed && m_ctx.loop->on_loop_thread()) {
            m_pending.resize(kMaxPacket);
            ssize_t n = ::read(m_tap.get(), m_pending.data(), m_pending.size());
            m_pending.resize(n > ssize_t(kHeaderSize) ? size_t(n) : 0);
        }
    }
    if (m_pending.empty()) arm_tap_read();
    if (used) schedule_notify(*m_rx);
}

void Net::arm_tap_read() {
    // One io_uring read from the TAP in flight; its frame waits in m_pending for an rx buffer.
    if (m_read_armed) return;
    m_read_armed = true;
    int fd = m_tap.get();
    uint64_t gen = m_generation;
    // A buffer per read: a read left in flight by a device reset must not share it.
    auto buf = std::make_shared<std::string>(kMaxPacket, '\0');
    (void)m_ctx.loop->submit([fd, buf](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, buf->data(), kMaxPacket, 0); },
                             [this, gen, buf](int res) {
                                 std::lock_guard guard(*m_ctx.lock);
                                 if (gen != m_generation || !m_rx) return;
                                 m_read_armed = false;
                                 // A packet is the header and a frame; anything shorter is dropped.
                                 if (res > int(kHeaderSize)) m_pending.assign(buf->data(), size_t(res));
                                 process_rx();
                             });
}

}  // namespace husk::virtio
