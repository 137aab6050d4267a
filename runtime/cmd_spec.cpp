// husk spec [--bundle DIR]: writes a starting config.json, as `runc spec` does.
#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "runtime/args.h"
#include "runtime/default_spec.h"
#include "runtime/runtime.h"
#include "vmm/base/json_text.h"
#include "vmm/base/system.h"

namespace husk::runtime {

Result<int> cmd_spec(const GlobalOptions&, const Args& args) {
    ArgParser p("spec");
    p.value("bundle", "b").ignored_flag("rootless");
    TRY(p.parse(args));
    std::string path = p.get("bundle", ".") + "/config.json";
    if (::access(path.c_str(), F_OK) == 0) return Error::from_string(path + " exists; remove it first", EEXIST);
    nlohmann::json spec = default_spec();
    auto fd = TRY(sys::open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    TRY(sys::write_all(fd.get(), json_text(spec, 2) + "\n"));
    return 0;
}

}  // namespace husk::runtime
