// husk ps [--format table|json] ID: the container's host processes — husk-vmm
// and the exec proxies. (The processes inside the VM have no host pids.)
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/args.h"
#include "runtime/runtime.h"
#include "runtime/state.h"
#include "vmm/base/json_text.h"

namespace husk::runtime {

Result<int> cmd_ps(const GlobalOptions& g, const Args& args) {
    ArgParser p("ps");
    p.value("format", "f");
    TRY(p.parse(args));
    if (p.positionals().empty()) return Error::from_string("ps: a container ID is required");
    auto state = TRY(load_state(g.root, p.positionals()[0]));
    std::vector<pid_t> pids;
    if (vmm_alive(state)) pids.push_back(state.pid);
    for (pid_t e : state.exec_pids)
        if (::kill(e, 0) == 0) pids.push_back(e);
    std::string format = p.get("format", "table");
    if (format == "json") {
        std::printf("%s\n", json_text(nlohmann::json(pids)).c_str());
        return 0;
    }
    if (format != "table") return Error::from_string("ps: --format is table or json");
    std::printf("PID\tCMD\n");
    for (pid_t pid : pids) {
        std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
        std::string comm;
        std::getline(f, comm);
        std::printf("%d\t%s\n", pid, comm.c_str());
    }
    return 0;
}

}  // namespace husk::runtime
