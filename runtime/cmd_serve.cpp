// husk serve: warm pools of microVMs behind an HTTP API on a Unix socket
// (runtime/serve/API.md). Runs until SIGTERM or SIGINT, then drains.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <thread>

#include "runtime/args.h"
#include "runtime/runtime.h"
#include "runtime/serve/service.h"
#include "runtime/template.h"
#include "vmm/base/log.h"

namespace husk::runtime {

namespace {

constexpr const char* kServeUsage =
    "Usage: husk serve [--socket PATH] [--listen HOST:PORT] [--state DIR] [--drain SECONDS]\n"
    "                  [--log-format json|text]\n"
    "\n"
    "Serves pools of microVMs over HTTP/1.1 on a Unix socket. Each pool is made\n"
    "from an OCI bundle or a root filesystem directory: one VM boots, runs the\n"
    "pool's startup command and is snapshotted; `size` VMs are restored from that\n"
    "snapshot and wait (and more, up to `max_size`, while invocations wait). Every\n"
    "invocation runs in a VM nobody has used since its last reset, and the VM is\n"
    "reset in place after it (only the pages it dirtied are reverted).\n"
    "\n"
    "  --socket PATH     where to listen (default /run/husk/serve.sock, mode 0660)\n"
    "  --listen HOST:PORT  TCP as well, on loopback only (127.0.0.1:8080, [::1]:8080):\n"
    "                    the API has no authentication\n"
    "  --state DIR       snapshots, images and VM sockets (default /run/husk/serve);\n"
    "                    what an earlier server left there is stopped and removed\n"
    "  --drain SECONDS   on SIGTERM, how long running invocations may finish (default 30)\n"
    "  --log-format      json (default: one JSON object per line on stderr) or text\n"
    "\n"
    "API (JSON bodies; errors are {\"error\": \"...\"}):\n"
    "  POST   /pools                {\"name\", \"bundle\" or \"rootfs\", \"args\", \"size\", \"max_size\",\n"
    "                                \"scale_down_ms\", \"queue\", \"vcpus\", \"memory_mib\",\n"
    "                                \"memory_limit_mib\", \"env\", \"startup\", \"timeout_ms\",\n"
    "                                \"max_output_bytes\"}\n"
    "  GET    /pools                the pools' names\n"
    "  GET    /pools/NAME           configuration, VMs, counters\n"
    "  DELETE /pools/NAME           drain and stop the pool\n"
    "  POST   /pools/NAME/invoke    {\"args\", \"env\", \"stdin\", \"timeout_ms\"} -> {\"exit_status\",\n"
    "                                \"stdout\", \"stderr\", \"vm\", \"timings_us\"}\n"
    "  GET    /metrics              Prometheus text\n"
    "\n"
    "Example:\n"
    "  curl --unix-socket /run/husk/serve.sock -d '{\"name\":\"fn\",\"bundle\":\"/srv/fn\",\"size\":2}' \\\n"
    "       http://husk/pools\n"
    "  curl --unix-socket /run/husk/serve.sock -d '{\"args\":[\"echo\",\"hi\"]}' http://husk/pools/fn/invoke\n";

}  // namespace

Result<int> cmd_serve(const GlobalOptions& g, const Args& args) {
    for (const auto& a : args)
        if (a == "--help" || a == "-h") {
            std::printf("%s", kServeUsage);
            return 0;
        }
    ArgParser p("serve");
    p.value("socket").value("listen").value("state").value("drain").value("log-format");
    TRY(p.parse(args));
    if (!p.positionals().empty()) return Error::from_string("serve takes no arguments (see husk serve --help)");
    std::string socket = p.get("socket", "/run/husk/serve.sock");
    std::string state = p.get("state", "/run/husk/serve");
    std::string format = p.get("log-format", g.log_json || g.log.empty() ? "json" : "text");
    if (format != "json" && format != "text") return Error::from_string("--log-format is json or text");
    int drain_s = 30;
    if (p.has("drain")) {
        try {
            drain_s = std::stoi(p.get("drain"));
        } catch (...) {
            drain_s = -1;
        }
        if (drain_s < 0 || drain_s > 3600) return Error::from_string("--drain is a whole number of seconds, 0 to 3600");
    }
    if (state.empty() || state[0] != '/') return Error::from_string("--state must be an absolute path");

    // The log is the daemon's: on stderr (or --log), every level from info up.
    log::configure("husk-serve", g.debug ? log::Level::Debug : log::Level::Info,
                   format == "json" ? log::Format::Json : log::Format::Text);
    if (g.log.empty()) log::set_output(STDERR_FILENO);

    serve::ServeContext base;
    base.runtime = TRY(load_runtime_config());
    base.initramfs = agent_initramfs(base.runtime);
    if (base.runtime.kernel.empty() || ::access(base.runtime.kernel.c_str(), R_OK) != 0)
        return Error::from_string("no guest kernel: set vm.kernel in " + std::string(kConfigPath) +
                                      " or HUSK_KERNEL (kernel-config/build builds one and prints its path)",
                                  ENOENT);
    if (base.initramfs.empty()) return Error::from_string("no husk-agent initramfs: set vm.initramfs", ENOENT);

    serve::clean_stale_state(state);
    std::error_code ec;
    std::filesystem::create_directories(state, ec);
    if (ec) return Error::from_errno(ec.value(), "create " + state);
    if (auto parent = std::filesystem::path(socket).parent_path(); !parent.empty())
        std::filesystem::create_directories(parent, ec);

    // Signals are taken by sigwait below; every thread started from here on has them blocked.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    serve::Service service(
        state, [&](const serve::PoolConfig& config, const std::string& dir) -> Result<std::shared_ptr<serve::Pool>> {
            serve::ServeContext context = base;
            context.dir = dir;
            return std::shared_ptr<serve::Pool>(TRY(serve::Pool::create(config, context)));
        });
    auto server =
        TRY(serve::HttpServer::listen(socket, [&](const serve::HttpRequest& r) { return service.handle(r); }));
    if (p.has("listen")) {
        if (auto tcp = server->listen_tcp(p.get("listen")); !tcp) return tcp.release_error().with_context("--listen");
        log::info("listening on {} and TCP {} (port {})", socket, p.get("listen"), server->tcp_port());
    }
    log::info("listening on {} (state in {})", socket, state);
    std::thread accept([&] { server->run(); });

    int signal = 0;
    sigwait(&stop_signals, &signal);
    log::info("signal {}: draining (at most {} s)", signal, drain_s);
    // Pools first: queued and new invocations are refused at once, running ones finish (or the drain ends).
    std::thread pools([&] { service.shutdown(std::chrono::seconds(drain_s)); });
    pools.join();
    server->stop();
    accept.join();
    server.reset();
    std::filesystem::remove_all(state, ec);
    log::info("stopped");
    return 0;
}

}  // namespace husk::runtime
