// ContainerSession: husk-vmm's side of a container. Once the guest's agent
// listens, it sets up the container from the OCI config, creates and starts
// its process, relays husk-vmm's own stdio to it, forwards signals, and when
// the process exits asks the agent to power off — husk-vmm then exits with the
// process's status (DESIGN.md "Process model").
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/client.h"
#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk {

class ContainerSession {
public:
    struct Callbacks {
        // The session failed or the process exited: stop the VM with this status.
        std::function<void(int status, const std::string& reason)> stop;
        // The process exited with `status` and the agent is powering off.
        std::function<void(int status)> exited;
    };
    struct Options {
        // OCI create/start: set everything up, then wait for request_start().
        bool wait_for_start = false;
        // Told "ok\n" once the process is created, or "error: <why>\n"; then closed.
        int ready_fd = -1;
    };
    ContainerSession(agent::Specs specs, agent::Endpoint endpoint, Options options, Callbacks callbacks);
    ~ContainerSession();

    void start();
    // A signal husk-vmm received: forwarded to the container's process once it
    // runs. Returns false when there is nothing to forward it to yet.
    bool forward_signal(int signal);

    enum class Status { Creating, Created, Running, Stopped };
    Status status();
    static const char* to_string(Status status);
    // The OCI `start`: lets a waiting session start the process.
    Result<void> request_start();
    // Signals the running process (all: every process in the container).
    Result<void> signal(int signal, bool all);
    Result<void> resize(uint16_t rows, uint16_t cols);
    // The terminal size of husk-vmm's own stdin changed (SIGWINCH): pass it on.
    void terminal_resized();

private:
    // The session thread's body: run(), then what its outcome means for the VM.
    void session();
    Result<int> run();

    void report_ready(const std::string& line);

    agent::Specs m_specs;
    agent::Endpoint m_endpoint;
    Options m_options;
    Status m_status = Status::Creating;
    bool m_start_requested = false;
    Callbacks m_callbacks;
    std::thread m_thread;
    std::mutex m_lock;
    std::unique_ptr<agent::AgentClient> m_client;
    bool m_cancelled = false;
    std::condition_variable m_done;
    UniqueFd m_stdin, m_stdout, m_stderr;  // the stdio streams; shut down to end the relays early
    UniqueFd m_stop;                       // eventfd: ends the stdin relay
    std::thread m_stdin_thread;
};

}  // namespace husk
