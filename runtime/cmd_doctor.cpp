// husk doctor [--json]: one screen on whether this host can run husk's
// containers and what to fix (runtime/doctor.h). Exits 0 when it can.
#include <cstdio>

#include "runtime/args.h"
#include "runtime/doctor.h"
#include "runtime/runtime.h"
#include "vmm/base/json_text.h"

namespace husk::runtime {

Result<int> cmd_doctor(const GlobalOptions& g, const Args& args) {
    ArgParser p("doctor");
    p.flag("json");
    TRY(p.parse(args));
    if (!p.positionals().empty()) return Error::from_string("doctor takes no arguments", EINVAL);
    auto config = TRY(load_runtime_config());
    DoctorReport report = doctor(probe_host(), config, g.root);
    if (p.has("json"))
        std::printf("%s\n", json_text(doctor_json(report), 2).c_str());
    else
        std::fputs(format_doctor(report).c_str(), stdout);
    return report.ready ? 0 : 1;
}

}  // namespace husk::runtime
