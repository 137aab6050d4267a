// Thin wrappers over the system calls husk uses, each returning Result.
// The context of an error names the call and, where useful, its object.
#pragma once

#include <sys/types.h>
#include <sys/un.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk::sys {

Result<UniqueFd> open(const std::string& path, int flags, mode_t mode = 0);
Result<UniqueFd> memfd_create(const std::string& name, unsigned flags);
Result<void> ftruncate(int fd, off_t size);
Result<int> ioctl(int fd, unsigned long request, unsigned long arg, std::string_view what);
Result<int> ioctl(int fd, unsigned long request, const void* arg, std::string_view what);
Result<UniqueFd> eventfd(unsigned initval, int flags);
// The AF_UNIX address of `path`; fails if the path does not fit sun_path.
Result<sockaddr_un> unix_address(const std::string& path);
// A connected AF_UNIX stream socket.
Result<UniqueFd> connect_unix(const std::string& path);
// A blocking listening socket at `path` (a stale one there is replaced), its file given `mode` when not 0.
// The file appears only once the socket listens, with its mode, so a client that sees it can connect.
Result<UniqueFd> listen_unix(const std::string& path, int backlog, mode_t mode = 0);
// Reads a whole file into memory (regular files; refuses anything over max_size bytes).
// The directory of the running executable (/proc/self/exe), or ".".
std::string executable_dir();

// Opens the /proc/self files the two below read, so they still work where
// /proc is gone (the jail); they are otherwise opened on first use.
void open_proc_self();
// This process's resident memory in KiB (/proc/self/statm); 0 if unknown.
uint64_t resident_kib();
// This process's resident memory by kind (/proc/self/status RssAnon, RssFile,
// RssShmem): guest RAM in a memfd is shmem; a snapshot's private mapping is
// file until written, then anon.
struct ResidentBreakdown {
    uint64_t anon = 0, file = 0, shmem = 0;
};
std::optional<ResidentBreakdown> resident_breakdown_kib();
Result<std::string> read_file(const std::string& path, size_t max_size = size_t(1) << 31);
// At most the last `max_size` bytes of `path` (a log's end, for an error message); empty when it cannot be read.
std::string read_tail(const std::string& path, size_t max_size = 2000);
// Creates or truncates `path` (with `mode` when created) and writes `data` to it.
Result<void> write_file(const std::string& path, std::string_view data, mode_t mode = 0600);
// One write to a file that must already exist (a kernel control file: a
// cgroup's, a /proc one): no create, no truncate.
Result<void> write_text(const std::string& path, std::string_view text);
// Writes all of data, retrying on short writes and EINTR.
Result<void> write_all(int fd, std::span<const uint8_t> data);
Result<void> write_all(int fd, std::string_view data);
// write_all for a socket: send() with MSG_NOSIGNAL, so a peer that hung up
// is an EPIPE error, not a SIGPIPE that kills the process (husk-vmm's API
// thread answering a client that left, a CLI talking to a VMM that exited).
Result<void> send_all(int sock, std::string_view data);

}  // namespace husk::sys
