#include "agent/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "vmm/base/system.h"

namespace husk::agent {

namespace {

// Reads exactly size bytes; an error on EOF.
Result<void> read_exact(int fd, void* out, size_t size) {
    auto* p = static_cast<uint8_t*>(out);
    while (size > 0) {
        ssize_t n = ::read(fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error::from_errno(errno, "read from the agent");
        if (n == 0) return Error::from_string("the agent closed the connection", ECONNRESET);
        p += n;
        size -= size_t(n);
    }
    return {};
}

Result<FrameBuffer::Frame> read_frame(int fd) {
    uint8_t header[kHeaderSize];
    TRY(read_exact(fd, header, sizeof header));
    FrameHeader h = TRY(decode_header(header));
    std::string payload(h.length, '\0');
    TRY(read_exact(fd, payload.data(), payload.size()));
    return FrameBuffer::Frame{MessageType(h.type), h.id, std::move(payload)};
}

// How long a vsock handshake may wait for the guest's answer at the least,
// however close the caller's deadline: a booting guest under emulation can
// be slow to answer, and a retry would only queue another request behind it.
constexpr auto kHandshakeFloor = std::chrono::seconds(5);

Result<UniqueFd> connect_once(const Endpoint& e, std::chrono::steady_clock::time_point deadline) {
    UniqueFd fd = TRY(sys::connect_unix(e.socket));
    if (!e.vsock) return fd;
    TRY(sys::send_all(fd.get(), "CONNECT " + std::to_string(e.port) + "\n"));
    // husk-vmm answers once the guest has (virtio-vsock RESPONSE or RST). A
    // guest that never drives its queues never answers: the wait is bounded,
    // or the caller (a reset's reseed, a container session being torn down)
    // would hang with it.
    auto until = std::max(deadline, std::chrono::steady_clock::now() + kHandshakeFloor);
    // The answer is one line, "OK <host port>"; read it byte by byte so nothing after it is consumed.
    std::string line;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        pollfd p{fd.get(), POLLIN, 0};
        int ready = ::poll(&p, 1, int(std::max<int64_t>(left.count(), 0)));
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) return Error::from_errno(errno, "wait for the vsock handshake");
        if (ready == 0) return Error::from_string("the guest did not answer the vsock connection in time", ETIMEDOUT);
        char ch;
        ssize_t n = ::read(fd.get(), &ch, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return Error::from_string("the guest refused the vsock connection", ECONNREFUSED);
        if (ch == '\n') break;
        line.push_back(ch);
        if (line.size() > 64) return Error::from_string("bad vsock handshake reply", EPROTO);
    }
    if (line.rfind("OK ", 0) != 0) return Error::from_string("vsock handshake: " + line, ECONNREFUSED);
    return fd;
}

}  // namespace

Result<UniqueFd> connect_agent(const Endpoint& endpoint, std::chrono::steady_clock::time_point deadline) {
    auto delay = std::chrono::milliseconds(1);
    for (;;) {
        auto fd = connect_once(endpoint, deadline);
        if (fd) return fd;
        if (std::chrono::steady_clock::now() + delay > deadline)
            return fd.release_error().with_context("connect to the agent at " + endpoint.socket);
        std::this_thread::sleep_for(delay);
        delay = std::min(delay * 2, std::chrono::milliseconds(50));
    }
}

Result<std::unique_ptr<AgentClient>> AgentClient::connect(const Endpoint& endpoint,
                                                          std::chrono::steady_clock::time_point deadline) {
    UniqueFd fd = TRY(connect_agent(endpoint, deadline));
    auto client = std::unique_ptr<AgentClient>(new AgentClient(endpoint, std::move(fd)));
    client->m_reader = std::thread([c = client.get()] { c->reader(); });
    return client;
}

AgentClient::AgentClient(Endpoint endpoint, UniqueFd fd) : m_endpoint(std::move(endpoint)), m_fd(std::move(fd)) {}

AgentClient::~AgentClient() {
    ::shutdown(m_fd.get(), SHUT_RDWR);  // wakes the reader
    if (m_reader.joinable()) m_reader.join();
}

void AgentClient::set_reply_deadline(std::chrono::steady_clock::time_point deadline) {
    std::lock_guard guard(m_lock);
    m_reply_deadline = deadline;
}

void AgentClient::close() {
    ::shutdown(m_fd.get(), SHUT_RDWR);
}

void AgentClient::reader() {
    for (;;) {
        auto frame = read_frame(m_fd.get());
        std::lock_guard guard(m_lock);
        if (!frame) {
            m_broken = frame.release_error();
            m_changed.notify_all();
            return;
        }
        auto& f = frame.value();
        if (f.type == MessageType::Exit) {
            Reader r(f.payload);
            std::string id = r.str();
            int status = r.i32();
            if (r.finish("Exit")) m_exits[id] = status;
        } else {
            m_replies[f.id] = Reply{f.type, std::move(f.payload)};
        }
        m_changed.notify_all();
    }
}

Result<std::string> AgentClient::call(MessageType type, std::string_view payload) {
    uint32_t id;
    {
        std::lock_guard guard(m_lock);
        if (m_broken) return Error(*m_broken).with_context(std::string(to_string(type)));
        id = m_next_id++;
    }
    {
        std::lock_guard guard(m_write_lock);
        TRY(sys::send_all(m_fd.get(), encode_frame(type, id, payload)).context(to_string(type)));
    }
    std::unique_lock lock(m_lock);
    auto answered = [&] { return m_replies.count(id) || m_broken; };
    if (!m_reply_deadline)
        m_changed.wait(lock, answered);
    else if (!m_changed.wait_until(lock, *m_reply_deadline, answered))
        return Error::from_string(std::string(to_string(type)) + ": the agent did not answer in time", ETIMEDOUT);
    auto it = m_replies.find(id);
    if (it == m_replies.end()) return Error(*m_broken).with_context(std::string(to_string(type)));
    Reply reply = std::move(it->second);
    m_replies.erase(it);
    if (reply.type == MessageType::Error) {
        Reader r(reply.payload);
        int code = r.i32();
        std::string message = r.str();
        return Error::from_string("agent: " + message, code ? code : EIO);
    }
    if (reply.type != MessageType::Ok)
        return Error::from_string("agent protocol: unexpected reply " + std::string(to_string(reply.type)), EPROTO);
    return reply.payload;
}

Result<std::string> AgentClient::hello() {
    std::string payload = TRY(call(MessageType::Hello, Writer().u16(kVersion).take()));
    Reader r(payload);
    std::string version = r.str();
    TRY(r.finish("Hello reply"));
    return version;
}

Result<void> AgentClient::setup_container(const ContainerSpec& spec) {
    TRY(call(MessageType::SetupContainer, encode(spec)));
    return {};
}

Result<uint32_t> AgentClient::create_process(const ProcessSpec& spec) {
    std::string payload = TRY(call(MessageType::CreateProcess, encode(spec)));
    Reader r(payload);
    uint32_t pid = r.u32();
    TRY(r.finish("CreateProcess reply"));
    // A new process under an id used before (a serverless container's next `init`): its exit is yet to come.
    std::unique_lock lock(m_lock);
    m_exits.erase(spec.exec_id);
    return pid;
}

Result<void> AgentClient::start(const std::string& exec_id) {
    TRY(call(MessageType::Start, Writer().str(exec_id).take()));
    return {};
}

Result<void> AgentClient::signal(const std::string& exec_id, int sig, bool all) {
    TRY(call(MessageType::Signal, Writer().str(exec_id).u32(uint32_t(sig)).boolean(all).take()));
    return {};
}

Result<void> AgentClient::resize(const std::string& exec_id, uint16_t rows, uint16_t cols) {
    TRY(call(MessageType::Resize, Writer().str(exec_id).u16(rows).u16(cols).take()));
    return {};
}

Result<void> AgentClient::close_stdin(const std::string& exec_id) {
    TRY(call(MessageType::CloseStdin, Writer().str(exec_id).take()));
    return {};
}

Result<void> AgentClient::reseed(std::string_view entropy) {
    TRY(call(MessageType::Reseed, Writer().str(entropy).take()));
    return {};
}

Result<void> AgentClient::set_pids_limit(uint64_t limit) {
    TRY(call(MessageType::SetPidsLimit, Writer().u64(limit).take()));
    return {};
}

Result<void> AgentClient::set_memory_limit(uint64_t bytes) {
    TRY(call(MessageType::SetMemoryLimit, Writer().u64(bytes).take()));
    return {};
}

Result<AgentClient::MemoryEvents> AgentClient::memory_events() {
    std::string reply = TRY(call(MessageType::MemoryEvents, {}));
    Reader r(reply);
    MemoryEvents events;
    events.oom_kills = r.u64();
    events.current = r.u64();
    TRY(r.finish("MemoryEvents reply"));
    return events;
}

Result<void> AgentClient::configure_network(const NetworkSpec& spec) {
    TRY(call(MessageType::ConfigureNetwork, encode(spec)));
    return {};
}

Result<void> AgentClient::shutdown() {
    TRY(call(MessageType::Shutdown, {}));
    return {};
}

Result<int> AgentClient::wait(const std::string& exec_id) {
    {
        std::unique_lock lock(m_lock);
        // An Exit event comes to us for processes we created; others are asked for.
        if (m_exits.count(exec_id)) return m_exits[exec_id];
    }
    std::string payload = TRY(call(MessageType::Wait, Writer().str(exec_id).take()));
    Reader r(payload);
    int status = r.i32();
    TRY(r.finish("Wait reply"));
    return status;
}

Result<UniqueFd> AgentClient::attach_stdio(const std::string& exec_id, Channel channel) {
    UniqueFd fd = TRY(connect_agent(m_endpoint, std::chrono::steady_clock::now() + std::chrono::seconds(5)));
    TRY(sys::send_all(fd.get(),
                      encode_frame(MessageType::AttachStdio, 1, Writer().str(exec_id).u8(uint8_t(channel)).take())));
    auto reply = TRY(read_frame(fd.get()).context("attach stdio"));
    if (reply.type == MessageType::Error) {
        Reader r(reply.payload);
        r.i32();
        return Error::from_string("agent: attach stdio: " + r.str());
    }
    if (reply.type != MessageType::Ok)
        return Error::from_string("agent protocol: unexpected reply to AttachStdio", EPROTO);
    return fd;
}

}  // namespace husk::agent
