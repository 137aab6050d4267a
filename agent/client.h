// AgentClient: the host end of the agent protocol (agent/PROTOCOL.md).
//
// Reaches the agent through husk-vmm's vsock Unix socket ("CONNECT <port>"
// handshake) or, for tests, a husk-agent serving a plain Unix socket. One
// control connection carries requests; a reader thread matches replies to
// waiting callers and collects Exit events. Stdio streams are separate
// connections (attach_stdio).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "agent/protocol.h"
#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk::agent {

struct Endpoint {
    std::string socket;  // husk-vmm's vsock socket, or the agent's own Unix socket
    bool vsock = true;   // send the vsock CONNECT handshake first
    uint32_t port = kPort;
};

// One connection to the agent, retried until `deadline` while the guest boots.
Result<UniqueFd> connect_agent(const Endpoint& endpoint, std::chrono::steady_clock::time_point deadline);

class AgentClient {
public:
    static Result<std::unique_ptr<AgentClient>> connect(const Endpoint& endpoint,
                                                        std::chrono::steady_clock::time_point deadline);
    ~AgentClient();

    // Fails every pending and later request (the reader sees the connection end).
    void close();
    // Requests whose reply has not come by `deadline` fail with ETIMEDOUT
    // (for short exchanges with a guest that may never answer); by default
    // a request waits as long as the agent takes.
    void set_reply_deadline(std::chrono::steady_clock::time_point deadline);

    Result<std::string> hello();  // the agent's version
    Result<void> setup_container(const ContainerSpec& spec);
    Result<uint32_t> create_process(const ProcessSpec& spec);  // the guest pid
    Result<void> start(const std::string& exec_id);
    Result<void> signal(const std::string& exec_id, int signal, bool all = false);
    Result<void> resize(const std::string& exec_id, uint16_t rows, uint16_t cols);
    Result<void> close_stdin(const std::string& exec_id);
    Result<void> shutdown();
    // Mixes host entropy into the guest's RNG and reseeds it: a VM restored
    // from a snapshot would otherwise repeat the snapshot's random numbers.
    Result<void> reseed(std::string_view entropy);
    // pids.max of the container's cgroup in the guest; 0 lifts the limit.
    Result<void> set_pids_limit(uint64_t limit);
    // memory.max of the container's cgroup in the guest; 0 lifts the limit.
    Result<void> set_memory_limit(uint64_t bytes);
    struct MemoryEvents {
        uint64_t oom_kills = 0;  // processes of the container any OOM killer stopped
        uint64_t current = 0;    // bytes the container's cgroup holds
    };
    Result<MemoryEvents> memory_events();
    // The guest's NICs take the container's interfaces, addresses and routes.
    Result<void> configure_network(const NetworkSpec& spec);
    // Waits for the process's Exit event (sent to the connection that created
    // it) or, for a process created elsewhere, asks with Wait.
    Result<int> wait(const std::string& exec_id);

    // A stdio stream of a created process: raw bytes after the Ok reply.
    Result<UniqueFd> attach_stdio(const std::string& exec_id, Channel channel);

private:
    struct Reply {
        MessageType type;
        std::string payload;
    };
    AgentClient(Endpoint endpoint, UniqueFd fd);
    Result<std::string> call(MessageType type, std::string_view payload);
    void reader();

    Endpoint m_endpoint;
    UniqueFd m_fd;
    std::mutex m_write_lock;
    std::mutex m_lock;
    std::condition_variable m_changed;
    uint32_t m_next_id = 1;
    std::map<uint32_t, Reply> m_replies;
    std::map<std::string, int> m_exits;
    std::optional<Error> m_broken;  // set when the connection fails; every waiter gets it
    std::optional<std::chrono::steady_clock::time_point> m_reply_deadline;
    std::thread m_reader;
};

}  // namespace husk::agent
