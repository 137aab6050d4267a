#include "agent/pump.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace husk::agent {

Pump::Pump(Poller& poller, UniqueFd source, UniqueFd sink, SinkKind kind, std::string initial,
           std::function<void()> done, OnSinkFailure on_sink_failure)
    : m_poller(poller),
      m_source(std::move(source)),
      m_sink(std::move(sink)),
      m_kind(kind),
      m_buffer(std::move(initial)),
      m_done(std::move(done)),
      m_on_sink_failure(on_sink_failure) {}

Pump::~Pump() {
    if (m_source) m_poller.unwatch(m_source.get());
    if (m_sink) m_poller.unwatch(m_sink.get());
}

Result<void> Pump::start() {
    // Registered with no events; update() arms what is needed.
    TRY(m_poller.watch(m_source.get(), 0, [this](uint32_t e) { on_source(e); }));
    TRY(m_poller.watch(m_sink.get(), 0, [this](uint32_t e) { on_sink(e); }));
    update();
    return {};
}

void Pump::close_source() {
    if (!m_source) return;
    m_poller.unwatch(m_source.get());
    m_source.reset();
    m_source_eof = true;
    update();
}

void Pump::on_source(uint32_t) {
    while (!m_source_eof && m_buffer.size() - m_offset < kBufferLimit) {
        char chunk[65536];
        ssize_t n = ::read(m_source.get(), chunk, sizeof chunk);
        if (n > 0) {
            // A failed sink still drains its source, so the writer never blocks on a dead reader.
            if (!m_sink_failed) m_buffer.append(chunk, size_t(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        // 0 is EOF; EIO is how a pty master says its last slave closed.
        m_poller.unwatch(m_source.get());
        m_source.reset();
        m_source_eof = true;
    }
    if (!m_sink_failed) on_sink(EPOLLOUT);
    update();
}

void Pump::on_sink(uint32_t events) {
    // The reader closed its end (a pipe's EPOLLERR, a socket's EPOLLHUP).
    if (events & (EPOLLERR | EPOLLHUP)) m_sink_failed = true;
    while (!m_sink_failed && m_sink && m_offset < m_buffer.size()) {
        ssize_t n = m_kind == SinkKind::Socket
                        ? ::send(m_sink.get(), m_buffer.data() + m_offset, m_buffer.size() - m_offset, MSG_NOSIGNAL)
                        : ::write(m_sink.get(), m_buffer.data() + m_offset, m_buffer.size() - m_offset);
        if (n > 0) {
            m_offset += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        m_sink_failed = true;  // the reader went away: drop what is buffered
    }
    if (m_sink_failed && m_source && m_on_sink_failure == OnSinkFailure::CloseSource) {
        m_poller.unwatch(m_source.get());
        m_source.reset();
        m_source_eof = true;
    }
    if (m_offset == m_buffer.size() || m_sink_failed) {
        m_buffer.clear();
        m_offset = 0;
    } else if (m_offset > kBufferLimit) {
        m_buffer.erase(0, m_offset);
        m_offset = 0;
    }
    update();
}

void Pump::finish_sink() {
    if (m_sink) {
        m_poller.unwatch(m_sink.get());
        if (m_kind == SinkKind::Socket && !m_sink_failed) ::shutdown(m_sink.get(), SHUT_WR);
        // A pty has no end of file; the terminal's EOF character is how a reader at the slave sees one.
        if (m_kind == SinkKind::Pty && !m_sink_failed) {
            char eot = 0x04;
            [[maybe_unused]] ssize_t w = ::write(m_sink.get(), &eot, 1);
        }
        m_sink.reset();
    }
    if (!m_finished) {
        m_finished = true;
        if (m_done) m_done();  // may destroy this Pump: nothing after this
    }
}

void Pump::update() {
    if (m_finished) return;
    bool drained = m_buffer.size() == m_offset || m_sink_failed;
    if (m_source_eof && drained) {
        finish_sink();
        return;
    }
    uint32_t source_events = (!m_source_eof && m_buffer.size() - m_offset < kBufferLimit) ? uint32_t(EPOLLIN) : 0;
    uint32_t sink_events = (!drained && m_sink) ? uint32_t(EPOLLOUT) : 0;
    if (m_source && source_events != m_source_events) {
        (void)m_poller.modify(m_source.get(), source_events);
        m_source_events = source_events;
    }
    if (m_sink && sink_events != m_sink_events) {
        (void)m_poller.modify(m_sink.get(), sink_events);
        m_sink_events = sink_events;
    }
}

}  // namespace husk::agent
