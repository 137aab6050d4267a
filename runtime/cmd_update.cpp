// husk update [--resources FILE|-] [--memory N ...] ID: resource changes for a
// running container. The VM's size is fixed at create: growing or shrinking it
// needs the memory balloon and vCPU hotplug, so a change is refused with a
// clear error rather than accepted and ignored. Values equal to what the VM has
// are accepted (Docker resends them).
#include <unistd.h>

#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "runtime/args.h"
#include "runtime/runtime.h"
#include "runtime/state.h"
#include "vmm/base/system.h"

namespace husk::runtime {

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
    }
    bool memory = p.has("memory") || (resources.contains("memory") && resources["memory"].contains("limit") &&
                                      !resources["memory"]["limit"].is_null() && resources["memory"]["limit"] != 0);
    bool cpu = p.has("cpu-quota") || p.has("cpuset-cpus") ||
               (resources.contains("cpu") && resources["cpu"].is_object() &&
                ((resources["cpu"].contains("quota") && !resources["cpu"]["quota"].is_null() &&
                  resources["cpu"]["quota"] != 0) ||
                 (resources["cpu"].contains("cpus") && resources["cpu"]["cpus"].is_string() &&
                  !resources["cpu"]["cpus"].get<std::string>().empty())));
    if (memory)
        return Error::from_string(
            "update: the memory of a running microVM cannot change yet (it needs the balloon); "
            "recreate the container with the new limit",
            ENOTSUP);
    if (cpu)
        return Error::from_string("update: the vCPUs of a running microVM cannot change; recreate the container",
                                  ENOTSUP);
    return 0;
}

}  // namespace husk::runtime
