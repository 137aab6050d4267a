#include "agent/agent.h"

#include <fcntl.h>
#include <linux/random.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "agent/dns_relay.h"
#include "agent/network.h"
#include "vmm/base/system.h"

namespace husk::agent {

struct Agent::Connection {
    uint64_t id = 0;
    UniqueFd fd;
    FrameBuffer in;
    std::string out;
    bool writable_armed = false;
};

struct Agent::Process {
    std::string exec_id;
    uint64_t owner = 0;  // the connection that created it hears its Exit event
    SpawnedProcess io;
    std::unique_ptr<Pump> pumps[3];
    uint8_t attach = 0;    // channels the host said it would attach
    uint8_t attached = 0;  // channels attached so far
    uint8_t finished = 0;  // output channels whose relay is done
    bool started = false;
    bool exited = false;
    bool reported = false;
    int status = 0;
    std::vector<std::pair<uint64_t, uint32_t>> waiters;  // (connection, request id) of Wait requests
};

namespace {

constexpr const char* kContainerCgroup = "/sys/fs/cgroup/container";

Result<void> set_pids_limit(std::optional<uint64_t> limit) {
    return sys::write_text(std::string(kContainerCgroup) + "/pids.max",
                           limit && *limit > 0 ? std::to_string(*limit) : std::string("max"));
}

Result<void> set_memory_limit(uint64_t bytes) {
    std::string dir = kContainerCgroup;
    TRY(sys::write_text(dir + "/memory.max", bytes > 0 ? std::to_string(bytes) : std::string("max")));
    // The guest has no swap today; should it get some, the limit still holds.
    if (auto swap = sys::write_text(dir + "/memory.swap.max", "0"); !swap && swap.error().code() != ENOENT)
        return swap.release_error();
    return {};
}

// `key value` lines (memory.events): the value of `key`, 0 when absent.
uint64_t keyed_value(std::string_view text, std::string_view key) {
    size_t at = 0;
    while (at < text.size()) {
        size_t end = text.find('\n', at);
        if (end == std::string_view::npos) end = text.size();
        std::string_view line = text.substr(at, end - at);
        if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ' ')
            return std::strtoull(std::string(line.substr(key.size() + 1)).c_str(), nullptr, 10);
        at = end + 1;
    }
    return 0;
}

Result<std::string> memory_events() {
    std::string dir = kContainerCgroup;
    std::string events = TRY(sys::read_file(dir + "/memory.events", 4096));
    std::string current = TRY(sys::read_file(dir + "/memory.current", 64));
    return Writer().u64(keyed_value(events, "oom_kill")).u64(std::strtoull(current.c_str(), nullptr, 10)).take();
}

// The container's cgroup in the guest: the cgroup2 hierarchy at /sys/fs/cgroup,
// the pids and memory controllers enabled below its root, one group for the container.
Result<void> make_container_cgroup(std::optional<uint64_t> pids_limit) {
    if (::mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) < 0 &&
        errno != EBUSY)
        return Error::from_errno(errno, "mount cgroup2 on /sys/fs/cgroup");
    TRY(sys::write_text("/sys/fs/cgroup/cgroup.subtree_control", "+pids +memory"));
    if (::mkdir(kContainerCgroup, 0755) < 0 && errno != EEXIST)
        return Error::from_errno(errno, std::string("mkdir ") + kContainerCgroup);
    if (pids_limit) TRY(set_pids_limit(pids_limit));
    return {};
}

Result<void> reseed_rng(std::string_view entropy) {
    if (entropy.size() < 16 || entropy.size() > 512)
        return Error::from_string("Reseed needs 16 to 512 bytes of entropy", EINVAL);
    UniqueFd fd(::open("/dev/urandom", O_WRONLY | O_CLOEXEC));
    if (!fd) return Error::from_errno(errno, "open /dev/urandom");
    // struct rand_pool_info: entropy_count (bits credited), buf_size, then the bytes.
    std::vector<int> info(2 + (entropy.size() + sizeof(int) - 1) / sizeof(int));
    info[0] = int(entropy.size() * 8);
    info[1] = int(entropy.size());
    std::memcpy(&info[2], entropy.data(), entropy.size());
    if (::ioctl(fd.get(), RNDADDENTROPY, info.data()) < 0) return Error::from_errno(errno, "RNDADDENTROPY");
    // The per-CPU generators follow the base one's new generation at their next use.
    if (::ioctl(fd.get(), RNDRESEEDCRNG) < 0) return Error::from_errno(errno, "RNDRESEEDCRNG");
    return {};
}

Result<void> wait_for_disk(const std::string& device) {
    // A VM restored from a template learns its disk's size from a
    // configuration interrupt the kernel handles a moment later.
    std::string name = device.substr(device.rfind('/') + 1);
    std::string size_path = "/sys/block/" + name + "/size";
    for (int waited_ms = 0; waited_ms < 5000; ++waited_ms) {
        UniqueFd fd(::open(size_path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) return {};  // not a whole disk (a partition, a test path): nothing to wait for
        char buf[32] = {};
        if (::read(fd.get(), buf, sizeof buf - 1) > 0 && std::strtoull(buf, nullptr, 10) > 0) return {};
        ::usleep(1000);
    }
    return Error::from_string("the rootfs disk " + device + " still has no capacity after 5 s", EIO);
}

}  // namespace

Result<std::unique_ptr<Agent>> Agent::create(UniqueFd listener, Options options) {
    Poller poller = TRY(Poller::create());
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGPIPE);
    if (::sigprocmask(SIG_BLOCK, &set, nullptr) < 0) return Error::from_errno(errno, "sigprocmask");
    sigdelset(&set, SIGPIPE);
    int sfd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) return Error::from_errno(errno, "signalfd");
    ::fcntl(listener.get(), F_SETFL, ::fcntl(listener.get(), F_GETFL) | O_NONBLOCK);
    auto agent = std::unique_ptr<Agent>(new Agent(std::move(poller), std::move(listener), UniqueFd(sfd), options));
    Agent* self = agent.get();
    TRY(agent->m_poller.watch(agent->m_listener.get(), EPOLLIN, [self](uint32_t) { self->on_accept(); }));
    TRY(agent->m_poller.watch(agent->m_signals.get(), EPOLLIN, [self](uint32_t) { self->on_signal(); }));
    return agent;
}

Agent::Agent(Poller poller, UniqueFd listener, UniqueFd signals, Options options)
    : m_poller(std::move(poller)), m_listener(std::move(listener)), m_signals(std::move(signals)), m_options(options) {}

Agent::~Agent() {
    // Pumps unwatch their fds from the poller, which must still be alive: drop them first.
    m_processes.clear();
    m_connections.clear();
}

Result<void> Agent::run() {
    while (!m_shutdown) TRY(m_poller.run_once(-1));
    // Answer the Shutdown request before the caller takes the machine down.
    for (auto& [id, c] : m_connections) {
        ::fcntl(c->fd.get(), F_SETFL, ::fcntl(c->fd.get(), F_GETFL) & ~O_NONBLOCK);
        flush(*c);
    }
    return {};
}

void Agent::on_accept() {
    for (;;) {
        int fd = ::accept4(m_listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        auto c = std::make_unique<Connection>();
        c->id = m_next_connection++;
        c->fd = UniqueFd(fd);
        uint64_t id = c->id;
        if (auto r = m_poller.watch(fd, EPOLLIN, [this, id](uint32_t e) { on_connection(id, e); }); !r) continue;
        m_connections[id] = std::move(c);
    }
}

void Agent::on_connection(uint64_t id, uint32_t events) {
    auto it = m_connections.find(id);
    if (it == m_connections.end()) return;
    Connection& c = *it->second;
    if (events & EPOLLOUT) flush(c);
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    uint8_t buf[65536];
    ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        close_connection(id);
        return;
    }
    c.in.append(std::span(buf, size_t(n)));
    for (;;) {
        auto next = c.in.next();
        if (!next) {
            std::fprintf(stderr, "husk-agent: dropping a connection: %s\n", next.error().message().c_str());
            close_connection(id);
            return;
        }
        if (!next.value()) return;
        handle(c, *next.value());
        // An AttachStdio turns the connection into a stream: it is no longer ours.
        if (!m_connections.count(id)) return;
    }
}

void Agent::close_connection(uint64_t id) {
    auto it = m_connections.find(id);
    if (it == m_connections.end()) return;
    m_poller.unwatch(it->second->fd.get());
    m_connections.erase(it);
    // The container's owner hung up after its process exited: nobody will ask for a shutdown.
    if (powers_off() && m_init_pid > 0) {
        auto p = m_processes.find(std::string(kInitId));
        if (p != m_processes.end() && p->second->reported && p->second->owner == id) begin_shutdown();
    }
}

void Agent::send(Connection& c, MessageType type, uint32_t id, std::string_view payload) {
    c.out += encode_frame(type, id, payload);
    flush(c);
}

void Agent::flush(Connection& c) {
    while (!c.out.empty()) {
        ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n > 0) {
            c.out.erase(0, size_t(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN) c.out.clear();  // the host is gone; on_connection sees the hang-up
        break;
    }
    bool want = !c.out.empty();
    if (want != c.writable_armed) {
        (void)m_poller.modify(c.fd.get(), EPOLLIN | (want ? uint32_t(EPOLLOUT) : 0));
        c.writable_armed = want;
    }
}

void Agent::handle(Connection& c, FrameBuffer::Frame& frame) {
    bool deferred = false;
    uint64_t id = c.id;
    auto reply = handle_request(c, frame, deferred);
    if (!m_connections.count(id)) return;  // AttachStdio made it a stream: `c` is gone
    if (!reply) {
        Writer w;
        w.i32(reply.error().code()).str(reply.error().message());
        send(c, MessageType::Error, frame.id, w.take());
        return;
    }
    if (!deferred) send(c, MessageType::Ok, frame.id, reply.value());
}

Result<Agent::Process*> Agent::lookup(const std::string& exec_id) {
    auto it = m_processes.find(exec_id);
    if (it == m_processes.end()) return Error::from_string("no process `" + exec_id + "`", ESRCH);
    return it->second.get();
}

Result<std::string> Agent::handle_request(Connection& c, const FrameBuffer::Frame& frame, bool& deferred) {
    Reader r(frame.payload);
    switch (frame.type) {
        case MessageType::Hello: {
            uint16_t version = r.u16();
            TRY(r.finish("Hello"));
            if (version != kVersion)
                return Error::from_string("host speaks protocol version " + std::to_string(version) +
                                          ", agent speaks " + std::to_string(kVersion));
            return Writer().str(HUSK_VERSION).take();
        }
        case MessageType::SetupContainer: {
            ContainerSpec spec = TRY(decode_container_spec(frame.payload));
            TRY(setup_container(spec));
            return std::string();
        }
        case MessageType::CreateProcess: {
            ProcessSpec spec = TRY(decode_process_spec(frame.payload));
            uint32_t pid = TRY(create_process(c, spec));
            return Writer().u32(pid).take();
        }
        case MessageType::Start: {
            std::string id = r.str();
            TRY(r.finish("Start"));
            Process* p = TRY(lookup(id));
            // The container's process sees the network as it is now: with no
            // interface given by the host, none but its loopback.
            if (m_options.whole_machine && p->io.pid == m_init_pid && !p->started && !m_network_configured)
                TRY(set_aside_unused_nics());
            TRY(start(p->io));
            p->started = true;
            return std::string();
        }
        case MessageType::Signal: {
            std::string id = r.str();
            uint32_t sig = r.u32();
            bool all = r.boolean();
            TRY(r.finish("Signal"));
            Process* p = TRY(lookup(id));
            if (sig >= uint32_t(NSIG)) return Error::from_string("signal " + std::to_string(sig) + " is out of range");
            if (p->exited) return Error::from_string("process `" + id + "` has exited", ESRCH);
            // --all on the container's process reaches every process in the VM (it is the container).
            pid_t target = all ? (p->io.pid == m_init_pid && m_options.whole_machine ? -1 : -p->io.pid) : p->io.pid;
            if (::kill(target, int(sig)) < 0 && !(all && errno == ESRCH))
                return Error::from_errno(errno, "kill " + std::to_string(sig));
            return std::string();
        }
        case MessageType::Resize: {
            std::string id = r.str();
            winsize ws{};
            ws.ws_row = r.u16();
            ws.ws_col = r.u16();
            TRY(r.finish("Resize"));
            Process* p = TRY(lookup(id));
            if (!p->io.terminal) return Error::from_string("process `" + id + "` has no terminal", ENOTTY);
            if (::ioctl(p->io.terminal.get(), TIOCSWINSZ, &ws) < 0)
                return Error::from_errno(errno, "resize the terminal");
            return std::string();
        }
        case MessageType::CloseStdin: {
            std::string id = r.str();
            TRY(r.finish("CloseStdin"));
            Process* p = TRY(lookup(id));
            if (p->pumps[0])
                p->pumps[0]->close_source();
            else
                p->io.stdin_pipe.reset();
            return std::string();
        }
        case MessageType::Wait: {
            std::string id = r.str();
            TRY(r.finish("Wait"));
            Process* p = TRY(lookup(id));
            if (p->reported) return Writer().i32(p->status).take();
            p->waiters.emplace_back(c.id, frame.id);
            deferred = true;
            return std::string();
        }
        case MessageType::AttachStdio: {
            std::string id = r.str();
            uint8_t channel = r.u8();
            TRY(r.finish("AttachStdio"));
            if (channel > 2) return Error::from_string("unknown stdio channel " + std::to_string(channel));
            TRY(attach(c, id, Channel(channel)));
            return std::string();
        }
        case MessageType::Reseed: {
            std::string entropy = r.str();
            TRY(r.finish("Reseed"));
            TRY(reseed_rng(entropy));
            return std::string();
        }
        case MessageType::ConfigureNetwork: {
            NetworkSpec spec = TRY(decode_network_spec(frame.payload));
            // In test mode the host's network is not the agent's to change.
            if (!m_options.whole_machine)
                return Error::from_string("the agent configures a network only as the VM's init", ENOTSUP);
            TRY(configure_network(spec));
            if (spec.dns_relay) TRY(start_dns_relay());
            m_network_configured = true;
            return std::string();
        }
        case MessageType::SetPidsLimit: {
            uint64_t limit = r.u64();
            TRY(r.finish("SetPidsLimit"));
            if (m_cgroup.empty())
                return Error::from_string("the container has no cgroup in the guest to limit", ENOTSUP);
            TRY(set_pids_limit(limit));
            return std::string();
        }
        case MessageType::SetMemoryLimit: {
            uint64_t bytes = r.u64();
            TRY(r.finish("SetMemoryLimit"));
            if (m_cgroup.empty())
                return Error::from_string("the container has no cgroup in the guest to limit", ENOTSUP);
            TRY(set_memory_limit(bytes));
            return std::string();
        }
        case MessageType::MemoryEvents: {
            TRY(r.finish("MemoryEvents"));
            if (m_cgroup.empty())
                return Error::from_string("the container has no cgroup in the guest to read", ENOTSUP);
            return memory_events();
        }
        case MessageType::Shutdown:
            TRY(r.finish("Shutdown"));
            begin_shutdown();
            return std::string();
        default:
            return Error::from_string("unexpected message type " + std::to_string(unsigned(frame.type)));
    }
}

Result<void> Agent::setup_container(const ContainerSpec& spec) {
    if (m_container) return Error::from_string("the container is already set up", EEXIST);
    // Compiled before anything is mounted: a filter libseccomp refuses fails the container's creation whole.
    if (spec.seccomp) m_seccomp = TRY(compile_seccomp(*spec.seccomp));
    const std::string& root = m_options.rootfs_mount;
    // No device: the rootfs is already in place (test mode, or a rootfs the host shares).
    if (!spec.rootfs_device.empty()) {
        if (::mkdir("/run/husk", 0700) < 0 && errno != EEXIST) return Error::from_errno(errno, "mkdir /run/husk");
        if (::mkdir(root.c_str(), 0755) < 0 && errno != EEXIST) return Error::from_errno(errno, "mkdir " + root);
        // Read-write even for a read-only root, so mount points can be made; the
        // container's view is remounted read-only (spawn.cpp). A read-only disk is mounted as such.
        if (spec.rootfs_type == "virtiofs") {
            // A directory the host shares, named by rootfs_device: bound from the device's root.
            TRY(mount_shares());
            std::string shared = std::string(kSharesMount) + "/" + spec.rootfs_device;
            if (::mount(shared.c_str(), root.c_str(), nullptr, MS_BIND, nullptr) < 0)
                return Error::from_errno(errno, "bind the shared rootfs `" + spec.rootfs_device + "`");
        } else {
            TRY(wait_for_disk(spec.rootfs_device));
            int rc = ::mount(spec.rootfs_device.c_str(), root.c_str(), spec.rootfs_type.c_str(), 0, nullptr);
            if (rc < 0 && (errno == EROFS || errno == EACCES))
                rc = ::mount(spec.rootfs_device.c_str(), root.c_str(), spec.rootfs_type.c_str(), MS_RDONLY, nullptr);
            if (rc < 0)
                return Error::from_errno(errno,
                                         "mount the rootfs " + spec.rootfs_device + " (" + spec.rootfs_type + ")");
        }
    }
    if (m_options.whole_machine && !spec.hostname.empty() &&
        ::sethostname(spec.hostname.data(), spec.hostname.size()) < 0)
        return Error::from_errno(errno, "sethostname");
    // In test mode the host's cgroups are not the agent's to change.
    if (m_options.whole_machine) {
        TRY(make_container_cgroup(spec.pids_limit));
        m_cgroup = kContainerCgroup;
    }
    m_container = spec;
    return {};
}

Result<uint32_t> Agent::create_process(Connection& c, const ProcessSpec& spec) {
    if (!m_container) return Error::from_string("the container is not set up yet");
    bool is_init = spec.exec_id == kInitId;
    // Serverless: a new `init` follows one that has exited and been reported;
    // the old one's processes, all ended with it, are forgotten.
    if (is_init && m_container->serverless && m_init_pid > 0) {
        Process& old = *m_processes.at(std::string(kInitId));
        if (!old.reported) return Error::from_string("the previous `init` has not been reported yet", EBUSY);
        std::erase_if(m_processes, [](const auto& entry) { return entry.second->exited && entry.second->reported; });
        if (m_processes.count(std::string(kInitId)) == 0) m_init_pid = 0;
    }
    if (m_processes.count(spec.exec_id)) return Error::from_string("process `" + spec.exec_id + "` exists", EEXIST);
    if (!is_init && m_init_pid <= 0) return Error::from_string("the container's process must be created first");
    if (!is_init && m_processes.at(std::string(kInitId))->exited)
        return Error::from_string("the container's process has exited", ESRCH);
    SpawnContext context;
    context.rootfs = m_options.rootfs_mount;
    context.container = &*m_container;
    context.join = is_init ? -1 : m_init_pid;
    context.seccomp = m_seccomp ? &*m_seccomp : nullptr;
    context.cgroup = m_cgroup;
    if (is_init && m_first_mounts) context.mounts = m_first_mounts.get();
    auto p = std::make_unique<Process>();
    p->exec_id = spec.exec_id;
    p->owner = c.id;
    p->io = TRY(spawn(spec, context));
    // With a terminal, stdin and stdout both go through the pty; there is no stderr.
    p->attach = spec.terminal ? uint8_t(spec.attach & (kAttachStdin | kAttachStdout)) : spec.attach;
    if (is_init) m_init_pid = p->io.pid;
    // The first init of a serverless container has built its mounts (spawn returns once the process is set up).
    if (is_init && m_container->serverless && !m_first_mounts) {
        std::string path = "/proc/" + std::to_string(p->io.pid) + "/ns/mnt";
        m_first_mounts = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!m_first_mounts) std::fprintf(stderr, "husk-agent: open %s: %s\n", path.c_str(), std::strerror(errno));
    }
    uint32_t pid = uint32_t(p->io.pid);
    m_processes[spec.exec_id] = std::move(p);
    return pid;
}

Result<void> Agent::attach(Connection& c, const std::string& exec_id, Channel channel) {
    Process* p = TRY(lookup(exec_id));
    unsigned bit = 1u << unsigned(channel);
    if (!(p->attach & bit))
        return Error::from_string("channel " + std::to_string(unsigned(channel)) + " was not requested");
    if (p->attached & bit) return Error::from_string("channel " + std::to_string(unsigned(channel)) + " is attached");

    // The reply goes out first, then the socket, along with any bytes the host
    // sent after the request (a stream's first bytes), belongs to a pump.
    std::string reply = std::move(c.out) + encode_frame(MessageType::Ok, 0, {});
    std::string early_input = c.in.take_rest();
    UniqueFd sock = std::move(c.fd);
    m_poller.unwatch(sock.get());
    m_connections.erase(c.id);  // `c` is gone from here on

    std::unique_ptr<Pump> pump;
    if (channel == Channel::Stdin) {
        // The stdin pump only reads its socket: send the reply here. A fresh
        // socket takes a few bytes at once; wait for room if it does not.
        size_t sent = 0;
        while (sent < reply.size()) {
            ssize_t n = ::send(sock.get(), reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL);
            if (n > 0)
                sent += size_t(n);
            else if (n < 0 && (errno == EAGAIN || errno == EINTR))
                ::usleep(1000);
            else
                return Error::from_errno(errno, "reply to AttachStdio");
        }
        UniqueFd sink;
        if (p->io.terminal)
            sink = UniqueFd(::fcntl(p->io.terminal.get(), F_DUPFD_CLOEXEC, 3));
        else
            sink = std::move(p->io.stdin_pipe);  // the pump holds the only copy: closing it is the process's EOF
        if (!sink) return Error::from_string("stdin is already closed", EPIPE);
        pump = std::make_unique<Pump>(m_poller, std::move(sock), std::move(sink),
                                      p->io.terminal ? Pump::SinkKind::Pty : Pump::SinkKind::Pipe,
                                      std::move(early_input), [p, bit] { p->finished |= uint8_t(bit); });
    } else {
        UniqueFd source;
        if (p->io.terminal)
            source = UniqueFd(::fcntl(p->io.terminal.get(), F_DUPFD_CLOEXEC, 3));
        else
            source = std::move(channel == Channel::Stdout ? p->io.stdout_pipe : p->io.stderr_pipe);
        if (!source) return Error::from_string("the output channel is gone", EPIPE);
        pump = std::make_unique<Pump>(
            m_poller, std::move(source), std::move(sock), Pump::SinkKind::Socket, std::move(reply),
            [this, p, bit] {
                p->finished |= uint8_t(bit);
                maybe_report_exit(*p);
            },
            p->io.terminal ? Pump::OnSinkFailure::DrainSource : Pump::OnSinkFailure::CloseSource);
    }
    p->attached |= uint8_t(bit);
    p->pumps[int(channel)] = std::move(pump);
    return p->pumps[int(channel)]->start();
}

void Agent::on_signal() {
    signalfd_siginfo info;
    while (::read(m_signals.get(), &info, sizeof info) == sizeof info) {
    }
    for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        for (auto& [id, p] : m_processes) {
            if (p->io.pid != pid || p->exited) continue;
            p->exited = true;
            p->status = shell_status(status);
            // The container is the VM: when its process ends, so does everything else in it.
            if (pid == m_init_pid && m_options.whole_machine) ::kill(-1, SIGKILL);
            maybe_report_exit(*p);
            break;
        }
    }
}

void Agent::maybe_report_exit(Process& p) {
    if (!p.exited || p.reported) return;
    // Output first: every byte the process wrote reaches the host before its exit status.
    uint8_t outputs = p.attach & (kAttachStdout | kAttachStderr);
    if ((p.finished & outputs) != outputs) return;
    p.reported = true;
    std::string payload = Writer().str(p.exec_id).i32(p.status).take();
    if (auto it = m_connections.find(p.owner); it != m_connections.end())
        send(*it->second, MessageType::Exit, 0, payload);
    for (auto [conn, id] : p.waiters)
        if (auto it = m_connections.find(conn); it != m_connections.end())
            send(*it->second, MessageType::Ok, id, Writer().i32(p.status).take());
    p.waiters.clear();
    if (p.pumps[0]) p.pumps[0].reset();
    if (powers_off() && p.exec_id == kInitId && !m_connections.count(p.owner)) begin_shutdown();
}

bool Agent::powers_off() const {
    return m_options.power_off && !(m_container && m_container->serverless);
}

void Agent::begin_shutdown() {
    m_shutdown = true;
}

}  // namespace husk::agent
