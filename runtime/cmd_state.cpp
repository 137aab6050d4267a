// husk state ID: the OCI state JSON (runtime-spec runtime.md "State").
#include <cstdio>

#include "runtime/args.h"
#include "runtime/runtime.h"
#include "runtime/state.h"
#include "vmm/base/json_text.h"

namespace husk::runtime {

Result<int> cmd_state(const GlobalOptions& g, const Args& args) {
    ArgParser p("state");
    TRY(p.parse(args));
    std::string id = TRY(p.id());
    auto state = TRY(load_state(g.root, id));
    std::printf("%s\n", json_text(state.oci_json(live_status(state)), 2).c_str());
    return 0;
}

}  // namespace husk::runtime
