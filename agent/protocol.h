// The host ↔ husk-agent protocol, shared by both ends. The wire format is in
// agent/PROTOCOL.md; this header is its one implementation.
//
// Every message is a frame: a 16-byte little-endian header (magic, version,
// type, request id, payload length) and a payload of at most kMaxPayload
// bytes, encoded with Writer and decoded with Reader. Decoding never trusts a
// length: every read is checked against the bytes that are left.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/base/wire.h"

namespace husk::agent {

inline constexpr uint32_t kMagic = 0x4b535548;  // "HUSK"
inline constexpr uint16_t kVersion = 2;
inline constexpr uint32_t kPort = 1024;              // the agent's vsock port
inline constexpr uint32_t kMaxPayload = 1 << 20;     // 1 MiB: a whole OCI process spec fits many times
inline constexpr std::string_view kInitId = "init";  // the exec id of the container's own process

enum class MessageType : uint16_t {
    // host → agent requests; each gets an Ok or Error reply with the same id
    Hello = 1,              // u16 version → Ok(string agent version)
    SetupContainer = 2,     // ContainerSpec → Ok
    CreateProcess = 3,      // ProcessSpec → Ok(u32 guest pid)
    Start = 4,              // string exec id → Ok
    Signal = 5,             // string exec id, u32 signal, u8 all → Ok
    Resize = 6,             // string exec id, u16 rows, u16 cols → Ok
    CloseStdin = 7,         // string exec id → Ok
    Wait = 8,               // string exec id → Ok(i32 status) once the process has exited
    AttachStdio = 9,        // string exec id, u8 channel → Ok; the connection then carries raw bytes
    Shutdown = 10,          // → Ok; then the agent syncs, unmounts and powers off
    Reseed = 11,            // string entropy (16-512 bytes) → Ok once the guest's RNG is reseeded with it
    SetPidsLimit = 12,      // u64 limit (0: none) → Ok once the container's cgroup in the guest has it
    ConfigureNetwork = 13,  // NetworkSpec → Ok once the guest's NICs have it
    SetMemoryLimit = 14,    // u64 bytes (0: none) → Ok once the container's cgroup in the guest has it
    MemoryEvents = 15,      // → Ok(u64 oom kills, u64 bytes in use) of the container's cgroup in the guest
    // agent → host
    Ok = 0x80,
    Error = 0x81,  // i32 errno, string message
    Exit = 0x82,   // string exec id, i32 status: sent once per process, unsolicited (id 0)
};

std::string_view to_string(MessageType type);

enum class Channel : uint8_t { Stdin = 0, Stdout = 1, Stderr = 2 };

// Which stdio channels the host will attach; the others read /dev/null or are discarded.
inline constexpr uint8_t kAttachStdin = 1 << 0;
inline constexpr uint8_t kAttachStdout = 1 << 1;
inline constexpr uint8_t kAttachStderr = 1 << 2;

struct FrameHeader {
    uint32_t magic = kMagic;
    uint16_t version = kVersion;
    uint16_t type = 0;
    uint32_t id = 0;
    uint32_t length = 0;
};
inline constexpr size_t kHeaderSize = 16;

std::string encode_frame(MessageType type, uint32_t id, std::string_view payload);
// Checks magic, version and length. The payload follows the header.
Result<FrameHeader> decode_header(std::span<const uint8_t> bytes);

// Payload fields: little-endian, bounds-checked (vmm/base/wire.h).
using Writer = wire::Writer;
class Reader : public wire::Reader {
public:
    explicit Reader(std::string_view payload) : wire::Reader(payload, "agent protocol") {}
};

struct Rlimit {
    std::string type;  // "RLIMIT_NOFILE", as in the OCI spec
    uint64_t soft = 0;
    uint64_t hard = 0;
    bool operator==(const Rlimit&) const = default;
};

// The five capability sets of a process, one bit per capability number
// (CAP_CHOWN is bit 0), as in process.capabilities.
struct Capabilities {
    uint64_t bounding = 0;
    uint64_t effective = 0;
    uint64_t inheritable = 0;
    uint64_t permitted = 0;
    uint64_t ambient = 0;
    bool operator==(const Capabilities&) const = default;
};

struct ProcessSpec {
    std::string exec_id;
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::string cwd = "/";
    uint32_t uid = 0;
    uint32_t gid = 0;
    std::vector<uint32_t> additional_gids;
    std::optional<uint32_t> umask;
    std::vector<Rlimit> rlimits;
    bool no_new_privileges = false;
    std::optional<int32_t> oom_score_adj;
    // Absent: the process keeps what its uid gives it (root: every capability).
    std::optional<Capabilities> capabilities;
    bool terminal = false;
    uint16_t rows = 0;  // terminal size at start; 0 leaves the kernel's default
    uint16_t cols = 0;
    uint8_t attach = kAttachStdin | kAttachStdout | kAttachStderr;
    bool operator==(const ProcessSpec&) const = default;
};

struct Mount {
    std::string destination;
    std::string type;                  // proc, sysfs, tmpfs, devpts, mqueue, cgroup, bind
    std::string source;                // for bind: a path inside the rootfs
    std::vector<std::string> options;  // OCI mount options: "nosuid", "ro", "mode=755", ...
    bool operator==(const Mount&) const = default;
};

// Namespaces the container's processes get inside the guest, besides the
// mount namespace every container has. `exec` joins the container's.
inline constexpr uint32_t kNamespacePid = 1 << 0;
inline constexpr uint32_t kNamespaceIpc = 1 << 1;
inline constexpr uint32_t kNamespaceUts = 1 << 2;
inline constexpr uint32_t kNamespaceCgroup = 1 << 3;
inline constexpr uint32_t kKnownNamespaces = 0xf;

// linux.seccomp, resolved by the host to numbers; the agent compiles it with
// libseccomp once per container and every process of the container loads it.
enum class SeccompAction : uint8_t {
    KillThread = 0,
    KillProcess = 1,
    Trap = 2,
    Errno = 3,
    Trace = 4,
    Allow = 5,
    Log = 6
};
// libseccomp's scmp_compare numbering.
enum class SeccompOp : uint8_t { NotEqual = 1, LessThan, LessEqual, Equal, GreaterEqual, GreaterThan, MaskedEqual };
struct SeccompArg {
    uint32_t index = 0;
    uint64_t value = 0;
    uint64_t value_two = 0;
    SeccompOp op = SeccompOp::Equal;
    bool operator==(const SeccompArg&) const = default;
};
struct SeccompRule {
    std::vector<std::string> names;  // syscall names; ones this kernel does not know are skipped
    SeccompAction action = SeccompAction::Allow;
    uint32_t errno_ret = 1;  // for Errno (EPERM unless given) and Trace
    std::vector<SeccompArg> args;
    bool operator==(const SeccompRule&) const = default;
};
struct Seccomp {
    SeccompAction default_action = SeccompAction::Allow;
    uint32_t default_errno = 1;
    std::vector<std::string> architectures;  // libseccomp's names: "x86_64", "x86", "x32", ...
    uint32_t flags = 0;                      // SECCOMP_FILTER_FLAG_LOG, _SPEC_ALLOW
    std::vector<SeccompRule> rules;
    bool operator==(const Seccomp&) const = default;
};

struct Sysctl {
    std::string name;  // "net.ipv4.ip_unprivileged_port_start", or with slashes
    std::string value;
    bool operator==(const Sysctl&) const = default;
};

struct ContainerSpec {
    std::string rootfs_device = "/dev/vda";
    std::string rootfs_type = "ext4";
    bool readonly = false;
    std::string hostname;
    std::vector<Mount> mounts;
    std::vector<std::string> masked_paths;
    std::vector<std::string> readonly_paths;
    uint32_t namespaces = 0;  // kNamespace* bits
    std::vector<Sysctl> sysctls;
    std::optional<Seccomp> seccomp;
    // linux.resources.pids.limit: pids.max of the container's cgroup in the guest (absent: no limit).
    std::optional<uint64_t> pids_limit;
    // `husk serve`: the container runs one `init` after another (one per
    // invocation), and the VM outlives each of them (no power-off).
    bool serverless = false;
    bool operator==(const ContainerSpec&) const = default;
};

// The container's network as the host read it from the engine's namespace:
// interface i is the guest's i-th NIC, which takes its name, MAC, MTU and
// addresses; each route goes through one of them.
struct IpAddress {
    uint8_t family = 0;   // AF_INET or AF_INET6
    std::string address;  // "172.17.0.2"
    uint8_t prefix = 0;
    bool operator==(const IpAddress&) const = default;
};
struct InterfaceSpec {
    std::string name;  // "eth0"
    std::array<uint8_t, 6> mac{};
    uint32_t mtu = 1500;
    std::vector<IpAddress> addresses;
    bool operator==(const InterfaceSpec&) const = default;
};
struct RouteSpec {
    uint8_t family = 0;
    std::string destination;  // empty: the default route
    uint8_t prefix = 0;
    std::string gateway;     // empty: on the link
    uint32_t interface = 0;  // an index into NetworkSpec::interfaces
    bool operator==(const RouteSpec&) const = default;
};
struct NetworkSpec {
    std::vector<InterfaceSpec> interfaces;
    std::vector<RouteSpec> routes;
    // The container's resolv.conf names 127.0.0.11 (Docker's embedded DNS):
    // the agent answers there and relays to the host (agent/dns_relay.h).
    bool dns_relay = false;
    bool operator==(const NetworkSpec&) const = default;
};
inline constexpr size_t kMaxInterfaces = 8, kMaxAddresses = 64, kMaxRoutes = 256;

std::string encode(const ProcessSpec& spec);
std::string encode(const ContainerSpec& spec);
std::string encode(const NetworkSpec& spec);
Result<NetworkSpec> decode_network_spec(std::string_view payload);
Result<ProcessSpec> decode_process_spec(std::string_view payload);
Result<ContainerSpec> decode_container_spec(std::string_view payload);

// What husk-agent is told to set up and run for a container: the runtime
// translates the OCI config into this (vmm/client/agent_specs.h) and hands it
// to husk-vmm as a file (`husk-vmm --container FILE`), so husk-vmm never
// parses an OCI config itself.
struct Specs {
    ContainerSpec container;
    ProcessSpec process;
    std::vector<std::string> ignored;  // what the guest cannot honour (host binds, AppArmor, ...), for the log
    bool operator==(const Specs&) const = default;
};
// The file: "HUSKSPEC", a format version, then the two specs as on the wire
// and what is ignored. Anything else (an OCI config.json given by
// mistake, a truncated file) is refused whole.
inline constexpr std::string_view kSpecsFileMagic = "HUSKSPEC";
inline constexpr uint32_t kSpecsFileVersion = 2;
std::string encode_specs_file(const Specs& specs);
Result<Specs> decode_specs_file(std::string_view bytes);

// Frames arrive in pieces; FrameBuffer collects bytes and hands out whole frames.
class FrameBuffer {
public:
    struct Frame {
        MessageType type;
        uint32_t id;
        std::string payload;
    };
    void append(std::span<const uint8_t> bytes);
    // The next whole frame, nothing when more bytes are needed, or an error for
    // a malformed header (the connection must then be dropped).
    Result<std::optional<Frame>> next();
    // Whatever follows the last whole frame (a stream's first bytes after AttachStdio).
    std::string take_rest() { return std::exchange(m_bytes, {}); }

private:
    std::string m_bytes;
};

// The status a shell reports: the exit code, or 128 + the signal that killed it.
int shell_status(int wait_status);

}  // namespace husk::agent
