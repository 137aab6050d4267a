#include "vmm/api/api_reply.h"

namespace husk::api {
namespace {

double mib(uint64_t pages) {
    return double(pages) / virtio::Balloon::kPagesPerMib;
}

nlohmann::json json_of(const StatusReply& r) {
    nlohmann::json j{{"status", r.status}};
    if (r.pid) j["pid"] = *r.pid;
    return j;
}

nlohmann::json json_of(const SnapshotReply& r) {
    return {{"path", r.path}, {"ms", r.ms}, {"memory_bytes", r.memory_bytes}};
}

nlohmann::json json_of(const ResetReply& r) {
    return {{"us", r.us},
            {"dirty_pages", r.dirty_pages},
            {"resets", r.resets},
            {"reseeded", r.reseeded},
            {"breakdown_us",
             {{"pause", r.breakdown_us.pause},
              {"memory", r.breakdown_us.memory},
              {"state", r.breakdown_us.state},
              {"resume", r.breakdown_us.resume}}}};
}

nlohmann::json json_of(const BalloonReply& r) {
    const auto& b = r.info;
    nlohmann::json stats = nlohmann::json::object();
    for (const auto& [name, value] : b.stats) stats[name] = value;
    return {{"target_mib", mib(b.target_pages)},  {"actual_mib", mib(b.actual_pages)},
            {"driver_ready", b.driver_ready},     {"inflated_pages", b.inflated_pages},
            {"deflated_pages", b.deflated_pages}, {"reported_mib", double(b.reported_bytes) / (1 << 20)},
            {"discard_calls", b.discard_calls},   {"refused_requests", b.refused_requests},
            {"stats_fresh", r.stats_fresh},       {"stats", stats}};
}

nlohmann::json json_of(const StatsReply& r) {
    nlohmann::json j{{"vcpus", r.vcpus}, {"memory_bytes", r.memory_bytes}, {"rss_kib", r.rss_kib}};
    j["first_run_ms"] = r.first_run_ms ? nlohmann::json(*r.first_run_ms) : nlohmann::json(nullptr);
    if (const auto& rss = r.rss_breakdown_kib) {
        j["rss_anon_kib"] = rss->anon;
        j["rss_file_kib"] = rss->file;
        j["rss_shmem_kib"] = rss->shmem;
    }
    if (const auto& b = r.balloon)
        j["balloon"] = {{"target_mib", mib(b->target_pages)},
                        {"actual_mib", mib(b->actual_pages)},
                        {"inflated_pages", b->inflated_pages},
                        {"reported_mib", double(b->reported_bytes) / (1 << 20)}};
    if (const auto& v = r.vsock)
        j["vsock"] = {{"connections", v->connections},
                      {"pending_clients", v->pending_clients},
                      {"control_backlog", v->control_backlog},
                      {"dropped_control_packets", v->dropped_control_packets}};
    if (const auto& s = r.restored) {
        j["restored_from"] = s->from;
        j["restore_ms"] = s->restore_ms;
        j["resets"] = s->resets;
        j["last_reset_us"] = s->last_reset_us;
    }
    return j;
}

nlohmann::json json_of(const EmptyReply&) {
    return nlohmann::json::object();
}

}  // namespace

nlohmann::json to_json(const Reply& reply) {
    return std::visit([](const auto& r) { return json_of(r); }, reply);
}

}  // namespace husk::api
