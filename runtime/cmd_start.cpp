// husk start ID: the container's process runs.
#include "runtime/args.h"
#include "runtime/create.h"

namespace husk::runtime {

Result<int> cmd_start(const GlobalOptions& g, const Args& args) {
    ArgParser p("start");
    TRY(p.parse(args));
    std::string id = TRY(p.id());
    auto state = TRY(load_state(g.root, id));
    TRY(start_container(state));
    return 0;
}

}  // namespace husk::runtime
