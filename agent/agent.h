// Agent: husk-agent's event loop. Accepts host connections on vsock, answers
// requests (agent/PROTOCOL.md), runs container processes, relays their stdio,
// reaps every child, reports each process's exit once, and powers the VM off
// when asked after the container's process is gone.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/poller.h"
#include "agent/protocol.h"
#include "agent/pump.h"
#include "agent/spawn.h"
#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk::agent {

class Agent {
public:
    struct Options {
        std::string rootfs_mount = "/run/husk/rootfs";
        // Power off when the container's process is gone and its host connection closed.
        bool power_off = true;
        // The agent is PID 1 of the VM: when the container's process exits, kill
        // everything else, and a signal to "all" reaches every process.
        // Off in test mode, where -1 would mean every process of the host.
        bool whole_machine = true;
    };
    // `listener` is a listening socket (AF_VSOCK in the guest; any stream socket in tests).
    static Result<std::unique_ptr<Agent>> create(UniqueFd listener, Options options);
    ~Agent();

    // Serves until shutdown is requested; returns then (the caller powers off).
    Result<void> run();

private:
    struct Connection;
    struct Process;
    Agent(Poller poller, UniqueFd listener, UniqueFd signals, Options options);

    void on_accept();
    void on_connection(uint64_t id, uint32_t events);
    void close_connection(uint64_t id);
    void handle(Connection& c, FrameBuffer::Frame& frame);
    Result<std::string> handle_request(Connection& c, const FrameBuffer::Frame& frame, bool& deferred);
    Result<void> setup_container(const ContainerSpec& spec);
    Result<uint32_t> create_process(Connection& c, const ProcessSpec& spec);
    Result<void> attach(Connection& c, const std::string& exec_id, Channel channel);
    Result<Process*> lookup(const std::string& exec_id);
    void send(Connection& c, MessageType type, uint32_t id, std::string_view payload);
    void flush(Connection& c);
    void on_signal();
    void maybe_report_exit(Process& p);
    // Powers off once the container's process is gone (never in a serverless container).
    bool powers_off() const;
    void begin_shutdown();

    Poller m_poller;
    UniqueFd m_listener;
    UniqueFd m_signals;
    Options m_options;
    uint64_t m_next_connection = 1;
    std::map<uint64_t, std::unique_ptr<Connection>> m_connections;
    std::map<std::string, std::unique_ptr<Process>> m_processes;
    std::optional<ContainerSpec> m_container;
    std::optional<SeccompProgram> m_seccomp;  // the container's filter, compiled once
    UniqueFd m_first_mounts;                  // serverless: the first init's mount namespace, which later ones copy
    std::string m_cgroup;                     // the container's cgroup in the guest; empty in test mode
    pid_t m_init_pid = -1;
    bool m_network_configured = false;  // ConfigureNetwork gave the NICs the container's interfaces
    bool m_shutdown = false;
};

}  // namespace husk::agent
