#include "runtime/exec_proxy.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "agent/client.h"
#include "agent/stdio_relay.h"
#include "vmm/base/system.h"

namespace husk::runtime {

Result<std::unique_ptr<agent::AgentClient>> connect_agent(const ContainerState& state, std::chrono::seconds connect_for,
                                                          std::optional<std::chrono::seconds> replies_within) {
    auto now = std::chrono::steady_clock::now();
    auto client = TRY(agent::AgentClient::connect({state.vsock_socket, true, agent::kPort}, now + connect_for)
                          .context("reach the container's agent"));
    if (replies_within) client->set_reply_deadline(now + *replies_within);
    return client;
}

Result<int> run_exec_proxy(const ContainerState& state, agent::ProcessSpec spec, int ready_fd) {
    auto say = [&](const std::string& line) {
        if (ready_fd < 0) return;
        (void)sys::write_all(ready_fd, line);
        ::close(ready_fd);
        ready_fd = -1;
    };
    auto fail = [&](Error e) -> Result<int> {
        say("error: " + e.message() + "\n");
        return e;
    };
    // The proxy executes nothing: a reader that went away (its stdout, the
    // ready pipe) is an EPIPE for the writer, never a signal that ends it.
    ::signal(SIGPIPE, SIG_IGN);
    // Signals for the process are taken synchronously by a thread below.
    sigset_t forwarded;
    sigemptyset(&forwarded);
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH}) sigaddset(&forwarded, s);
    pthread_sigmask(SIG_BLOCK, &forwarded, nullptr);

    auto client = connect_agent(state, std::chrono::seconds(10));
    if (!client) return fail(client.release_error());
    auto& c = *client.value();
    if (auto v = c.hello(); !v) return fail(v.release_error());
    if (spec.terminal && !spec.rows) {
        winsize ws{};
        if (::ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 || ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
            spec.rows = ws.ws_row;
            spec.cols = ws.ws_col;
        }
    }
    spec.attach = spec.terminal ? (agent::kAttachStdin | agent::kAttachStdout)
                                : (agent::kAttachStdin | agent::kAttachStdout | agent::kAttachStderr);
    if (auto r = c.create_process(spec); !r) return fail(r.release_error());
    auto in = c.attach_stdio(spec.exec_id, agent::Channel::Stdin);
    auto out = c.attach_stdio(spec.exec_id, agent::Channel::Stdout);
    if (!in) return fail(in.release_error());
    if (!out) return fail(out.release_error());
    Result<UniqueFd> err = UniqueFd();
    if (!spec.terminal) err = c.attach_stdio(spec.exec_id, agent::Channel::Stderr);
    if (!err) return fail(err.release_error());
    UniqueFd stop = TRY(sys::eventfd(0, EFD_NONBLOCK));
    std::thread out_thread(agent::relay_output, out.value().get(), STDOUT_FILENO);
    std::thread err_thread;
    if (err.value()) err_thread = std::thread(agent::relay_output, err.value().get(), STDERR_FILENO);
    std::thread in_thread(agent::relay_input, STDIN_FILENO, in.value().get(), stop.get());
    if (auto r = c.start(spec.exec_id); !r) {
        uint64_t one = 1;
        [[maybe_unused]] ssize_t w = ::write(stop.get(), &one, sizeof one);
        ::shutdown(out.value().get(), SHUT_RDWR);
        if (err.value()) ::shutdown(err.value().get(), SHUT_RDWR);
        out_thread.join();
        if (err_thread.joinable()) err_thread.join();
        in_thread.join();
        return fail(r.release_error());
    }
    say("ok\n");

    std::atomic<bool> done{false};
    std::thread signal_thread([&] {
        while (!done) {
            timespec tick{0, 100 * 1000 * 1000};
            int sig = ::sigtimedwait(&forwarded, nullptr, &tick);
            if (sig <= 0) continue;
            if (sig == SIGWINCH) {
                winsize ws{};
                if (spec.terminal && ::ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0)
                    (void)c.resize(spec.exec_id, ws.ws_row, ws.ws_col);
                continue;
            }
            (void)c.signal(spec.exec_id, sig);
        }
    });
    auto status = c.wait(spec.exec_id);
    // Output is complete before the Exit event; the stdin relay is told to stop.
    out_thread.join();
    if (err_thread.joinable()) err_thread.join();
    uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(stop.get(), &one, sizeof one);
    in_thread.join();
    done = true;
    signal_thread.join();
    return status;
}

}  // namespace husk::runtime
