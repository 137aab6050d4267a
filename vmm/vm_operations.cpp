// Vmm's VM-wide operations — pause, resume, snapshot, reset and restore in
// place, balloon, stats — one at a time under m_operation_lock, and the
// control socket's dispatch of typed commands to them.
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "vmm/api/api_command.h"
#include "vmm/api/api_reply.h"
#include "vmm/arch/x86/cpuid.h"
#include "vmm/base/clock.h"
#include "vmm/base/json_text.h"
#include "vmm/base/log.h"
#include "vmm/base/system.h"
#include "vmm/snapshot/dirty_pages.h"
#include "vmm/snapshot/snapshot.h"
#include "vmm/vmm.h"

namespace husk {

Result<std::vector<std::unique_lock<std::mutex>>> Vmm::hold_idle_devices() {
    // Checked with every device lock held: a queue notification the event
    // loop takes between a check and the lock could start new I/O.
    for (int waited = 0; waited < 2000; ++waited) {
        std::vector<std::unique_lock<std::mutex>> held;
        bool busy = false;
        for (auto& t : m_virtio) {
            held.push_back(t->hold());
            busy = busy || t->busy_locked();
        }
        if (!busy) return held;
        held.clear();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return Error::from_string("device I/O did not finish within 2 s", ETIMEDOUT);
}

Result<api::SnapshotReply> Vmm::take_snapshot(const std::string& dir) {
    std::lock_guard operation(m_operation_lock);
    return take_snapshot_locked(dir);
}

Result<api::SnapshotReply> Vmm::take_snapshot_locked(const std::string& dir) {
    if (dir.empty()) return Error::from_string("snapshot needs a \"path\": the directory to write", EINVAL);
    if (::mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST)
        return Error::from_errno(errno, "create snapshot directory `" + dir + "`");
    uint64_t t0 = clock::now_ns();
    bool was_paused = is_paused();
    TRY(pause_vcpus());
    uint64_t resumes = m_runner->resumes();
    auto result = [&]() -> Result<api::SnapshotReply> {
        // The devices' locks stay held until guest memory is written: host
        // data arriving meanwhile waits instead of changing queues already saved.
        auto held = TRY(hold_idle_devices());
        snapshot::Snapshot snap;
        if (m_msr_indices.empty()) m_msr_indices = TRY(m_kvm.msr_index_list());
        for (size_t i = 0; i < m_vcpus.size(); ++i) {
            snap.vcpus.push_back(TRY(snapshot::capture_vcpu(m_vcpus[i], m_msr_indices)));
            snap.vcpus.back().cpuid = m_cpuid[i];
        }
        snap.vm = TRY(snapshot::capture_vm(m_vm));
        snap.serial = m_serial->save_state();
        for (auto& t : m_virtio) snap.devices.push_back({t->id(), t->device().device_type(), t->save_state_locked()});
        if (m_supported_cpuid.empty()) m_supported_cpuid = TRY(m_kvm.supported_cpuid());
        snap.machine = {m_memory.size(), uint32_t(m_vcpus.size()), x86::vendor_string(m_supported_cpuid),
                        to_string(m_config.cpu_template), json_text(machine_to_json(m_config))};
        std::string memory_path = dir + "/" + snapshot::kMemoryFile;
        TRY(m_memory.save(memory_path + ".tmp"));
        // An old vmstate goes first: a crash from here on leaves no pair that
        // does not belong together (a missing vmstate is refused).
        if (::unlink((dir + "/" + snapshot::kStateFile).c_str()) < 0 && errno != ENOENT)
            return Error::from_errno(errno, "remove the old vmstate in `" + dir + "`");
        if (::rename((memory_path + ".tmp").c_str(), memory_path.c_str()) < 0)
            return Error::from_errno(errno, "rename `" + memory_path + ".tmp`");
        held.clear();
        TRY(m_runner->check_still_paused(resumes));
        TRY(snapshot::write_state(dir, snap));
        double ms = double(clock::now_ns() - t0) / 1e6;
        log::info("snapshot written to {} in {:.1f} ms", dir, ms);
        return api::SnapshotReply{dir, ms, m_memory.size()};
    }();
    if (!was_paused) resume_vcpus();
    return result;
}

Result<api::ResetReply> Vmm::reset_to_snapshot(const std::string& other) {
    std::lock_guard operation(m_operation_lock);
    return reset_to_snapshot_locked(other);
}

Result<api::ResetReply> Vmm::reset_to_snapshot_locked(const std::string& other) {
    if (!m_snapshot)
        return Error::from_string("this VM was not restored from a snapshot: there is nothing to reset to");
    std::unique_ptr<snapshot::Snapshot> replacement;
    if (!other.empty()) {
        replacement = std::make_unique<snapshot::Snapshot>(TRY(snapshot::read_state(other)));
        TRY(snapshot::check_same_machine(*m_snapshot, *replacement, m_cpuid, other));
    }
    uint64_t t0 = clock::now_ns();
    bool was_paused = is_paused();
    TRY(pause_vcpus());
    uint64_t resumes = m_runner->resumes();
    uint64_t t_paused = clock::now_ns(), t_reverted = 0, t_state = 0;
    uint64_t dirty = 0;
    auto result = [&]() -> Result<void> {
        // Devices stop first, so nothing writes guest memory behind the revert.
        {
            auto held = TRY(hold_idle_devices());
            for (auto& t : m_virtio) t->quiesce_locked();
        }
        dirty = TRY(
            snapshot::reset_memory(m_vm, m_memory, replacement ? other + "/" + snapshot::kMemoryFile : std::string()));
        if (replacement) {
            m_snapshot = std::move(replacement);
            m_snapshot_dir = other;
        }
        t_reverted = clock::now_ns();
        const auto& snap = *m_snapshot;
        TRY(snapshot::restore_machine(m_vm, m_vcpus, snap, false));
        TRY(load_device_state(snap));
        TRY(m_runner->check_still_paused(resumes));
        t_state = clock::now_ns();
        return {};
    }();
    if (result.is_error()) {
        // Half a reset is no VM to run.
        request_exit(kExitVmmError, "reset failed: " + result.error().message());
        return result.release_error();
    }
    if (!was_paused) resume_vcpus();
    uint64_t t_end = clock::now_ns();
    double us = double(t_end - t0) / 1e3;
    ++m_resets;
    m_last_reset_us = us;
    log::info("reset to {} in {:.1f} us ({} pages reverted)", m_snapshot_dir, us, dirty);
    // The guest's RNG state is the snapshot's again: reseed it before anyone
    // relies on it (a container session does so itself when it connects).
    bool reseeded = false;
    if (m_config.agent && !m_container && !was_paused) {
        auto r = reseed_guest();
        reseeded = !r.is_error();
        if (!reseeded) log::warn("could not reseed the guest's RNG after reset: {}", r.error().message());
    }
    auto us_between = [](uint64_t a, uint64_t b) { return double(b - a) / 1e3; };
    api::ResetReply reply{us, dirty, m_resets, reseeded, {}};
    reply.breakdown_us = {us_between(t0, t_paused), us_between(t_paused, t_reverted), us_between(t_reverted, t_state),
                          us_between(t_state, t_end)};
    return reply;
}

Result<void> Vmm::reseed_guest() {
    if (!m_config.agent || m_config.vsock_socket.empty())
        return Error::from_string("the guest runs no husk-agent to reseed its RNG through", ENOTSUP);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    auto client = TRY(agent::AgentClient::connect({m_config.vsock_socket, true, agent::kPort}, deadline));
    // A guest that never answers (no husk-agent behind the port after all)
    // must not hold this thread, and with it husk-vmm's exit, for ever.
    client->set_reply_deadline(deadline);
    TRY(client->hello());
    std::string entropy(64, '\0');
    if (::getrandom(entropy.data(), entropy.size(), 0) != ssize_t(entropy.size()))
        return Error::from_errno(errno, "getrandom");
    TRY(client->reseed(entropy));
    return {};
}

bool Vmm::is_paused() {
    return m_runner && m_runner->paused();
}

api::StatsReply Vmm::stats() {
    api::StatsReply r;
    r.vcpus = uint32_t(m_vcpus.size());
    r.memory_bytes = m_memory.size();
    r.rss_kib = sys::resident_kib();
    if (uint64_t first = m_runner ? m_runner->first_run_ns() : 0; first != 0)
        r.first_run_ms = double(first - clock::process_start_ns()) / 1e6;
    if (auto rss = sys::resident_breakdown_kib(); rss) r.rss_breakdown_kib = {rss->anon, rss->file, rss->shmem};
    if (m_balloon) {
        auto held = m_balloon_transport->hold();
        r.balloon = m_balloon->info();
    }
    if (m_vsock) {
        // What the guest holds of the device's capped tables (README, "Limits").
        auto held = m_vsock_transport->hold();
        r.vsock = {m_vsock->connection_count(), m_vsock->pending_client_count(), m_vsock->control_backlog(),
                   m_vsock->dropped_control_packets()};
    }
    if (m_snapshot) r.restored = {m_snapshot_dir, m_restore_ms, m_resets, m_last_reset_us};
    return r;
}

Result<void> Vmm::plug_net() {
    if (m_net_transports.empty()) return Error::from_string("this VM has no NIC (net.tap)", ENODEV);
    size_t plugged = 0;
    for (const auto& t : m_net_transports)
        if (t->plug()) ++plugged;
    if (!plugged) return Error::from_string("every NIC is plugged already", EALREADY);
    log::info("{} NIC(s) plugged: the guest can probe them", plugged);
    return {};
}

Result<api::BalloonReply> Vmm::balloon(std::optional<uint32_t> target_mib, bool fresh_stats) {
    std::lock_guard operation(m_operation_lock);
    if (!m_balloon) return Error::from_string("this VM has no balloon (balloon.enabled = false)", ENOTSUP);
    constexpr uint32_t kPagesPerMib = virtio::Balloon::kPagesPerMib;
    if (target_mib && *target_mib >= m_config.memory_mib)
        return Error::from_string(fmt::format("a balloon of {} MiB leaves the guest nothing: it has {} MiB",
                                              *target_mib, m_config.memory_mib),
                                  EINVAL);
    uint64_t seen = 0;
    bool asked = false;
    {
        auto held = m_balloon_transport->hold();
        if (target_mib) {
            m_balloon->set_target(*target_mib * kPagesPerMib);
            log::info("balloon target {} MiB", *target_mib);
        }
        seen = m_balloon->info().stats_updates;
        asked = fresh_stats && !is_paused() && m_balloon->request_stats();
    }
    // The driver answers from a work queue; a busy or stopped guest may not in time.
    bool fresh = false;
    for (int waited = 0; asked && waited < 1000 && !fresh; waited += 5) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        auto held = m_balloon_transport->hold();
        fresh = m_balloon->info().stats_updates != seen;
    }
    auto held = m_balloon_transport->hold();
    return api::BalloonReply{m_balloon->info(), fresh};
}

Result<void> Vmm::pause() {
    std::lock_guard operation(m_operation_lock);
    return pause_vcpus();
}

void Vmm::resume() {
    std::lock_guard operation(m_operation_lock);
    resume_vcpus();
}

Result<void> Vmm::pause_vcpus() {
    if (!m_runner) return Error::from_string("the VM is not running", EAGAIN);
    return m_runner->pause();
}

void Vmm::resume_vcpus() {
    if (m_runner) m_runner->resume();
}

nlohmann::json Vmm::api_request(const nlohmann::json& request) {
    auto command = api::parse_command(request);
    if (command.is_error()) return {{"error", command.error().message()}};
    if (!m_container && api::needs_container(command.value()))
        return {{"error", fmt::format("`{}` needs a container (container.specs)", api::command_name(command.value()))}};
    auto reply = handle(command.value());
    return reply ? api::to_json(reply.value()) : nlohmann::json{{"error", reply.error().message()}};
}

std::string Vmm::status() {
    std::string s = m_container ? ContainerSession::to_string(m_container->status()) : "running";
    return is_paused() ? "paused" : s;
}

Result<api::Reply> Vmm::handle(const api::Command& command) {
    return std::visit(
        [this](const auto& c) -> Result<api::Reply> {
            using C = std::decay_t<decltype(c)>;
            if constexpr (std::is_same_v<C, api::State>) {
                return api::StatusReply{status(), ::getpid()};
            } else if constexpr (std::is_same_v<C, api::Pause>) {
                TRY(pause());
                return api::StatusReply{status(), {}};
            } else if constexpr (std::is_same_v<C, api::Resume>) {
                resume();
                return api::StatusReply{status(), {}};
            } else if constexpr (std::is_same_v<C, api::Stats>) {
                return stats();
            } else if constexpr (std::is_same_v<C, api::Balloon>) {
                return TRY(balloon(c.target_mib, c.fresh_stats));
            } else if constexpr (std::is_same_v<C, api::Snapshot>) {
                return TRY(take_snapshot(c.path));
            } else if constexpr (std::is_same_v<C, api::Reset>) {
                return TRY(reset_to_snapshot());
            } else if constexpr (std::is_same_v<C, api::Restore>) {
                return TRY(reset_to_snapshot(c.path));
            } else if constexpr (std::is_same_v<C, api::Start>) {
                TRY(m_container->request_start());
                return api::StatusReply{"running", {}};
            } else if constexpr (std::is_same_v<C, api::PlugNet>) {
                TRY(plug_net());
                return api::EmptyReply{};
            } else if constexpr (std::is_same_v<C, api::Kill>) {
                // Before start there is no process: the signal ends the VM, as it would a created runc container.
                if (m_container->status() != ContainerSession::Status::Running) {
                    request_exit(kExitSignalBase + c.signal,
                                 std::string("killed before start by ") + strsignal(c.signal));
                    return api::StatusReply{"stopped", {}};
                }
                if (is_paused()) return Error::from_string("the container is paused; resume it first", EBUSY);
                TRY(m_container->signal(c.signal, c.all));
                return api::StatusReply{status(), {}};
            } else {
                static_assert(std::is_same_v<C, api::Resize>);
                TRY(m_container->resize(c.rows, c.cols));
                return api::EmptyReply{};
            }
        },
        command);
}

}  // namespace husk
