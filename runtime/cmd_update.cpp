// husk update [--resources FILE|-] [--memory N ...] ID: resource changes for a
// running container. The VM's RAM is fixed at create (the memory limit then);
// a new memory limit moves the VM's balloon, so the guest gives back what lies
// above it and takes it again when the limit rises, up to that size. vCPUs
// cannot change: such a change is refused with a clear error rather than
// accepted and ignored. Values equal to what the VM has are accepted (Docker
// resends them). A pids limit is sent to the agent, which writes it to the
// container's cgroup in the guest.
#include <unistd.h>

#include <cctype>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "runtime/args.h"
#include "runtime/cgroup.h"
#include "runtime/exec_proxy.h"
#include "runtime/runtime.h"
#include "runtime/state.h"
#include "vmm/base/system.h"
#include "vmm/client/api_client.h"

namespace husk::runtime {
namespace {

constexpr int64_t kMinLimitMib = 32;  // below this the guest kernel itself cannot run

// runc's --memory: bytes, or a number with a k/m/g suffix (binary units).
Result<int64_t> parse_bytes(const std::string& text) {
    size_t used = 0;
    int64_t n = 0;
    try {
        n = std::stoll(text, &used);
    } catch (const std::exception&) {
        return Error::from_string("update: --memory `" + text + "` is not a size (bytes, or N[kmg])", EINVAL);
    }
    std::string unit = text.substr(used);
    if (!unit.empty() && (unit.back() == 'b' || unit.back() == 'B')) unit.pop_back();
    int shift = unit.empty() ? 0 : -1;
    if (unit.size() == 1) {
        switch (std::tolower(unit[0])) {
            case 'k':
                shift = 10;
                break;
            case 'm':
                shift = 20;
                break;
            case 'g':
                shift = 30;
                break;
            default:
                break;
        }
    }
    if (shift < 0)
        return Error::from_string("update: --memory `" + text + "` is not a size (bytes, or N[kmg])", EINVAL);
    if (n > 0 && n > (INT64_MAX >> shift)) return Error::from_string("update: --memory `" + text + "` is too large");
    return n << shift;
}

// The memory limit asked for, in bytes: 0 for none given, -1 for unlimited.
Result<int64_t> memory_limit(const ArgParser& p, const nlohmann::json& resources) {
    if (p.has("memory")) return parse_bytes(p.get("memory"));
    if (!resources.contains("memory") || !resources["memory"].is_object()) return 0;
    const auto& limit = resources["memory"].value("limit", nlohmann::json());
    if (limit.is_null()) return 0;
    if (!limit.is_number_integer()) return Error::from_string("update: memory.limit must be an integer", EINVAL);
    int64_t v = limit.get<int64_t>();
    return v < 0 ? -1 : v;
}

// Moves the balloon so the guest keeps `limit` bytes of its RAM.
Result<void> apply_memory_limit(const ContainerState& state, int64_t limit) {
    auto stats = TRY(api_call(state.api_socket, {{"cmd", "stats"}}).context("update `" + state.id + "`"));
    int64_t vm_mib = int64_t(stats.value("memory_bytes", uint64_t(0)) >> 20);
    int64_t limit_mib = limit < 0 ? vm_mib : (limit + (1 << 20) - 1) >> 20;
    if (limit_mib > vm_mib)
        return Error::from_string("update: the container's microVM has " + std::to_string(vm_mib) +
                                      " MiB; its memory can shrink and grow back up to that, not beyond (" +
                                      std::to_string(limit_mib) + " MiB asked): recreate the container",
                                  ENOTSUP);
    if (limit_mib < kMinLimitMib)
        return Error::from_string(
            "update: a memory limit below " + std::to_string(kMinLimitMib) + " MiB leaves the microVM's kernel no room",
            EINVAL);
    auto reply =
        TRY(api_call(state.api_socket, {{"cmd", "balloon"}, {"target_mib", vm_mib - limit_mib}, {"stats", false}})
                .context("update `" + state.id + "`"));
    (void)reply;
    return {};
}

Result<void> apply_pids_limit(const ContainerState& state, int64_t limit) {
    // A paused VM cannot answer: the wait is bounded.
    auto client = TRY(connect_agent(state, std::chrono::seconds(10), std::chrono::seconds(10)).context("update"));
    TRY(client->set_pids_limit(limit > 0 ? uint64_t(limit) : 0).context("update the pids limit"));
    return {};
}

}  // namespace

Result<int> cmd_update(const GlobalOptions& g, const Args& args) {
    ArgParser p("update");
    p.value("resources", "r").value("memory").value("memory-swap").value("memory-reservation").value("kernel-memory");
    p.value("cpu-quota").value("cpu-period").value("cpu-share").value("cpuset-cpus").value("cpuset-mems");
    p.value("pids-limit").value("blkio-weight").value("l3-cache-schema").value("cpu-rt-period").value("cpu-rt-runtime");
    TRY(p.parse(args));
    std::string id = TRY(p.id());
    auto state = TRY(load_state(g.root, id));
    if (live_status(state) == "stopped") return Error::from_string("container `" + state.id + "` is not running");
    nlohmann::json resources = nlohmann::json::object();
    if (p.has("resources")) {
        std::string text;
        if (p.get("resources") == "-")
            text.assign(std::istreambuf_iterator<char>(std::cin), {});
        else
            text = TRY(sys::read_file(p.get("resources"), 1 << 20));
        try {
            resources = nlohmann::json::parse(text);
        } catch (const nlohmann::json::exception& e) {
            return Error::from_string(std::string("update: --resources is not valid JSON: ") + e.what());
        }
        if (!resources.is_object()) return Error::from_string("update: --resources must hold a JSON object", EINVAL);
    }
    const nlohmann::json* cpu = resources.contains("cpu") && resources["cpu"].is_object() ? &resources["cpu"] : nullptr;
    bool cpuset = p.has("cpuset-cpus") || (cpu && cpu->contains("cpus") && (*cpu)["cpus"].is_string() &&
                                           !(*cpu)["cpus"].get<std::string>().empty());
    if (cpuset)
        return Error::from_string("update: the vCPUs of a running microVM cannot change; recreate the container",
                                  ENOTSUP);
    // A CPU quota throttles husk-vmm's cgroup, vCPUs included; their number stays.
    std::optional<int64_t> quota;
    uint64_t period = 100000;
    try {
        if (p.has("cpu-quota")) quota = std::stoll(p.get("cpu-quota"));
        if (p.has("cpu-period")) period = std::stoull(p.get("cpu-period"));
        if (cpu && cpu->contains("quota") && (*cpu)["quota"].is_number_integer())
            quota = (*cpu)["quota"].get<int64_t>();
        if (cpu && cpu->contains("period") && (*cpu)["period"].is_number_unsigned())
            period = (*cpu)["period"].get<uint64_t>();
    } catch (const std::exception&) {
        return Error::from_string("update: --cpu-quota and --cpu-period take numbers", EINVAL);
    }
    if (quota && *quota != 0) {
        if (state.cgroup.empty())
            return Error::from_string(
                "update: container `" + state.id + "` has no cgroup (no linux.cgroupsPath at create) to limit",
                ENOTSUP);
        enable_cpu_controller(state.cgroup);
        TRY(set_cpu_limit(state.cgroup, *quota, period).context("update the CPU limit"));
    }
    int64_t limit = TRY(memory_limit(p, resources));
    if (limit != 0) TRY(apply_memory_limit(state, limit));
    // The pids limit is the container's cgroup in the guest: 0 changes nothing, a negative one lifts it.
    std::optional<int64_t> pids;
    try {
        if (p.has("pids-limit")) pids = std::stoll(p.get("pids-limit"));
    } catch (const std::exception&) {
        return Error::from_string("update: --pids-limit takes a number", EINVAL);
    }
    if (resources.contains("pids") && resources["pids"].is_object()) {
        const auto& l = resources["pids"].value("limit", nlohmann::json());
        if (l.is_number_integer()) pids = l.get<int64_t>();
    }
    if (pids && *pids != 0) TRY(apply_pids_limit(state, *pids));
    return 0;
}

}  // namespace husk::runtime
