#include "runtime/serve/pool.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <regex>

#include "agent/client.h"
#include "runtime/default_spec.h"
#include "runtime/rootfs_image.h"
#include "vmm/base/log.h"
#include "vmm/base/subprocess.h"
#include "vmm/base/system.h"
#include "vmm/client/agent_specs.h"
#include "vmm/client/api_client.h"
#include "vmm/client/vmm_command.h"

namespace husk::runtime::serve {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

uint64_t micros_since(Clock::time_point t) {
    return uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
}

Error bad(const std::string& what) {
    return Error::from_string(what, EINVAL);
}

// Checks that `body` has only `known` keys.
Result<void> only_keys(const Json& body, std::initializer_list<const char*> known, const char* what) {
    if (!body.is_object()) return bad(std::string(what) + ": the body must be a JSON object");
    for (const auto& item : body.items()) {
        const std::string& key = item.key();
        if (std::none_of(known.begin(), known.end(), [&](const char* k) { return key == k; }))
            return bad(std::string(what) + ": unknown field `" + key + "`");
    }
    return {};
}

Result<std::vector<std::string>> strings_field(const Json& body, const char* key, size_t max) {
    std::vector<std::string> out;
    if (!body.contains(key)) return out;
    const Json& v = body.at(key);
    if (!v.is_array()) return bad(std::string("`") + key + "` must be an array of strings");
    if (v.size() > max) return bad(std::string("`") + key + "` has more than " + std::to_string(max) + " entries");
    for (const auto& s : v) {
        if (!s.is_string()) return bad(std::string("`") + key + "` must be an array of strings");
        out.push_back(s.get<std::string>());
    }
    return out;
}

Result<uint64_t> number_field(const Json& body, const char* key, uint64_t fallback, uint64_t min, uint64_t max) {
    if (!body.contains(key)) return fallback;
    const Json& v = body.at(key);
    // Parsed text gives unsigned numbers; built JSON, signed ones.
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<uint64_t>() < min || v.get<uint64_t>() > max)
        return bad(fmt::format("`{}` must be a whole number from {} to {}", key, min, max));
    return v.get<uint64_t>();
}

Result<void> env_ok(const std::vector<std::string>& env, const char* key) {
    for (const auto& e : env)
        if (e.find('=') == std::string::npos || e.front() == '=')
            return bad(fmt::format("`{}`: `{}` is not NAME=VALUE", key, e));
    return {};
}

// The pool's env over the bundle's: a name given again replaces the earlier value.
std::vector<std::string> merge_env(std::vector<std::string> base, const std::vector<std::string>& more) {
    for (const auto& e : more) {
        std::string name = e.substr(0, e.find('=') + 1);
        std::erase_if(base, [&](const std::string& b) { return b.rfind(name, 0) == 0; });
        base.push_back(e);
    }
    return base;
}

void reap(pid_t pid) {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
}

// The last lines of a husk-vmm log that say why it stopped (debug lines left out).
std::string log_tail(const std::string& log) {
    auto text = sys::read_file(log, 1 << 20);
    if (!text) return "";
    std::vector<std::string> lines;
    size_t at = 0;
    while (at < text.value().size()) {
        size_t end = text.value().find('\n', at);
        if (end == std::string::npos) end = text.value().size();
        std::string line = text.value().substr(at, end - at);
        if (line.find("debug") == std::string::npos && !line.empty()) lines.push_back(line);
        at = end + 1;
    }
    std::string out;
    for (size_t i = lines.size() > 8 ? lines.size() - 8 : 0; i < lines.size(); ++i) out += "\n  " + lines[i];
    return out;
}

// An error when husk-vmm `pid` has exited (reaped here), naming its status and the end of its log.
std::optional<Error> exited(pid_t pid, const std::string& log, const char* when) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) != pid) return std::nullopt;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return Error::from_string(fmt::format("husk-vmm exited ({}) {}; its log ends:{}", code, when, log_tail(log)),
                              EPIPE);
}

// The husk-vmm of a VM that answers on its API socket, or an error once it exits or `deadline` passes.
Result<void> wait_api(const std::string& api, pid_t pid, Clock::time_point deadline, const std::string& log) {
    for (;;) {
        if (auto e = exited(pid, log, "before its API answered")) return std::move(*e);
        if (::access(api.c_str(), F_OK) == 0 && api_call(api, {{"cmd", "state"}}, 5000)) return {};
        if (Clock::now() > deadline) return Error::from_string("husk-vmm's API did not answer in time", ETIMEDOUT);
        ::usleep(5000);
    }
}

// Starts husk-vmm with `command`, its vm.toml at `base`.toml and its pid (for
// clean_stale_state) at `base`.pid.
Result<pid_t> launch(const VmmCommand& command, const std::string& base) {
    const std::string toml = TRY(command.vm_toml());
    TRY(sys::write_file(base + ".toml", toml));
    pid_t pid = TRY(sys::spawn(command.argv(base + ".toml")).context("start husk-vmm"));
    TRY(sys::write_file(base + ".pid", std::to_string(pid)));
    return pid;
}

// Reads stdout and stderr to their ends, each up to `cap` bytes, until `deadline`.
struct Collected {
    std::string out, err;
    bool overflow = false, timed_out = false;
};
Collected collect(int out_fd, int err_fd, uint64_t cap, Clock::time_point deadline, const OutputSink* sink = nullptr) {
    bool reader_gone = false;
    Collected c;
    int fds[2] = {out_fd, err_fd};
    std::string* into[2] = {&c.out, &c.err};
    char buf[65536];
    while (fds[0] >= 0 || fds[1] >= 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
            c.timed_out = true;
            return c;
        }
        pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
        int n = ::poll(p, 2, int(std::min<long>(left, 1000)));
        if (n < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i] < 0 || !p[i].revents) continue;
            ssize_t got = ::read(fds[i], buf, sizeof buf);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                fds[i] = -1;
                continue;
            }
            if (sink) {
                if (!reader_gone) reader_gone = !(*sink)(i + 1, std::string_view(buf, size_t(got)));
                continue;
            }
            if (into[i]->size() + size_t(got) > cap) {
                c.overflow = true;
                return c;
            }
            into[i]->append(buf, size_t(got));
        }
    }
    return c;
}

}  // namespace

Result<PoolConfig> parse_pool_config(const Json& body) {
    TRY(only_keys(body,
                  {"name", "bundle", "rootfs", "args", "size", "max_size", "scale_down_ms", "queue", "vcpus",
                   "memory_mib", "memory_limit_mib", "env", "startup", "timeout_ms", "max_output_bytes"},
                  "pool"));
    PoolConfig c;
    if (!body.contains("name") || !body["name"].is_string()) return bad("pool: `name` (a string) is required");
    c.name = body["name"];
    static const std::regex kName("[a-z0-9][a-z0-9_.-]{0,63}");
    if (!std::regex_match(c.name, kName))
        return bad("pool: `name` must be 1 to 64 of a-z, 0-9, `_`, `.`, `-`, starting with a letter or digit");
    if (body.contains("bundle") == body.contains("rootfs"))
        return bad("pool: either `bundle` (an OCI bundle) or `rootfs` (a root filesystem directory) is required");
    const char* where = body.contains("bundle") ? "bundle" : "rootfs";
    if (!body[where].is_string() || body[where].get<std::string>().empty() || body[where].get<std::string>()[0] != '/')
        return bad(fmt::format("pool: `{}` must be an absolute path", where));
    (body.contains("bundle") ? c.bundle : c.rootfs) = body[where];
    c.args = TRY(strings_field(body, "args", 4096));
    c.size = uint32_t(TRY(number_field(body, "size", 1, 1, 64)));
    c.max_size = uint32_t(TRY(number_field(body, "max_size", c.size, 1, 64)));
    if (c.max_size < c.size) return bad(fmt::format("pool: `max_size` must be at least `size` ({})", c.size));
    c.scale_down_ms = uint32_t(TRY(number_field(body, "scale_down_ms", 60000, 100, 24 * 3600 * 1000)));
    c.queue = uint32_t(TRY(number_field(body, "queue", 16, 0, 4096)));
    c.vcpus = uint32_t(TRY(number_field(body, "vcpus", 1, 1, 16)));
    c.memory_mib = uint32_t(TRY(number_field(body, "memory_mib", 256, 128, 16384)));
    c.memory_limit_mib = uint32_t(TRY(number_field(body, "memory_limit_mib", 0, 0, 16384)));
    // Below the VM's memory by 64 MiB: room for the guest's kernel and agent beside the container.
    if (c.memory_limit_mib != 0 && (c.memory_limit_mib < 8 || c.memory_limit_mib > c.memory_mib - 64))
        return bad(fmt::format("pool: `memory_limit_mib` must be 0 (none) or from 8 to memory_mib - 64 ({})",
                               c.memory_mib - 64));
    c.env = TRY(strings_field(body, "env", 1024));
    TRY(env_ok(c.env, "env"));
    c.startup = TRY(strings_field(body, "startup", 4096));
    c.timeout_ms = uint32_t(TRY(number_field(body, "timeout_ms", 30000, 1, 3600 * 1000)));
    c.max_output_bytes = TRY(number_field(body, "max_output_bytes", 1 << 20, 1, 64 << 20));
    return c;
}

Json to_json(const PoolConfig& c) {
    return {{"name", c.name},
            {"bundle", c.bundle},
            {"rootfs", c.rootfs},
            {"args", c.args},
            {"size", c.size},
            {"max_size", c.max_size},
            {"scale_down_ms", c.scale_down_ms},
            {"queue", c.queue},
            {"vcpus", c.vcpus},
            {"memory_mib", c.memory_mib},
            {"memory_limit_mib", c.memory_limit_mib},
            {"env", c.env},
            {"startup", c.startup},
            {"timeout_ms", c.timeout_ms},
            {"max_output_bytes", c.max_output_bytes}};
}

Result<InvokeRequest> parse_invoke_request(const Json& body) {
    TRY(only_keys(body, {"args", "env", "stdin", "timeout_ms", "stream"}, "invoke"));
    InvokeRequest r;
    r.args = TRY(strings_field(body, "args", 4096));
    r.env = TRY(strings_field(body, "env", 1024));
    TRY(env_ok(r.env, "env"));
    if (body.contains("stdin")) {
        if (!body["stdin"].is_string()) return bad("invoke: `stdin` must be a string");
        r.stdin_data = body["stdin"];
    }
    if (body.contains("stream")) {
        if (!body["stream"].is_boolean()) return bad("invoke: `stream` must be true or false");
        r.stream = body["stream"];
    }
    if (body.contains("timeout_ms")) r.timeout_ms = uint32_t(TRY(number_field(body, "timeout_ms", 0, 1, 3600 * 1000)));
    return r;
}

Json to_json(const InvokeResult& r) {
    return {{"exit_status", r.exit_status},
            {"stdout", r.out},
            {"stderr", r.err},
            {"vm", r.vm},
            {"timings_us", {{"queued", r.queued_us}, {"run", r.run_us}, {"reset", r.reset_us}}}};
}

Pool::Pool(PoolConfig config, ServeContext context) : m_config(std::move(config)), m_context(std::move(context)) {
    m_config.max_size = std::max(m_config.size, m_config.max_size);  // 0: `size`
}

Result<std::unique_ptr<Pool>> Pool::create(const PoolConfig& config, const ServeContext& context) {
    std::unique_ptr<Pool> pool(new Pool(config, context));
    std::error_code ec;
    if (fs::exists(context.dir, ec)) return Error::from_string("pool `" + config.name + "` exists", EEXIST);
    fs::create_directories(context.dir, ec);
    if (ec) return Error::from_errno(ec.value(), "create " + context.dir);
    auto built = pool->build_snapshot();
    if (built) {
        for (uint32_t i = 0; i < config.size && built; ++i) {
            auto vm = pool->start_vm(int(i));
            if (!vm) {
                built = vm.release_error();
                break;
            }
            std::lock_guard lock(pool->m_lock);
            vm.value()->idle_since = Clock::now();
            pool->m_idle.push_back(vm.release_value());
        }
    }
    if (!built) {
        pool->shutdown(std::chrono::milliseconds(0));
        return built.release_error().with_context("pool `" + config.name + "`");
    }
    pool->m_next_index = int(config.size);
    if (pool->m_config.max_size > config.size) pool->m_trimmer = std::thread([p = pool.get()] { p->trim_loop(); });
    log::info("pool {}: {} VMs restored from {}", config.name, config.size, pool->m_snapshot);
    return pool;
}

Result<void> Pool::build_snapshot() {
    const std::string& dir = m_context.dir;
    std::string config_path, text;
    if (!m_config.rootfs.empty()) {
        // `husk spec`'s config over the directory, with no terminal and a /tmp to write to.
        std::error_code ec;
        if (!fs::is_directory(m_config.rootfs, ec)) return bad("`rootfs`: " + m_config.rootfs + " is not a directory");
        Json d = default_spec();
        d["process"]["terminal"] = false;
        d["root"]["path"] = m_config.rootfs;
        d["mounts"].push_back({{"destination", "/tmp"},
                               {"type", "tmpfs"},
                               {"source", "tmpfs"},
                               {"options", {"nosuid", "nodev", "mode=1777"}}});
        config_path = "the default config (husk spec) over " + m_config.rootfs;
        text = d.dump();
    } else {
        config_path = m_config.bundle + "/config.json";
        auto read = sys::read_file(config_path, 16 << 20);
        if (!read) return bad("the bundle: " + read.error().message());
        text = read.release_value();
    }
    oci::Spec spec = TRY(oci::parse_spec(text, config_path));
    if (!spec.process) return bad(config_path + ": process is required");
    for (const auto& m : spec.mounts)
        if (m.type == "bind" || std::find(m.options.begin(), m.options.end(), "bind") != m.options.end() ||
            std::find(m.options.begin(), m.options.end(), "rbind") != m.options.end())
            return bad(config_path + ": the mount at `" + m.destination +
                       "` binds a host path; a pool's VMs are reset after every invocation and take none");
    auto specs = TRY(agent_specs_for(spec));
    m_container = specs.container;
    // Read-only, and never written: every VM of the pool reads the one image,
    // and a reset reverts the guest's page cache but not a disk. What an
    // invocation writes goes to tmpfs mounts, in the guest's memory.
    m_container.rootfs_device = "/dev/vda";
    m_container.rootfs_type = "ext4";
    m_container.readonly = true;
    m_container.serverless = true;
    m_process = specs.process;
    m_process.exec_id = std::string(agent::kInitId);
    m_process.terminal = false;
    m_process.attach = agent::kAttachStdin | agent::kAttachStdout | agent::kAttachStderr;
    m_process.env = merge_env(m_process.env, m_config.env);
    if (!m_config.args.empty()) m_process.args = m_config.args;

    std::string rootfs =
        spec.root.path.empty() || spec.root.path[0] != '/' ? m_config.bundle + "/" + spec.root.path : spec.root.path;
    m_image = dir + "/rootfs.ext4";
    TRY(build_rootfs_image(rootfs, m_image, {}).context("build the rootfs image"));

    VmmCommand command = command_for(dir + "/build");
    command.kernel = m_context.runtime.kernel;
    command.initramfs = m_context.initramfs;
    command.memory_mib = m_config.memory_mib;
    command.vcpus = m_config.vcpus;
    pid_t pid = TRY(launch(command, dir + "/build"));
    struct Reaper {
        pid_t pid;
        ~Reaper() { reap(pid); }
    } reaper{pid};
    auto deadline = Clock::now() + std::chrono::seconds(120);
    TRY(wait_api(command.api_socket, pid, deadline, command.log).context("boot the pool's VM"));
    {
        // In steps, so that a VM that stops while its guest boots is told at once, with why.
        std::unique_ptr<agent::AgentClient> client;
        while (!client) {
            auto step = std::min(deadline, Clock::now() + std::chrono::seconds(2));
            auto connected = agent::AgentClient::connect({command.vsock_socket, true, agent::kPort}, step);
            if (connected) {
                client = connected.release_value();
                break;
            }
            if (auto e = exited(pid, command.log, "while its guest booted")) return std::move(*e);
            if (Clock::now() >= deadline) return connected.release_error().with_context("reach the agent");
        }
        client->set_reply_deadline(deadline);
        TRY(client->hello());
        TRY(client->setup_container(m_container).context("set the container up"));
        if (!m_config.startup.empty()) {
            agent::ProcessSpec startup = m_process;
            startup.args = m_config.startup;
            startup.attach = agent::kAttachStdout | agent::kAttachStderr;
            TRY(client->create_process(startup).context("the startup command"));
            UniqueFd out = TRY(client->attach_stdio(startup.exec_id, agent::Channel::Stdout));
            UniqueFd err = TRY(client->attach_stdio(startup.exec_id, agent::Channel::Stderr));
            TRY(client->start(startup.exec_id));
            Collected c = collect(out.get(), err.get(), m_config.max_output_bytes, deadline);
            int status = TRY(client->wait(startup.exec_id).context("the startup command"));
            if (c.timed_out) return Error::from_string("the startup command did not finish in 120 s", ETIMEDOUT);
            if (status != 0)
                return bad(fmt::format("the startup command exited {}: {}", status, c.err.substr(0, 4096)));
            log::info("pool {}: startup command done ({} bytes of output)", m_config.name, c.out.size());
        }
        // After the startup command, whose own needs are the pool's to size: the limit is the invocations'.
        if (m_config.memory_limit_mib)
            TRY(client->set_memory_limit(uint64_t(m_config.memory_limit_mib) << 20).context("the memory limit"));
        m_oom_kills = TRY(client->memory_events().context("the container's memory events")).oom_kills;
        client->close();
    }
    m_snapshot = dir + "/snapshot";
    TRY(api_call(command.api_socket, {{"cmd", "snapshot"}, {"path", m_snapshot}}, 120000).context("snapshot"));
    std::error_code ec;
    for (const char* f : {"/build.vsock", "/build.api", "/build.pid"}) fs::remove(dir + f, ec);
    return {};
}

Result<std::unique_ptr<Pool::Vm>> Pool::start_vm(int index) {
    auto vm = std::make_unique<Vm>();
    vm->index = index;
    std::string base = m_context.dir + "/vm-" + std::to_string(index);
    VmmCommand command = command_for(base);
    command.restore = m_snapshot;
    vm->api = command.api_socket;
    vm->vsock = command.vsock_socket;
    vm->log = command.log;
    std::error_code ec;
    fs::remove(vm->api, ec);
    fs::remove(vm->vsock, ec);
    vm->pid = TRY(launch(command, base));
    {
        std::lock_guard lock(m_lock);
        m_live.push_back(vm->pid);
    }
    if (auto up = wait_api(vm->api, vm->pid, Clock::now() + std::chrono::seconds(60), vm->log); !up) {
        kill_vm(*vm);
        return up.release_error().with_context("restore VM " + std::to_string(index));
    }
    return vm;
}

VmmCommand Pool::command_for(const std::string& base) const {
    VmmCommand command;
    command.vmm = m_context.runtime.vmm;
    command.drives = {m_image};
    command.drives_read_only = true;
    command.vsock_socket = base + ".vsock";
    command.api_socket = base + ".api";
    command.console = VmmCommand::Console::None;
    command.log = base + ".log";
    return command;
}

void Pool::kill_vm(Vm& vm) {
    reap(vm.pid);
    std::lock_guard lock(m_lock);
    std::erase(m_live, vm.pid);
    vm.pid = -1;
}

void Pool::replace(std::unique_ptr<Vm> vm, const std::string& why) {
    log::warn("pool {}: VM {} replaced: {}", m_config.name, vm->index, why);
    const int index = vm->index;
    bool restore;
    {
        // Busy becomes starting in one step: a waiter never sees a pool with no VM.
        std::lock_guard lock(m_lock);
        m_stats.busy--;
        m_stats.replaced++;
        restore = !m_closing;
        if (restore) m_stats.starting++;
        m_changed.notify_all();
    }
    kill_vm(*vm);
    if (restore) restore_in_background(index);
}

void Pool::restore_in_background(int index) {
    // Detached: shutdown() waits until no VM is starting, and this thread
    // touches the pool no more once it has said so (under the lock).
    std::thread([this, index] {
        auto fresh = start_vm(index);
        std::lock_guard lock(m_lock);
        if (!fresh) {
            log::error("pool {}: VM {} could not be restored: {}", m_config.name, index, fresh.error().message());
            m_stats.vm_losses++;
        } else if (m_closing) {
            reap(fresh.value()->pid);
            std::erase(m_live, fresh.value()->pid);
        } else {
            fresh.value()->idle_since = Clock::now();
            m_idle.push_back(fresh.release_value());
        }
        m_stats.starting--;
        m_changed.notify_all();
    }).detach();
}

void Pool::trim_loop() {
    std::unique_lock lock(m_lock);
    const auto after = std::chrono::milliseconds(m_config.scale_down_ms);
    while (!m_closing) {
        m_changed.wait_for(lock, std::min<std::chrono::milliseconds>(after, std::chrono::seconds(1)));
        std::vector<std::unique_ptr<Vm>> stale;
        // The longest idle are at the front (invocations take from the back).
        while (!m_closing && !m_idle.empty() && m_idle.size() + m_stats.busy + m_stats.starting > m_config.size &&
               Clock::now() - m_idle.front()->idle_since >= after) {
            stale.push_back(std::move(m_idle.front()));
            m_idle.pop_front();
            m_stats.scaled_down++;
        }
        if (stale.empty()) continue;
        lock.unlock();
        for (auto& vm : stale) {
            log::info("pool {}: VM {} stopped: idle beyond the pool's size", m_config.name, vm->index);
            kill_vm(*vm);
            std::string base = vm->api.substr(0, vm->api.size() - 4);  // less ".api"
            std::error_code ec;
            for (const char* ext : {".api", ".vsock", ".log", ".toml", ".pid"}) fs::remove(base + ext, ec);
        }
        lock.lock();
    }
}

Result<InvokeResult> Pool::invoke(const InvokeRequest& request, const OutputSink* sink) {
    auto queued = Clock::now();
    std::unique_ptr<Vm> vm;
    {
        std::unique_lock lock(m_lock);
        if (m_closing) return Error::from_string("the pool is shutting down", ESHUTDOWN);
        auto none_left = [&] { return m_idle.empty() && m_stats.busy == 0 && m_stats.starting == 0; };
        if (m_idle.empty() && m_stats.busy + m_stats.starting < m_config.max_size) {
            // Room to grow (or VMs lost and not restored): one more VM, which
            // this caller or an earlier waiter will take.
            m_stats.starting++;
            if (m_stats.busy + m_stats.starting > m_config.size) m_stats.scaled_up++;
            restore_in_background(m_next_index++);
        }
        if (none_left())
            return Error::from_string("pool `" + m_config.name + "` has no VM left: restoring one failed (see the log)",
                                      ESHUTDOWN);
        if (m_idle.empty()) {
            // A VM being restored (in place of a lost one, or to grow) counts as one that will be free.
            if (m_stats.queued >= m_config.queue + m_stats.starting) {
                m_stats.refused++;
                return Error::from_string(fmt::format("pool `{}` is busy: {} invocations run and {} wait",
                                                      m_config.name, m_stats.busy, m_stats.queued),
                                          EAGAIN);
            }
            m_stats.queued++;
            m_changed.wait(lock, [&] { return m_closing || !m_idle.empty() || none_left(); });
            m_stats.queued--;
            if (m_closing) return Error::from_string("the pool is shutting down", ESHUTDOWN);
            if (m_idle.empty())
                return Error::from_string(
                    "pool `" + m_config.name + "` has no VM left: restoring one failed (see the log)", ESHUTDOWN);
        }
        // The most recently used: the longest idle stay at the front, for trim_loop.
        vm = std::move(m_idle.back());
        m_idle.pop_back();
        m_stats.busy++;
    }
    InvokeResult result;
    result.queued_us = micros_since(queued);
    result.vm = vm->index;
    auto started = Clock::now();
    auto deadline = started + std::chrono::milliseconds(request.timeout_ms.value_or(m_config.timeout_ms));
    auto ran = run_on(*vm, request, deadline, sink);
    result.run_us = micros_since(started);
    if (!ran && ran.error().code() != EINVAL) {
        {
            std::lock_guard lock(m_lock);
            m_stats.invocations++;
            m_stats.failures++;
            if (ran.error().code() == ETIMEDOUT) m_stats.timeouts++;
            if (ran.error().code() == EMSGSIZE) m_stats.output_overflows++;
            if (ran.error().code() == ENOMEM) m_stats.memory_kills++;
            if (ran.error().code() == EPIPE) m_stats.vm_losses++;
        }
        replace(std::move(vm), ran.error().message());
        return ran.release_error();
    }
    // Back to the snapshot: the pages this invocation dirtied are reverted.
    auto reset = api_call(vm->api, {{"cmd", "reset"}}, 30000);
    {
        std::lock_guard lock(m_lock);
        m_stats.invocations++;
        if (!ran) m_stats.failures++;
    }
    if (!reset || !reset.value().contains("us") || !reset.value()["us"].is_number()) {
        replace(std::move(vm), "reset failed: " + (reset ? reset.value().dump() : reset.error().message()));
    } else {
        result.reset_us = uint64_t(reset.value()["us"].get<double>());
        vm->invocations++;
        std::lock_guard lock(m_lock);
        m_stats.busy--;
        m_stats.resets++;
        m_stats.reset_us_total += result.reset_us;
        m_stats.last_reset_us = result.reset_us;
        vm->idle_since = Clock::now();
        m_idle.push_back(std::move(vm));
        m_changed.notify_all();
    }
    if (!ran) return ran.release_error();
    result.exit_status = ran.value().exit_status;
    result.out = std::move(ran.value().out);
    result.err = std::move(ran.value().err);
    return result;
}

// The answer to an invocation that ran out of memory: the limit it met (its
// memory_limit_mib, else the VM's memory) and `how`.
Error Pool::out_of_memory(const std::string& how) const {
    std::string limit = m_config.memory_limit_mib ? fmt::format("its memory limit of {} MiB", m_config.memory_limit_mib)
                                                  : fmt::format("the VM's {} MiB", m_config.memory_mib);
    return Error::from_string(
        fmt::format("the invocation ran out of memory: it needed more than {}, and {}", limit, how), ENOMEM);
}

Result<InvokeResult> Pool::run_on(Vm& vm, const InvokeRequest& request, Clock::time_point deadline,
                                  const OutputSink* sink) {
    // A VM that stopped since its last invocation: say so rather than "connection refused".
    auto stopped = [&]() -> std::optional<Error> {
        if (vm.pid <= 0) return Error::from_string("the VM stopped during the invocation", EPIPE);
        auto e = exited(vm.pid, vm.log, "during the invocation");
        if (!e) return std::nullopt;
        {
            std::lock_guard lock(m_lock);
            std::erase(m_live, vm.pid);
        }
        vm.pid = -1;
        return Error::from_string("the VM stopped: " + e->message(), EPIPE);
    };
    auto fail = [&](Error e) -> Error {
        if (auto s = stopped()) return std::move(*s);
        if (e.code() == ETIMEDOUT) return e;
        return Error::from_string("the VM failed the invocation: " + e.message(), EPIPE);
    };
    auto connected = agent::AgentClient::connect({vm.vsock, true, agent::kPort}, deadline);
    if (!connected) return fail(connected.release_error());
    auto client = connected.release_value();
    client->set_reply_deadline(deadline);
    // A restored guest would repeat the snapshot's random numbers.
    std::string entropy(32, '\0');
    if (::getrandom(entropy.data(), entropy.size(), 0) != ssize_t(entropy.size()))
        return Error::from_errno(errno, "getrandom");
    if (auto r = client->reseed(entropy); !r) return fail(r.release_error());
    agent::ProcessSpec process = m_process;
    if (!request.args.empty()) process.args = request.args;
    process.env = merge_env(process.env, request.env);
    if (auto r = client->create_process(process); !r) {
        // The guest refused the process (a missing binary, a bad cwd): the caller's error, and the VM is fine.
        if (auto s = stopped()) return std::move(*s);
        if (r.error().code() != ETIMEDOUT) return bad("the process: " + r.error().message());
        return fail(r.release_error());
    }
    UniqueFd fds[3];
    for (auto channel : {agent::Channel::Stdin, agent::Channel::Stdout, agent::Channel::Stderr}) {
        auto fd = client->attach_stdio(process.exec_id, channel);
        if (!fd) return fail(fd.release_error());
        fds[int(channel)] = fd.release_value();
    }
    if (auto r = client->start(process.exec_id); !r) return fail(r.release_error());
    // stdin is fed beside the output's collection, so neither side waits on a full stream.
    std::thread feeder([fd = fds[0].get(), &data = request.stdin_data] {
        (void)sys::send_all(fd, data);
        ::shutdown(fd, SHUT_WR);
    });
    Collected c = collect(fds[1].get(), fds[2].get(), m_config.max_output_bytes, deadline, sink);
    auto finish_feeder = [&] {
        ::shutdown(fds[0].get(), SHUT_RDWR);  // a process that never read its stdin: the feeder stops
        feeder.join();
    };
    if (c.timed_out && m_config.memory_limit_mib) {
        // At its limit with no swap, the guest may reclaim and fault back its own file pages for a long
        // time before the OOM killer comes: an invocation still at its limit when its time runs out is
        // told it ran out of memory.
        client->set_reply_deadline(Clock::now() + std::chrono::seconds(2));
        auto memory = client->memory_events();
        const uint64_t limit = uint64_t(m_config.memory_limit_mib) << 20;
        if (memory && (memory.value().oom_kills > m_oom_kills || memory.value().current >= limit / 10 * 9)) {
            kill_vm(vm);
            finish_feeder();
            return out_of_memory(fmt::format("it was still at the limit, {} MiB in use, when its {} ms ran out",
                                             memory.value().current >> 20,
                                             request.timeout_ms.value_or(m_config.timeout_ms)));
        }
    }
    if (c.timed_out || c.overflow) {
        // The VM goes (the caller replaces it): its process and feeder with it.
        kill_vm(vm);
        finish_feeder();
        if (c.overflow)
            return Error::from_string(
                fmt::format("the invocation wrote more than {} bytes to stdout or stderr", m_config.max_output_bytes),
                EMSGSIZE);
        return Error::from_string(
            fmt::format("the invocation did not finish in {} ms", request.timeout_ms.value_or(m_config.timeout_ms)),
            ETIMEDOUT);
    }
    auto status = client->wait(process.exec_id);
    finish_feeder();
    if (!status) return fail(status.release_error());
    // The OOM killer may have stopped the process or only one of its children:
    // either way the invocation lost memory it needed, and the VM goes.
    auto memory = client->memory_events();
    if (!memory) return fail(memory.release_error());
    if (memory.value().oom_kills > m_oom_kills) {
        kill_vm(vm);
        return out_of_memory(fmt::format("the guest's OOM killer stopped it (exit status {})", status.value()));
    }
    InvokeResult r;
    r.exit_status = status.value();
    r.out = std::move(c.out);
    r.err = std::move(c.err);
    return r;
}

PoolStats Pool::stats() const {
    std::lock_guard lock(m_lock);
    PoolStats s = m_stats;
    s.idle = uint32_t(m_idle.size());
    return s;
}

Json Pool::status() const {
    PoolStats s = stats();
    return {{"config", to_json(m_config)},
            {"vms", {{"idle", s.idle}, {"busy", s.busy}, {"starting", s.starting}}},
            {"queued", s.queued},
            {"invocations", s.invocations},
            {"failures", s.failures},
            {"timeouts", s.timeouts},
            {"output_overflows", s.output_overflows},
            {"memory_kills", s.memory_kills},
            {"vm_losses", s.vm_losses},
            {"refused", s.refused},
            {"replaced", s.replaced},
            {"scaled_up", s.scaled_up},
            {"scaled_down", s.scaled_down},
            {"resets", s.resets},
            {"last_reset_us", s.last_reset_us},
            {"mean_reset_us", s.resets ? s.reset_us_total / s.resets : 0}};
}

void Pool::shutdown(std::chrono::milliseconds drain) {
    std::vector<pid_t> live;
    {
        std::unique_lock lock(m_lock);
        m_closing = true;
        m_changed.notify_all();
        m_changed.wait_for(lock, drain, [&] { return m_stats.busy == 0; });
        // VMs being restored (at most a minute each) end before the pool does.
        m_changed.wait(lock, [&] { return m_stats.starting == 0; });
        live = m_live;
        m_live.clear();
        m_idle.clear();
    }
    if (m_trimmer.joinable()) m_trimmer.join();
    for (pid_t pid : live) reap(pid);
    std::error_code ec;
    fs::remove_all(m_context.dir, ec);
}

Pool::~Pool() {
    shutdown(std::chrono::milliseconds(0));
}

void clean_stale_state(const std::string& root) {
    std::error_code ec;
    if (!fs::is_directory(root, ec)) return;
    for (const auto& entry : fs::recursive_directory_iterator(root, ec)) {
        if (entry.path().extension() != ".pid") continue;
        auto text = sys::read_file(entry.path().string(), 64);
        if (!text) continue;
        pid_t pid = pid_t(std::atoi(text.value().c_str()));
        if (pid <= 1) continue;
        // Only a husk-vmm whose command line names this directory: a reused pid is someone else's.
        auto cmdline = sys::read_file("/proc/" + std::to_string(pid) + "/cmdline", 1 << 16);
        if (!cmdline || cmdline.value().find("husk-vmm") == std::string::npos ||
            cmdline.value().find(root) == std::string::npos)
            continue;
        log::warn("stopping husk-vmm {} left by an earlier husk serve", pid);
        ::kill(pid, SIGKILL);
    }
    for (const auto& entry : fs::directory_iterator(root, ec)) fs::remove_all(entry.path(), ec);
}

}  // namespace husk::runtime::serve
