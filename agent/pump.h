// Pump: copies bytes from one non-blocking fd to another through the agent's
// Poller, with back-pressure (it stops reading while its buffer is full) —
// the relay between a container's stdio pipes or pty and a vsock stream.
#pragma once

#include <functional>
#include <string>

#include "agent/poller.h"
#include "vmm/base/unique_fd.h"

namespace husk::agent {

class Pump {
public:
    enum class SinkKind { Socket, Pipe, Pty };
    // What a failed sink (its reader gone) does to the source. A process's
    // output pipe is closed, so the process's next write fails with EPIPE as
    // it would under runc writing to that reader; a pty or a host stream is
    // drained into nothing, so its writer never blocks on a dead reader.
    enum class OnSinkFailure { DrainSource, CloseSource };
    // `initial` is written to `sink` before anything read from `source`.
    // `done` runs once the source reached EOF and everything was written (or
    // the sink failed and the source was drained or closed).
    Pump(Poller& poller, UniqueFd source, UniqueFd sink, SinkKind kind, std::string initial, std::function<void()> done,
         OnSinkFailure on_sink_failure = OnSinkFailure::DrainSource);
    ~Pump();
    Pump(const Pump&) = delete;
    Pump& operator=(const Pump&) = delete;

    Result<void> start();
    // Stops reading: what is buffered is still written, then the sink is closed.
    void close_source();

private:
    static constexpr size_t kBufferLimit = 256 * 1024;
    void on_source(uint32_t events);
    void on_sink(uint32_t events);
    void update();
    void finish_sink();

    Poller& m_poller;
    UniqueFd m_source;
    UniqueFd m_sink;
    SinkKind m_kind;
    std::string m_buffer;
    size_t m_offset = 0;
    bool m_source_eof = false;
    bool m_sink_failed = false;
    bool m_finished = false;
    uint32_t m_source_events = 0;
    uint32_t m_sink_events = 0;
    std::function<void()> m_done;
    OnSinkFailure m_on_sink_failure;
};

}  // namespace husk::agent
