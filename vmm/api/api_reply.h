// What the VMM's operations answer, as types: Vmm returns these, and the
// control socket alone turns them into JSON (vmm/api/API.md names the fields).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>

#include "vmm/devices/virtio/balloon/balloon.h"

namespace husk::api {

// `state`, `pause`, `resume`, `start`, `kill`: where the VM or its container stands.
struct StatusReply {
    std::string status;        // "running", "paused", or the container's state
    std::optional<pid_t> pid;  // `state` only: husk-vmm's pid
};

struct SnapshotReply {
    std::string path;
    double ms = 0;
    uint64_t memory_bytes = 0;
};

struct ResetReply {
    double us = 0;
    uint64_t dirty_pages = 0;  // pages reverted (all of them when moving to another snapshot)
    uint64_t resets = 0;       // in this VM's life
    bool reseeded = false;     // the guest's RNG was reseeded through husk-agent
    struct {
        double pause = 0, memory = 0, state = 0, resume = 0;
    } breakdown_us;
};

struct BalloonReply {
    virtio::BalloonInfo info;
    bool stats_fresh = false;  // the guest answered the request for new statistics
};

struct StatsReply {
    uint32_t vcpus = 0;
    uint64_t memory_bytes = 0;
    uint64_t rss_kib = 0;
    std::optional<double> first_run_ms;  // none before the first KVM_RUN
    struct Rss {
        uint64_t anon = 0, file = 0, shmem = 0;
    };
    std::optional<Rss> rss_breakdown_kib;
    std::optional<virtio::BalloonInfo> balloon;
    struct Vsock {
        uint64_t connections = 0, pending_clients = 0, control_backlog = 0, dropped_control_packets = 0;
    };
    std::optional<Vsock> vsock;
    struct Restored {
        std::string from;
        double restore_ms = 0;
        uint64_t resets = 0;
        double last_reset_us = 0;
    };
    std::optional<Restored> restored;
};

struct EmptyReply {};

using Reply = std::variant<StatusReply, SnapshotReply, ResetReply, BalloonReply, StatsReply, EmptyReply>;

nlohmann::json to_json(const Reply& reply);

}  // namespace husk::api
