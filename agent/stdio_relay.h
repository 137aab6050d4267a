// The host end of a process's stdio streams: blocking relays, one thread each.
#pragma once

namespace husk::agent {

enum class RelayEnd {
    StreamEnded,  // the guest's stream reached end of file; everything was written
    ReaderGone,   // `fd`'s reader closed (EPIPE) or `fd` failed: the stream was shut down
};

// Copies `stream` to `fd` until the stream ends. Whatever `fd` is — a
// blocking or non-blocking pipe or FIFO, a file, a pty — every byte read is
// written: a full non-blocking fd (EAGAIN) is waited for with poll, never
// dropped. If `fd`'s reader goes away, the stream is shut down both ways, so
// the guest's writer sees EPIPE as it would writing to that pipe directly;
// SIGPIPE is blocked in the calling thread and taken back, so the process
// never dies of it.
RelayEnd relay_output(int stream, int fd);
// Copies `fd` to `stream` until `fd` ends, then shuts the stream's write side
// (the process reads end of file). Returns early, without that, once `stop`
// (an eventfd) is readable.
void relay_input(int fd, int stream, int stop);

}  // namespace husk::agent
