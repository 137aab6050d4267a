// The host end of a process's stdio streams: blocking relays, one thread each.
#pragma once

namespace husk::agent {

// Copies `stream` to `fd` until the stream ends. A failing `fd` (a closed
// stdout) drops the rest but keeps reading, so the guest never stalls.
void relay_output(int stream, int fd);
// Copies `fd` to `stream` until `fd` ends, then shuts the stream's write side
// (the process reads end of file). Returns early, without that, once `stop`
// (an eventfd) is readable.
void relay_input(int fd, int stream, int stop);

}  // namespace husk::agent
