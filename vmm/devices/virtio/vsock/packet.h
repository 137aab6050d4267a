// virtio-vsock packet header and constants (virtio 1.2 §5.10.6).
#pragma once

#include <cstdint>

namespace husk::virtio::vsock {

struct [[gnu::packed]] Header {
    uint64_t src_cid;
    uint64_t dst_cid;
    uint32_t src_port;
    uint32_t dst_port;
    uint32_t len;
    uint16_t type;
    uint16_t op;
    uint32_t flags;
    uint32_t buf_alloc;
    uint32_t fwd_cnt;
};
static_assert(sizeof(Header) == 44);

inline constexpr uint64_t kHostCid = 2;
inline constexpr uint16_t kTypeStream = 1;

enum Op : uint16_t {
    kOpRequest = 1,
    kOpResponse = 2,
    kOpRst = 3,
    kOpShutdown = 4,
    kOpRw = 5,
    kOpCreditUpdate = 6,
    kOpCreditRequest = 7,
};

inline constexpr uint32_t kShutdownRcv = 1;   // the sender will receive no more
inline constexpr uint32_t kShutdownSend = 2;  // the sender will send no more

}  // namespace husk::virtio::vsock
