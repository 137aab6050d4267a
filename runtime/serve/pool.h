// A pool of `husk serve`: VMs restored from one snapshot, one invocation per
// clean VM, an in-place reset after each.
//
// Making a pool boots one VM over the bundle's rootfs (an ext4 image, attached
// read-only), sets the container up, runs the startup command to its end and
// snapshots the VM. `size` VMs are then restored from that snapshot and wait;
// while invocations wait for one, more are restored, up to `max_size`, and
// those idle for `scale_down_ms` are stopped again.
// An invocation takes an idle VM, runs its process as the container's `init`
// (agent/PROTOCOL.md, serverless), and gives the VM back after a `reset`: every
// page the invocation dirtied is reverted, so the next one finds the snapshot's
// state. A VM that times out, overflows its output cap or stops is killed, and
// a fresh one is restored in its place. So is one whose invocation met the
// OOM killer: past `memory_limit_mib` (the container's memory.max in the
// guest), or past the VM's memory.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/protocol.h"
#include "runtime/husk_config.h"
#include "vmm/base/result.h"
#include "vmm/client/vmm_command.h"

namespace husk::runtime::serve {

// POST /pools, checked whole before anything runs.
struct PoolConfig {
    std::string name;                // [a-z0-9_.-], 1 to 64 characters
    std::string bundle;              // an OCI bundle: config.json and its root.path; or
    std::string rootfs;              // a root filesystem directory, run with `husk spec`'s default config
    std::vector<std::string> args;   // invocations' default argv (empty: the bundle's, or `sh`)
    uint32_t size = 1;               // VMs kept warm, at the least
    uint32_t max_size = 0;           // at most (0: `size`): more are restored while invocations wait
    uint32_t scale_down_ms = 60000;  // a VM beyond `size` idle this long is stopped
    uint32_t queue = 16;             // invocations waiting for a VM beyond `size`; more get 429
    uint32_t vcpus = 1;
    uint32_t memory_mib = 256;
    uint32_t memory_limit_mib = 0;        // per invocation, below memory_mib (0: the VM's memory is the limit)
    std::vector<std::string> env;         // added to the bundle's process env
    std::vector<std::string> startup;     // run once before the snapshot (empty: none)
    uint32_t timeout_ms = 30000;          // per invocation
    uint64_t max_output_bytes = 1 << 20;  // stdout and stderr each
};
Result<PoolConfig> parse_pool_config(const nlohmann::json& body);
nlohmann::json to_json(const PoolConfig& config);

// Where a streamed invocation's output goes as it comes: channel 1 stdout, 2
// stderr. False: the reader is gone (what follows is read and dropped).
using OutputSink = std::function<bool(int channel, std::string_view data)>;

// POST /pools/{name}/invoke.
struct InvokeRequest {
    std::vector<std::string> args;  // empty: the bundle's process args
    std::vector<std::string> env;   // added to the pool's
    std::string stdin_data;
    std::optional<uint32_t> timeout_ms;
    bool stream = false;  // output as it comes (NDJSON), with no cap: nothing is held
};
Result<InvokeRequest> parse_invoke_request(const nlohmann::json& body);

struct InvokeResult {
    int exit_status = 0;
    std::string out, err;
    uint64_t queued_us = 0, run_us = 0, reset_us = 0;
    int vm = 0;  // which of the pool's VMs served it
};
nlohmann::json to_json(const InvokeResult& result);

// Counters for GET /pools/{name} and /metrics.
struct PoolStats {
    uint64_t invocations = 0, failures = 0, timeouts = 0, output_overflows = 0, memory_kills = 0, vm_losses = 0,
             refused = 0;
    uint64_t resets = 0, reset_us_total = 0, last_reset_us = 0, replaced = 0, scaled_up = 0, scaled_down = 0;
    uint32_t idle = 0, busy = 0, starting = 0, queued = 0;
};

struct ServeContext {
    RuntimeConfig runtime;  // husk-vmm, kernel, agent initramfs
    std::string initramfs;
    std::string dir;  // the pool's own directory (made and removed by the pool)
};

class Pool {
public:
    // Builds the snapshot and starts `size` VMs; on failure nothing is left.
    static Result<std::unique_ptr<Pool>> create(const PoolConfig& config, const ServeContext& context);
    ~Pool();

    // Waits for an idle VM (at most `queue` callers wait; EAGAIN past that),
    // then runs one invocation. Errors carry the HTTP meaning in their code:
    // EINVAL 400, EAGAIN 429, ETIMEDOUT 504, EMSGSIZE, ENOMEM and EPIPE 502, ESHUTDOWN 503.
    // With `sink`, output goes there as it comes and is not kept nor capped.
    Result<InvokeResult> invoke(const InvokeRequest& request, const OutputSink* sink = nullptr);
    const PoolConfig& config() const { return m_config; }
    PoolStats stats() const;
    nlohmann::json status() const;
    // Refuses new invocations, waits for those running (at most `drain`),
    // stops every VM and removes the pool's directory.
    void shutdown(std::chrono::milliseconds drain);

private:
    struct Vm {
        int index = 0;
        pid_t pid = -1;
        std::string api, vsock, log;
        uint64_t invocations = 0;
        std::chrono::steady_clock::time_point idle_since;
    };
    Pool(PoolConfig config, ServeContext context);
    Result<void> build_snapshot();
    // husk-vmm for one of the pool's VMs, its files `base`.api, .vsock, .log: the image read-only, no console.
    VmmCommand command_for(const std::string& base) const;
    Result<std::unique_ptr<Vm>> start_vm(int index);
    void kill_vm(Vm& vm);
    // Kills a busy VM that cannot be reset, and restores another in its place (in the background).
    void replace(std::unique_ptr<Vm> vm, const std::string& why);
    // Restores VM `index` in a thread of its own, counted in `starting`
    // (which the caller has already raised, under m_lock), into m_idle.
    void restore_in_background(int index);
    // Stops VMs beyond `size` that have been idle for `scale_down_ms`; until shutdown.
    void trim_loop();
    // The error of an invocation that ran out of memory (the limit it met, and `how`).
    Error out_of_memory(const std::string& how) const;
    Result<InvokeResult> run_on(Vm& vm, const InvokeRequest& request, std::chrono::steady_clock::time_point deadline,
                                const OutputSink* sink);

    PoolConfig m_config;
    ServeContext m_context;
    agent::ContainerSpec m_container;
    agent::ProcessSpec m_process;  // the bundle's, with the pool's env
    std::string m_image, m_snapshot;
    uint64_t m_oom_kills = 0;  // the container's OOM kills in the snapshot (the startup command's)

    mutable std::mutex m_lock;
    std::condition_variable m_changed;
    std::deque<std::unique_ptr<Vm>> m_idle;
    PoolStats m_stats;
    bool m_closing = false;
    std::vector<pid_t> m_live;  // husk-vmm processes of this pool, for shutdown
    int m_next_index = 0;       // the index of the next VM added beyond those made
    std::thread m_trimmer;
};

// Kills the husk-vmm processes a previous `husk serve` left under `root`
// (their pid files) and removes what is there.
void clean_stale_state(const std::string& root);

}  // namespace husk::runtime::serve
