// husk pause ID / husk resume ID: the VM's vCPUs stop and go.
#include "runtime/args.h"
#include "runtime/runtime.h"
#include "runtime/state.h"
#include "vmm/client/api_client.h"

namespace husk::runtime {

namespace {
Result<int> pause_or_resume(const GlobalOptions& g, const Args& args, const std::string& cmd) {
    ArgParser p(cmd);
    TRY(p.parse(args));
    std::string id = TRY(p.id());
    auto state = TRY(load_state(g.root, id));
    std::string status = live_status(state);
    if (cmd == "pause" && status != "running")
        return Error::from_string("container `" + state.id + "` is " + status + ", not running");
    if (cmd == "resume" && status != "paused")
        return Error::from_string("container `" + state.id + "` is " + status + ", not paused");
    TRY(api_call(state.api_socket, {{"cmd", cmd}}).context(cmd + " `" + state.id + "`"));
    state.status = cmd == "pause" ? "paused" : "running";
    TRY(save_state(state));
    return 0;
}
}  // namespace

Result<int> cmd_pause(const GlobalOptions& g, const Args& args) {
    return pause_or_resume(g, args, "pause");
}
Result<int> cmd_resume(const GlobalOptions& g, const Args& args) {
    return pause_or_resume(g, args, "resume");
}

}  // namespace husk::runtime
