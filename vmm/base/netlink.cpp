#include "vmm/base/netlink.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <vector>

namespace husk::netlink {

Message::Message(uint16_t type, uint16_t flags) {
    nlmsghdr header{};
    header.nlmsg_type = type;
    header.nlmsg_flags = uint16_t(flags | NLM_F_REQUEST);
    append(&header, sizeof header);
}

void Message::append(const void* data, size_t size) {
    m_bytes.append(static_cast<const char*>(data), size);
    m_bytes.resize(NLMSG_ALIGN(m_bytes.size()), '\0');
}

Message& Message::attribute(uint16_t type, const void* data, size_t size) {
    rtattr a{};
    a.rta_type = type;
    a.rta_len = uint16_t(RTA_LENGTH(size));
    m_bytes.append(reinterpret_cast<const char*>(&a), sizeof a);
    append(data, size);
    return *this;
}

Message& Message::string(uint16_t type, std::string_view value) {
    std::string text(value);
    return attribute(type, text.c_str(), text.size() + 1);
}

size_t Message::begin(uint16_t type) {
    size_t at = m_bytes.size();
    rtattr a{};
    a.rta_type = uint16_t(type | NLA_F_NESTED);
    m_bytes.append(reinterpret_cast<const char*>(&a), sizeof a);
    return at;
}

void Message::end(size_t at) {
    auto length = uint16_t(m_bytes.size() - at);
    std::memcpy(m_bytes.data() + at + offsetof(rtattr, rta_len), &length, sizeof length);
}

uint16_t Message::type() const {
    nlmsghdr header;
    std::memcpy(&header, m_bytes.data(), sizeof header);
    return header.nlmsg_type;
}

std::span<uint8_t> Message::finish() {
    auto length = uint32_t(m_bytes.size());
    std::memcpy(m_bytes.data() + offsetof(nlmsghdr, nlmsg_len), &length, sizeof length);
    return {reinterpret_cast<uint8_t*>(m_bytes.data()), m_bytes.size()};
}

Result<Socket> Socket::open() {
    UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd) return Error::from_errno(errno, "netlink socket");
    return Socket(std::move(fd));
}

namespace {

// Reads replies up to the acknowledgement, NLMSG_DONE, or `each` saying it has seen the last.
Result<void> read_replies(int fd, std::string_view what,
                          const std::function<Result<bool>(const nlmsghdr&, std::span<const uint8_t>)>& each) {
    std::vector<uint8_t> buffer(64 * 1024);
    for (;;) {
        ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error::from_errno(errno, "netlink: " + std::string(what));
        if (n == 0) return Error::from_string("netlink: " + std::string(what) + ": the reply ended early");
        size_t left = size_t(n);
        const uint8_t* at = buffer.data();
        while (left >= sizeof(nlmsghdr)) {
            nlmsghdr header;
            std::memcpy(&header, at, sizeof header);
            if (header.nlmsg_len < sizeof(nlmsghdr) || header.nlmsg_len > left)
                return Error::from_string("netlink: " + std::string(what) + ": a malformed reply");
            if (header.nlmsg_type == NLMSG_ERROR) {
                nlmsgerr error{};
                if (header.nlmsg_len >= NLMSG_LENGTH(sizeof error))
                    std::memcpy(&error, at + NLMSG_HDRLEN, sizeof error);
                if (error.error != 0) return Error::from_errno(-error.error, "netlink: " + std::string(what));
                return {};  // the acknowledgement
            }
            if (header.nlmsg_type == NLMSG_DONE) return {};
            if (TRY(each(header, std::span<const uint8_t>(at + NLMSG_HDRLEN, header.nlmsg_len - NLMSG_HDRLEN))))
                return {};
            size_t step = NLMSG_ALIGN(header.nlmsg_len);
            if (step >= left) break;
            at += step;
            left -= step;
        }
    }
}

}  // namespace

Result<void> Socket::request(Message& m, std::string_view what) {
    std::span<uint8_t> bytes = m.finish();
    nlmsghdr header;
    std::memcpy(&header, bytes.data(), sizeof header);
    header.nlmsg_flags |= NLM_F_ACK;
    header.nlmsg_seq = m_sequence++;
    std::memcpy(bytes.data(), &header, sizeof header);
    if (::send(m_fd.get(), bytes.data(), bytes.size(), 0) < 0)
        return Error::from_errno(errno, "netlink: " + std::string(what));
    return read_replies(m_fd.get(), what, [](const nlmsghdr&, std::span<const uint8_t>) -> Result<bool> {
        return false;  // anything before the acknowledgement is not ours to read
    });
}

Result<void> Socket::dump(uint16_t type, const void* fixed, size_t fixed_size, std::string_view what,
                          const std::function<Result<void>(std::span<const uint8_t>)>& each) {
    struct {
        nlmsghdr header;
        uint8_t body[64];
    } message{};
    if (fixed_size > sizeof message.body) return Error::from_string("netlink: request too large", EINVAL);
    message.header.nlmsg_len = uint32_t(NLMSG_LENGTH(fixed_size));
    message.header.nlmsg_type = type;
    message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.header.nlmsg_seq = m_sequence++;
    std::memcpy(message.body, fixed, fixed_size);
    if (::send(m_fd.get(), &message, message.header.nlmsg_len, 0) < 0)
        return Error::from_errno(errno, "netlink: dump the " + std::string(what));
    size_t entries = 0;
    return read_replies(m_fd.get(), "dump the " + std::string(what),
                        [&](const nlmsghdr&, std::span<const uint8_t> payload) -> Result<bool> {
                            if (++entries > kMaxDumpEntries)
                                return Error::from_string("netlink: more than " + std::to_string(kMaxDumpEntries) +
                                                              " " + std::string(what) + " in the namespace",
                                                          E2BIG);
                            TRY(each(payload));
                            return false;
                        });
}

void for_each_attribute(std::span<const uint8_t> bytes,
                        const std::function<void(uint16_t, std::span<const uint8_t>)>& visit) {
    while (bytes.size() >= sizeof(rtattr)) {
        rtattr a;
        std::memcpy(&a, bytes.data(), sizeof a);
        if (a.rta_len < sizeof(rtattr) || a.rta_len > bytes.size()) return;
        visit(uint16_t(a.rta_type & NLA_TYPE_MASK), bytes.subspan(RTA_LENGTH(0), a.rta_len - RTA_LENGTH(0)));
        size_t step = RTA_ALIGN(a.rta_len);
        if (step >= bytes.size()) return;
        bytes = bytes.subspan(step);
    }
}

}  // namespace husk::netlink
