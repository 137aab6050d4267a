#include "vmm/devices/virtio/block/block.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <cstring>

#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/base/wire.h"
#include "vmm/io/event_loop.h"

namespace husk::virtio {
namespace {

// §5.2.4 configuration layout, up to the write-zeroes fields.
struct [[gnu::packed]] BlockConfig {
    uint64_t capacity;
    uint32_t size_max;
    uint32_t seg_max;
    uint16_t cylinders;
    uint8_t heads;
    uint8_t sectors;
    uint32_t blk_size;
    uint8_t physical_block_exp;
    uint8_t alignment_offset;
    uint16_t min_io_size;
    uint32_t opt_io_size;
    uint8_t writeback;
    uint8_t unused0;
    uint16_t num_queues;
    uint32_t max_discard_sectors;
    uint32_t max_discard_seg;
    uint32_t discard_sector_alignment;
    uint32_t max_write_zeroes_sectors;
    uint32_t max_write_zeroes_seg;
    uint8_t write_zeroes_may_unmap;
    uint8_t unused1[3];
};
static_assert(sizeof(BlockConfig) == 60);

struct [[gnu::packed]] RequestHeader {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

struct [[gnu::packed]] DiscardSegment {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

constexpr uint32_t kMaxDiscardSectors = 1u << 22;  // 2 GiB per segment

}  // namespace

struct Block::Request {
    uint16_t head;
    uint64_t status_addr;
    uint64_t generation;
    std::vector<iovec> iov;
};

Result<std::unique_ptr<Block>> Block::open(const BlockOptions& o) {
    int flags = (o.read_only ? O_RDONLY : O_RDWR) | (o.direct ? O_DIRECT : 0);
    auto fd = TRY(sys::open(o.path, flags).context("open drive"));
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) return Error::from_errno(errno, "stat drive `" + o.path + "`");
    uint64_t bytes = uint64_t(st.st_size);
    if (S_ISBLK(st.st_mode)) {
        if (::ioctl(fd.get(), BLKGETSIZE64, &bytes) < 0) return Error::from_errno(errno, "size of `" + o.path + "`");
    } else if (!S_ISREG(st.st_mode)) {
        return Error::from_string("drive `" + o.path + "` is neither a regular file nor a block device");
    }
    if (bytes % kSectorSize)
        log::warn("drive `{}` is not a multiple of 512 bytes; its last {} bytes are not visible", o.path,
                  bytes % kSectorSize);
    if (o.id.size() > 20) return Error::from_string("drive id `" + o.id + "` is longer than 20 bytes");
    return std::unique_ptr<Block>(new Block(o, std::move(fd), bytes / kSectorSize));
}

uint64_t Block::device_features() const {
    uint64_t f = kFeatureSegMax | kFeatureBlkSize | kFeatureFlush;
    if (m_options.read_only)
        f |= kFeatureRo;
    else
        f |= kFeatureDiscard | kFeatureWriteZeroes;
    return f;
}

void Block::read_config(uint64_t offset, std::span<uint8_t> data) const {
    BlockConfig c{};
    c.capacity = m_sectors;
    c.seg_max = kSegMax;
    c.blk_size = kSectorSize;
    c.num_queues = 1;
    c.max_discard_sectors = kMaxDiscardSectors;
    c.max_discard_seg = 1;
    c.discard_sector_alignment = 8;  // 4 KiB
    c.max_write_zeroes_sectors = kMaxDiscardSectors;
    c.max_write_zeroes_seg = 1;
    c.write_zeroes_may_unmap = 1;
    read_config_bytes(std::span(reinterpret_cast<const uint8_t*>(&c), sizeof c), offset, data);
}

Result<void> Block::activate(uint64_t, std::span<Queue> queues, DeviceContext ctx) {
    if (queues.empty() || !queues[0].ready()) return Error::from_string("virtio-blk: request queue not ready");
    m_queue = &queues[0];
    m_ctx = std::move(ctx);
    return {};
}

void Block::reset() {
    m_queue = nullptr;
    m_in_flight = 0;
    ++m_generation;
}

void Block::queue_notify(size_t) {
    drain();
}

void Block::drain() {
    const GuestMemory& mem = *m_ctx.memory;
    for (;;) {
        if (!m_queue) return;
        for (;;) {
            auto next = m_queue->pop(mem);
            if (next.is_error()) return m_ctx.fail(next.error());
            if (!next.value()) break;
            if (!start(std::move(*next.value()))) return;
        }
        if (!m_queue) return;
        if (m_in_flight > 0) {
            // Completions will bring us back here: no kicks needed until then.
            if (auto r = m_queue->disable_notifications(mem); r.is_error()) return m_ctx.fail(r.error());
            return;
        }
        auto more = m_queue->enable_notifications(mem);
        if (more.is_error()) return m_ctx.fail(more.error());
        if (!more.value()) return;
    }
}

bool Block::start(DescriptorChain chain) {
    const GuestMemory& mem = *m_ctx.memory;
    const auto& bufs = chain.buffers();
    // Layout (§5.2.6): readable header, data, one writable status byte at the very end.
    if (bufs.empty() || !bufs.back().device_writable) {
        m_ctx.fail(Error::from_string("virtio-blk: request without a status byte", EPROTO));
        return false;
    }
    RequestHeader hdr{};
    {
        // The header may span buffers: gather its 16 bytes from the readable ones.
        size_t got = 0;
        for (const auto& b : bufs) {
            if (b.device_writable || got == sizeof hdr) break;
            size_t take = std::min<size_t>(b.len, sizeof hdr - got);
            (void)mem.read(b.addr, std::span(reinterpret_cast<uint8_t*>(&hdr) + got, take));
            got += take;
        }
        if (got < sizeof hdr) {
            m_ctx.fail(Error::from_string("virtio-blk: request header shorter than 16 bytes", EPROTO));
            return false;
        }
    }
    const Buffer& status_buf = bufs.back();
    auto req = std::make_shared<Request>();
    req->head = chain.head();
    req->status_addr = status_buf.addr + status_buf.len - 1;
    req->generation = m_generation;

    // Data buffers: everything after the header bytes and before the status byte.
    std::vector<Buffer> data;
    {
        size_t skip = sizeof hdr;
        for (size_t i = 0; i < bufs.size(); ++i) {
            Buffer b = bufs[i];
            if (i + 1 == bufs.size()) b.len -= 1;  // drop the status byte
            if (!b.device_writable && skip) {
                size_t s = std::min<size_t>(skip, b.len);
                b.addr += s;
                b.len -= uint32_t(s);
                skip -= s;
            }
            if (b.len) data.push_back(b);
        }
    }
    bool all_writable = true, all_readable = true;
    uint64_t data_len = 0;
    for (const auto& b : data) {
        all_writable &= b.device_writable;
        all_readable &= !b.device_writable;
        data_len += b.len;
        // A device-writable buffer is written by the host kernel (a disk read), not KVM:
        // writable_slice records it. iovec's base is never const; a disk write only reads it.
        uint8_t* base = b.device_writable ? mem.writable_slice(b.addr, b.len).value().data()
                                          : const_cast<uint8_t*>(mem.slice(b.addr, b.len).value().data());
        req->iov.push_back({base, b.len});
    }

    auto fail_request = [&](uint8_t status) {
        finish(req, status, 0);
        return true;
    };
    auto in_range = [&](uint64_t sector, uint64_t bytes) {
        return bytes % kSectorSize == 0 && sector <= m_sectors && bytes / kSectorSize <= m_sectors - sector;
    };
    int fd = m_fd.get();

    switch (hdr.type) {
        case kTypeIn:
        case kTypeOut: {
            bool out = hdr.type == kTypeOut;
            if ((out && !all_readable) || (!out && !all_writable)) {
                m_ctx.fail(Error::from_string("virtio-blk: data buffers point the wrong way", EPROTO));
                return false;
            }
            if (out && m_options.read_only) return fail_request(kStatusIoErr);
            if (!in_range(hdr.sector, data_len) || data.empty()) return fail_request(kStatusIoErr);
            uint64_t offset = hdr.sector * kSectorSize;
            auto r = m_ctx.loop->submit(
                [&](io_uring_sqe* sqe) {
                    if (out)
                        io_uring_prep_writev(sqe, fd, req->iov.data(), unsigned(req->iov.size()), offset);
                    else
                        io_uring_prep_readv(sqe, fd, req->iov.data(), unsigned(req->iov.size()), offset);
                },
                [this, req, data_len, out](int res) {
                    std::lock_guard guard(*m_ctx.lock);
                    io_done(*req);
                    bool ok = res >= 0 && uint64_t(res) == data_len;
                    finish(req, ok ? kStatusOk : kStatusIoErr, ok && !out ? uint32_t(data_len) : 0);
                });
            if (r.is_error()) return fail_request(kStatusIoErr);
            io_started();
            return true;
        }
        case kTypeFlush: {
            if (m_options.read_only) return fail_request(kStatusOk);
            auto r = m_ctx.loop->submit([&](io_uring_sqe* sqe) { io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC); },
                                        [this, req](int res) {
                                            std::lock_guard guard(*m_ctx.lock);
                                            io_done(*req);
                                            finish(req, res == 0 ? kStatusOk : kStatusIoErr, 0);
                                        });
            if (r.is_error()) return fail_request(kStatusIoErr);
            io_started();
            return true;
        }
        case kTypeGetId: {
            if (!all_writable || data.empty()) return fail_request(kStatusIoErr);
            // §5.2.6.1: up to 20 bytes, NUL-padded when shorter.
            char id[20] = {};
            std::memcpy(id, m_options.id.data(), std::min<size_t>(m_options.id.size(), sizeof id));
            uint32_t written = 0;
            for (const auto& b : data) {
                uint32_t n = std::min<uint32_t>(b.len, sizeof id - written);
                (void)mem.write(b.addr, std::span(reinterpret_cast<const uint8_t*>(id) + written, n));
                written += n;
                if (written == sizeof id) break;
            }
            finish(req, kStatusOk, written);
            return true;
        }
        case kTypeDiscard:
        case kTypeWriteZeroes: {
            if (m_options.read_only) return fail_request(kStatusIoErr);
            if (!all_readable || data_len != sizeof(DiscardSegment)) return fail_request(kStatusUnsupported);
            DiscardSegment seg;
            (void)mem.read(data[0].addr, std::span(reinterpret_cast<uint8_t*>(&seg), sizeof seg));
            if (seg.num_sectors > kMaxDiscardSectors || !in_range(seg.sector, uint64_t(seg.num_sectors) * kSectorSize))
                return fail_request(kStatusIoErr);
            int mode = FALLOC_FL_KEEP_SIZE |
                       (hdr.type == kTypeDiscard || (seg.flags & 1) ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE);
            uint64_t off = seg.sector * kSectorSize, len = uint64_t(seg.num_sectors) * kSectorSize;
            auto r = m_ctx.loop->submit([&](io_uring_sqe* sqe) { io_uring_prep_fallocate(sqe, fd, mode, off, len); },
                                        [this, req, discard = hdr.type == kTypeDiscard](int res) {
                                            std::lock_guard guard(*m_ctx.lock);
                                            io_done(*req);
                                            // A file system without hole punching: discard is only a hint.
                                            uint8_t st = res == 0                        ? kStatusOk
                                                         : discard && res == -EOPNOTSUPP ? kStatusOk
                                                         : res == -EOPNOTSUPP            ? kStatusUnsupported
                                                                                         : kStatusIoErr;
                                            finish(req, st, 0);
                                        });
            if (r.is_error()) return fail_request(kStatusIoErr);
            io_started();
            return true;
        }
        default:
            return fail_request(kStatusUnsupported);
    }
}

void Block::io_started() {
    ++m_in_flight;
    ++m_host_ops;
}

void Block::io_done(const Request& req) {
    --m_host_ops;
    if (req.generation == m_generation) --m_in_flight;
}

void Block::finish(const std::shared_ptr<Request>& req, uint8_t status, uint32_t data_written) {
    if (req->generation != m_generation || !m_queue) return;  // the device was reset meanwhile
    const GuestMemory& mem = *m_ctx.memory;
    if (auto r = mem.write_obj(req->status_addr, status); r.is_error()) return m_ctx.fail(r.error());
    if (auto r = m_queue->add_used(mem, req->head, data_written + 1); r.is_error()) return m_ctx.fail(r.error());
    ++m_completed;
    schedule_notify();
}

void Block::schedule_notify() {
    // Completions of one loop turn share one interrupt decision (and at most one irqfd write).
    if (m_notify_scheduled) return;
    auto check = [this, gen = m_generation] {
        std::lock_guard guard(*m_ctx.lock);
        m_notify_scheduled = false;
        if (gen != m_generation || !m_queue) return;
        notify_if_wanted(*m_queue, m_ctx);
        // Kicks are off while requests are in flight: look for new ones now.
        drain();
    };
    m_notify_scheduled = true;
    if (m_ctx.loop->on_loop_thread()) {
        m_ctx.loop->defer(check);
    } else {
        // Called from a vCPU thread (a request finished synchronously): check now.
        m_notify_scheduled = false;
        notify_if_wanted(*m_queue, m_ctx);
    }
}

}  // namespace husk::virtio
