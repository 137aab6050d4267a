#include "runtime/hooks.h"

#include "runtime/command.h"
#include "vmm/base/json_text.h"

namespace husk::runtime {

Result<void> run_hooks(const std::vector<oci::Hook>& hooks, const nlohmann::json& state, const std::string& phase) {
    for (const auto& h : hooks) {
        // args[0] is the hook's own name for itself (Docker's setkey hook dispatches on it); `path` is what runs.
        std::vector<std::string> argv = h.args.empty() ? std::vector<std::string>{h.path} : h.args;
        auto r = TRY(run_command(argv, json_text(state), h.timeout.value_or(60), &h.env, h.path)
                         .context(phase + " hook " + h.path));
        if (r.status != 0)
            return Error::from_string(phase + " hook " + h.path + " failed with status " + std::to_string(r.status) +
                                      (r.err.empty() ? "" : ": " + r.err.substr(0, 400)));
    }
    return {};
}

}  // namespace husk::runtime
