// husk list [--format table|json] [--quiet]: every container under --root.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "runtime/args.h"
#include "runtime/runtime.h"
#include "runtime/state.h"
#include "vmm/base/json_text.h"

namespace husk::runtime {

Result<int> cmd_list(const GlobalOptions& g, const Args& args) {
    ArgParser p("list");
    p.value("format", "f").flag("quiet", "q");
    TRY(p.parse(args));
    std::string format = p.get("format", "table");
    if (format != "table" && format != "json") return Error::from_string("list: --format is table or json");
    nlohmann::json all = nlohmann::json::array();
    if (format == "table" && p.get("quiet") != "true")
        std::printf("%-20s %-8s %-10s %-40s %s\n", "ID", "PID", "STATUS", "BUNDLE", "CREATED");
    for (const auto& id : list_ids(g.root)) {
        auto state = load_state(g.root, id);
        if (!state) continue;
        std::string status = live_status(state.value());
        if (format == "json")
            all.push_back(state.value().oci_json(status));
        else if (p.get("quiet") == "true")
            std::printf("%s\n", id.c_str());
        else
            std::printf("%-20s %-8d %-10s %-40s %s\n", id.c_str(), status == "stopped" ? 0 : state.value().pid,
                        status.c_str(), state.value().bundle.c_str(), state.value().created.c_str());
    }
    if (format == "json") std::printf("%s\n", json_text(all).c_str());
    return 0;
}

}  // namespace husk::runtime
