// husk kill [--all] ID [SIGNAL]: the signal reaches the container's process in the VM.
#include <signal.h>

#include <cstdlib>
#include <cstring>
#include <map>

#include "runtime/args.h"
#include "runtime/runtime.h"
#include "runtime/state.h"
#include "vmm/client/api_client.h"

namespace husk::runtime {

Result<int> parse_signal(const std::string& text) {
    if (!text.empty() && std::isdigit(static_cast<unsigned char>(text[0]))) {
        char* end = nullptr;
        long n = std::strtol(text.c_str(), &end, 10);
        if (*end || n <= 0 || n >= NSIG) return Error::from_string("invalid signal `" + text + "`");
        return int(n);
    }
    std::string name = text;
    for (auto& ch : name) ch = char(std::toupper(static_cast<unsigned char>(ch)));
    if (name.rfind("SIG", 0) == 0) name = name.substr(3);
    for (int s = 1; s < NSIG; ++s) {
        const char* abbrev = sigabbrev_np(s);
        if (abbrev && name == abbrev) return s;
    }
    return Error::from_string("invalid signal `" + text + "`");
}

Result<int> cmd_kill(const GlobalOptions& g, const Args& args) {
    ArgParser p("kill");
    p.flag("all", "a");
    TRY(p.parse(args));
    const auto& pos = p.positionals();
    if (pos.empty() || pos.size() > 2) return Error::from_string("kill: usage: husk kill [--all] ID [SIGNAL]");
    auto state = TRY(load_state(g.root, pos[0]));
    int sig = pos.size() == 2 ? TRY(parse_signal(pos[1])) : SIGTERM;
    std::string status = live_status(state);
    if (status == "stopped") return Error::from_string("container `" + state.id + "` is not running", ESRCH);
    auto reply = api_call(state.api_socket, {{"cmd", "kill"}, {"signal", sig}, {"all", p.get("all") == "true"}});
    if (!reply) {
        // husk-vmm cannot be asked (wedged, or gone mid-call): a KILL still ends the container.
        if (sig != SIGKILL) return reply.release_error().with_context("kill `" + state.id + "`");
        ::kill(state.pid, SIGKILL);
    }
    return 0;
}

}  // namespace husk::runtime
