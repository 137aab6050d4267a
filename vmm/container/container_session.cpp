#include "vmm/container/container_session.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "agent/stdio_relay.h"
#include "vmm/base/clock.h"
#include "vmm/base/guarded_thread.h"
#include "vmm/base/log.h"
#include "vmm/base/system.h"

namespace husk {

ContainerSession::ContainerSession(agent::Specs specs, agent::Endpoint endpoint, Options options, Callbacks callbacks)
    : m_specs(std::move(specs)),
      m_endpoint(std::move(endpoint)),
      m_options(options),
      m_callbacks(std::move(callbacks)) {}

void ContainerSession::report_ready(const std::string& line) {
    if (m_options.ready_fd < 0) return;
    (void)sys::write_all(m_options.ready_fd, line);
    ::close(m_options.ready_fd);
    m_options.ready_fd = -1;
}

const char* ContainerSession::to_string(Status status) {
    switch (status) {
        case Status::Creating:
            return "creating";
        case Status::Created:
            return "created";
        case Status::Running:
            return "running";
        case Status::Stopped:
            return "stopped";
    }
    return "unknown";
}

ContainerSession::Status ContainerSession::status() {
    std::lock_guard guard(m_lock);
    return m_status;
}

Result<void> ContainerSession::request_start() {
    std::lock_guard guard(m_lock);
    if (m_status != Status::Created)
        return Error::from_string(std::string("the container is ") + to_string(m_status) + ", not created", EINVAL);
    if (m_start_requested) return Error::from_string("the container is already starting", EINVAL);
    m_start_requested = true;
    m_done.notify_all();
    return {};
}

Result<void> ContainerSession::signal(int sig, bool all) {
    agent::AgentClient* c;
    {
        std::lock_guard guard(m_lock);
        if (m_status != Status::Running || !m_client)
            return Error::from_string(std::string("the container is ") + to_string(m_status) + ", not running", ESRCH);
        c = m_client.get();
    }
    return c->signal(std::string(agent::kInitId), sig, all);
}

Result<void> ContainerSession::resize(uint16_t rows, uint16_t cols) {
    agent::AgentClient* c;
    {
        std::lock_guard guard(m_lock);
        if (!m_client || m_status == Status::Creating || m_status == Status::Stopped)
            return Error::from_string("the container's process does not exist", ESRCH);
        c = m_client.get();
    }
    return c->resize(std::string(agent::kInitId), rows, cols);
}

void ContainerSession::terminal_resized() {
    if (!m_specs.process.terminal) return;
    winsize ws{};
    if (::ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0 && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0) return;
    if (auto r = resize(ws.ws_row, ws.ws_col); !r) log::debug("resize: {}", r.error().message());
}

ContainerSession::~ContainerSession() {
    if (m_stop) {
        uint64_t one = 1;
        [[maybe_unused]] ssize_t w = ::write(m_stop.get(), &one, sizeof one);
    }
    {
        // Unblocks a run() still connecting, waiting on the agent or relaying (the VM is going away).
        std::lock_guard guard(m_lock);
        m_cancelled = true;
        m_done.notify_all();
        if (m_client) m_client->close();
        for (UniqueFd* fd : {&m_stdin, &m_stdout, &m_stderr})
            if (*fd) ::shutdown(fd->get(), SHUT_RDWR);
    }
    if (m_thread.joinable()) m_thread.join();
    if (m_stdin_thread.joinable()) m_stdin_thread.join();
}

void ContainerSession::start() {
    m_stop = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    m_thread = std::thread([this] {
        run_guarded(
            "container session", [this] { session(); },
            [this] { m_callbacks.stop(1, "container: the session failed (logged above)"); });
    });
}

void ContainerSession::session() {
    auto status = run();
    {
        std::lock_guard guard(m_lock);
        m_status = Status::Stopped;
    }
    if (!status) {
        report_ready("error: " + status.error().message() + "\n");
        m_callbacks.stop(1, "container: " + status.error().message());
        return;
    }
    // The agent powers the guest off now; if it does not, stop the VM anyway.
    std::unique_lock lock(m_lock);
    if (!m_done.wait_for(lock, std::chrono::seconds(10), [this] { return m_cancelled; }))
        m_callbacks.stop(status.value(), "the guest did not power off after its container exited");
}

bool ContainerSession::forward_signal(int sig) {
    if (status() != Status::Running) return false;
    // signal() calls the agent without holding m_lock, so the API's state requests are not held up.
    if (auto r = signal(sig, false); !r) log::warn("forward signal {} to the container: {}", sig, r.error().message());
    return true;
}

Result<int> ContainerSession::run() {
    // The agent listens once the guest booted; short attempts keep the session cancellable.
    auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(2);
    std::unique_ptr<agent::AgentClient> client;
    for (;;) {
        {
            std::lock_guard guard(m_lock);
            if (m_cancelled) return Error::from_string("the VM stopped before its agent answered", ECANCELED);
        }
        auto attempt =
            agent::AgentClient::connect(m_endpoint, std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
        if (attempt) {
            client = attempt.release_value();
            break;
        }
        if (std::chrono::steady_clock::now() > give_up) return attempt.release_error();
    }
    agent::AgentClient* c = client.get();
    {
        std::lock_guard guard(m_lock);
        if (m_cancelled) return Error::from_string("the VM stopped before its agent answered", ECANCELED);
        m_client = std::move(client);
    }

    // Phase lines ("container: <phase> at <ms> ms") are what husk-bench's agent scenario reads.
    auto phase = [](const char* what) { log::debug("container: {} at {:.3f} ms", what, clock::ms_since_start()); };
    std::string version = TRY(c->hello());
    phase("agent ready");
    // A VM restored from a template holds the template's RNG state: every
    // container reseeds its guest from the host before anything runs.
    std::string entropy(64, '\0');
    if (::getrandom(entropy.data(), entropy.size(), 0) != ssize_t(entropy.size()))
        return Error::from_errno(errno, "getrandom");
    TRY(c->reseed(entropy).context("reseed the guest's RNG"));
    for (const auto& ignored : m_specs.ignored) log::warn("{} cannot be honoured in the guest; ignored", ignored);
    TRY(c->setup_container(m_specs.container));
    phase("container set up");

    agent::ProcessSpec& p = m_specs.process;
    if (p.terminal && !p.rows) {
        winsize ws{};
        if (::ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 || ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
            p.rows = ws.ws_row;
            p.cols = ws.ws_col;
        }
    }
    TRY(c->create_process(p));
    phase("process created");
    const std::string id(agent::kInitId);
    UniqueFd in = TRY(c->attach_stdio(id, agent::Channel::Stdin));
    UniqueFd out = TRY(c->attach_stdio(id, agent::Channel::Stdout));
    UniqueFd err;
    if (p.attach & agent::kAttachStderr) err = TRY(c->attach_stdio(id, agent::Channel::Stderr));
    {
        // Owned here until the session ends, so the destructor can shut them down.
        std::lock_guard guard(m_lock);
        m_stdin = std::move(in);
        m_stdout = std::move(out);
        m_stderr = std::move(err);
    }
    auto relay_out = [](int stream, int fd) {
        run_guarded("output relay", [stream, fd] {
            if (agent::relay_output(stream, fd) == agent::RelayEnd::ReaderGone)
                log::info("the reader of fd {} closed it; the container's writes to it now fail (EPIPE)", fd);
        });
    };
    std::thread out_thread(relay_out, m_stdout.get(), STDOUT_FILENO);
    std::thread err_thread;
    if (m_stderr) err_thread = std::thread(relay_out, m_stderr.get(), STDERR_FILENO);
    m_stdin_thread = std::thread([this] {
        run_guarded("input relay", [this] { agent::relay_input(STDIN_FILENO, m_stdin.get(), m_stop.get()); });
    });
    {
        std::unique_lock lock(m_lock);
        m_status = Status::Created;
        report_ready("ok\n");
        if (m_options.wait_for_start) {
            m_done.wait(lock, [this] { return m_start_requested || m_cancelled; });
            if (m_cancelled) return Error::from_string("the VM stopped before the container started", ECANCELED);
        }
    }
    auto started = c->start(id);
    if (started) {
        phase("process started");
        std::lock_guard guard(m_lock);
        m_status = Status::Running;
    }
    if (!started) {
        // The process never runs, and its streams stay open in the agent: the relays end here.
        std::lock_guard guard(m_lock);
        for (UniqueFd* fd : {&m_stdout, &m_stderr})
            if (*fd) ::shutdown(fd->get(), SHUT_RDWR);
    }
    auto status = started ? c->wait(id) : Result<int>(started.release_error());
    if (status) phase("exit reported");
    // The agent reports the exit only after the output streams ended: these joins are short.
    out_thread.join();
    if (err_thread.joinable()) err_thread.join();
    TRY(status);
    // Recorded before the agent is asked to power off: the VM's end, which
    // may come at once, is judged by whether this report came first.
    m_callbacks.exited(status.value());
    uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(m_stop.get(), &one, sizeof one);
    if (auto r = c->shutdown(); !r) log::warn("ask the agent to power off: {}", r.error().message());
    phase("power-off requested");
    return status.value();
}

}  // namespace husk
