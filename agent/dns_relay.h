// The container's DNS server at 127.0.0.11, relayed to the host.
//
// Docker's user-defined networks give a container `nameserver 127.0.0.11`:
// dockerd answers there inside the container's network namespace, through a
// DNAT rule to its own sockets. The guest cannot reach that address (its
// packets leave through the NIC), so the agent answers at 127.0.0.11:53 in
// the guest, UDP and TCP, and hands each query, framed as DNS over TCP
// (RFC 1035 §4.2.2: a 2-byte length, then the message), over a vsock stream
// to CID 2 port 53. husk-vmm lives in the container's namespace and sends
// that stream to the real server (vsock.dns_forward).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "vmm/base/result.h"

namespace husk::agent {

inline constexpr uint32_t kDnsRelayPort = 53;  // the host's vsock port for DNS over TCP
inline constexpr const char* kDnsRelayAddress = "127.0.0.11";

// Starts the relay on a thread of its own, once (later calls do nothing).
// Each UDP query and each TCP client is served on a thread of its own (at
// most 32 queries and 16 clients at once), so a slow answer or an idle
// client holds up no other.
// Fails when 127.0.0.11:53 cannot be bound in the guest.
Result<void> start_dns_relay();

// The answer to `query` when the host gives none (no server, or no answer in
// time): SERVFAIL with the query's id and first question, so the caller's
// resolver moves on at once instead of waiting out its timeout. Empty when
// `query` is too short or malformed to answer.
std::string servfail_for(std::string_view query);

// The UDP answer to `query` given the server's `answer` (which came over
// TCP, so of any size): as it is when it fits the client's UDP limit (512
// bytes, or 1232 when the query carries EDNS), else an empty answer with TC
// set, and the client asks again over TCP (RFC 1035 §4.2.1).
std::string for_udp(std::string_view query, std::string answer);

}  // namespace husk::agent
