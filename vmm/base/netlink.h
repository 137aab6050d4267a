// rtnetlink, the few calls husk makes: requests built as a fixed header and
// attributes (nested ones too), each sent with an acknowledgement asked for
// and its error returned by name; dumps read message by message. Shared by
// the runtime (a container's network namespace on the host) and husk-agent
// (the guest's NIC).
#pragma once

#include <linux/netlink.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk::netlink {

// What one dump may hold before it is refused: a namespace's contents are not
// ours to read without end.
inline constexpr size_t kMaxDumpEntries = 1024;

// The attributes of a message whose fixed header is `fixed_size` bytes.
inline std::span<const uint8_t> attributes_after(std::span<const uint8_t> payload, size_t fixed_size) {
    size_t skip = (fixed_size + 3) & ~size_t(3);
    return skip >= payload.size() ? std::span<const uint8_t>() : payload.subspan(skip);
}

class Message {
public:
    Message(uint16_t type, uint16_t flags);
    // The fixed part after the netlink header (ifinfomsg, ifaddrmsg, rtmsg, tcmsg).
    template <class T>
    Message& header(const T& fixed) {
        append(&fixed, sizeof fixed);
        return *this;
    }
    Message& attribute(uint16_t type, const void* data, size_t size);
    Message& u32(uint16_t type, uint32_t value) { return attribute(type, &value, sizeof value); }
    Message& string(uint16_t type, std::string_view value);  // NUL-terminated
    // A nested attribute: begin returns where it starts, end closes it there.
    size_t begin(uint16_t type);
    void end(size_t at);
    uint16_t type() const;
    std::span<uint8_t> finish();  // the whole message, its length set

private:
    void append(const void* data, size_t size);
    std::string m_bytes;
};

class Socket {
public:
    static Result<Socket> open();
    // Sends `m` asking for an acknowledgement; the kernel's error, if any, with `what`.
    Result<void> request(Message& m, std::string_view what);
    // A dump (NLM_F_DUMP) of `type` with `request` as its fixed part: each
    // reply's fixed part (of the same type: ifinfomsg, ifaddrmsg, rtmsg) and
    // its attributes. A reply too short for its fixed part is an error.
    template <class T>
    Result<void> dump(uint16_t type, const T& request, std::string_view what,
                      const std::type_identity_t<std::function<void(const T&, std::span<const uint8_t>)>>& each) {
        Message m(type, NLM_F_DUMP);
        m.header(request);
        return dump(m, what, [&](std::span<const uint8_t> payload) -> Result<void> {
            if (payload.size() < sizeof(T))
                return Error::from_string("netlink: a short message in the dump of the " + std::string(what));
            T fixed;
            std::memcpy(&fixed, payload.data(), sizeof fixed);
            each(fixed, attributes_after(payload, sizeof(T)));
            return {};
        });
    }

private:
    explicit Socket(UniqueFd fd) : m_fd(std::move(fd)) {}
    // Finishes `m` with `flags` added and the next sequence number, and sends it.
    Result<void> send(Message& m, uint16_t flags, std::string_view what);
    Result<void> dump(Message& m, std::string_view what,
                      const std::function<Result<void>(std::span<const uint8_t>)>& each);
    UniqueFd m_fd;
    uint32_t m_sequence = 1;
};

// Every attribute in `bytes` (after a message's fixed header), as (type, payload).
void for_each_attribute(std::span<const uint8_t> bytes,
                        const std::function<void(uint16_t, std::span<const uint8_t>)>& visit);

// A network namespace's contents, as rtnetlink dumps them.
struct Address {
    int family = 0;       // AF_INET or AF_INET6
    std::string address;  // "172.17.0.2", "fd00::2"
    uint8_t prefix = 0;
    bool operator==(const Address&) const = default;
};

struct Link {
    uint32_t index = 0;
    std::string name;
    std::array<uint8_t, 6> mac{};
    uint32_t mtu = 0;
    bool up = false;
    bool loopback = false;
    // An Ethernet link (a veth, a TAP, a virtio NIC), not a tunnel a kernel
    // module adds to every namespace (sit0, tunl0), which cannot leave it.
    bool ethernet = false;
    std::vector<Address> addresses;
};

struct Route {
    int family = 0;
    std::string destination;  // empty: the default route
    uint8_t prefix = 0;
    std::string gateway;  // empty: on the link
    uint32_t link = 0;    // the outgoing interface's index
    bool kernel = false;  // made by the kernel for an address (RTPROT_KERNEL)
};

struct Network {
    std::vector<Link> links;
    std::vector<Route> routes;  // unicast routes of the main table
    const Link* find(const std::string& name) const;
};

// The calling thread's network namespace: links with their addresses, the main table's unicast routes.
Result<Network> read_network();

// A socket that receives the namespace's link events (RTMGRP_LINK).
Result<UniqueFd> open_link_events();
// The links that RTM_NEWLINK messages in `bytes` (what one read of that
// socket gave) announce or change, without their addresses. Malformed or
// other messages are skipped.
std::vector<Link> new_links_in(std::span<const uint8_t> bytes);

std::string format_mac(const std::array<uint8_t, 6>& mac);

// A link's settings; what is not given stays as it is.
struct LinkChange {
    std::optional<std::array<uint8_t, 6>> mac;
    std::optional<uint32_t> mtu;
    std::optional<std::string> name;
    std::optional<bool> up;
    std::optional<int> netns_fd;  // moves the link into that network namespace
};
Result<void> change_link(uint32_t index, const LinkChange& change);
// An address on a link (IPv6 ones without duplicate address detection: the
// address is the engine's, already checked on its network).
Result<void> add_address(uint32_t index, const Address& address);
// A route of the main table (`kernel` ignored); an existing equal one is replaced.
Result<void> add_route(const Route& route);

}  // namespace husk::netlink
