// seccomp filters for husk-vmm, one allowlist per kind of thread (libseccomp).
//
// A vCPU thread may run KVM_RUN and little else; the event loop drives
// io_uring and gives memory back; the control threads (main, API, container
// session) may also open snapshot files and use the rest of the KVM API. Each
// thread installs its own filter before it touches anything the guest
// controls, and threads it starts later inherit it (filters stack, so a
// thread's effective list is the intersection of its own and its creator's:
// the control list is a superset of the others).
//
// A call outside the list raises SIGSYS. The handler names the call (and an
// ioctl's request) in the log and kills the process with SIGSYS, so the
// runtime sees husk-vmm "killed by SIGSYS".
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/result.h"

namespace husk::seccomp {

// Sanitizer builds (tests only) also let the control threads clone, ptrace and
// wait: LeakSanitizer's check at exit needs them.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitizerBuild = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitizerBuild = true;
#else
inline constexpr bool kSanitizerBuild = false;
#endif
#else
inline constexpr bool kSanitizerBuild = false;
#endif

enum class Thread { Control, EventLoop, Vcpu };

enum class Mode {
    Off,      // no filters (--no-seccomp: for debugging only)
    Enforce,  // a forbidden call kills the process, named in the log
    Log,      // forbidden calls are allowed and logged by the kernel (audit); finds gaps in a list
};

Result<Mode> parse_mode(std::string_view text);
std::string_view mode_name(Mode mode);

// Process-wide; main() calls it once before any thread starts. Enforce also
// installs the SIGSYS handler and turns core dumps off (a core holds guest
// memory). Until it is called the mode is Off, so tests and tools that link
// the VMM library install nothing.
Result<void> configure(Mode mode);
Mode mode();

// The VM shares host directories (virtio-fs): the event loop, and the control
// threads whose list is a superset of it, may also make the FUSE server's file
// system calls. Process-wide, before the first filter is installed.
void allow_file_sharing();

// vsock.dns_forward: the event loop may also make TCP sockets (AF_INET,
// SOCK_STREAM) and connect them. Process-wide, before the first filter.
void allow_dns_forward();

// Installs `kind`'s filter on the calling thread; a no-op when the mode is Off.
Result<void> install(Thread kind);

// --seccomp-selftest: after installing its filter, the first thread of `kind`
// makes a call its list forbids (an AF_INET datagram socket), to show the filter at work.
void set_selftest(Thread kind);
Result<Thread> parse_thread(std::string_view text);

std::string_view thread_name(Thread kind);
// The system calls `kind` may make, by name, sorted (ioctl once, whatever its requests).
std::vector<std::string> allowed(Thread kind);

}  // namespace husk::seccomp
