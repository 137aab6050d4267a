// husk delete [--force] ID: removes a stopped (or, with --force, any) container.
#include "runtime/args.h"
#include "runtime/create.h"

namespace husk::runtime {

Result<int> cmd_delete(const GlobalOptions& g, const Args& args) {
    ArgParser p("delete");
    p.flag("force", "f");
    TRY(p.parse(args));
    std::string id = TRY(p.id());
    auto state = load_state(g.root, id);
    if (!state) {
        // --force on a container that does not exist is not an error (runc's behaviour).
        if (p.get("force") == "true" && state.error().code() == ENOENT) return 0;
        return state.release_error();
    }
    std::string status = live_status(state.value());
    if ((status == "running" || status == "paused") && p.get("force") != "true")
        return Error::from_string("container `" + id + "` is " + status + ": stop it first or use --force", EBUSY);
    TRY(destroy_container(state.value()));
    return 0;
}

}  // namespace husk::runtime
