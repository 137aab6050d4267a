// The husk OCI runtime: shared declarations for its subcommands (one file each,
// cmd_*.cpp) over the library in this folder.
#pragma once

#include <string>
#include <vector>

#include "vmm/base/result.h"

namespace husk::runtime {

// The global options of the runc command line.
struct GlobalOptions {
    std::string root = "/run/husk";  // state directories: <root>/<id>/
    std::string log;                 // --log FILE: errors and warnings go here too
    bool log_json = false;           // --log-format json
    bool systemd_cgroup = false;
    bool debug = false;
    // --vmm-log-dir DIR (or HUSK_VMM_LOG_DIR; a debugging aid): each container VM's log
    // goes to DIR/<id>.log, where it outlives the container. The option reaches husk
    // where an engine does not pass its environment on (Podman's --runtime-flag).
    std::string vmm_log_dir;
};

using Args = std::vector<std::string>;

// Each returns the process's exit status; errors are reported by the caller.
Result<int> cmd_create(const GlobalOptions& g, const Args& args);
Result<int> cmd_start(const GlobalOptions& g, const Args& args);
Result<int> cmd_run(const GlobalOptions& g, const Args& args);
Result<int> cmd_state(const GlobalOptions& g, const Args& args);
Result<int> cmd_kill(const GlobalOptions& g, const Args& args);
Result<int> cmd_delete(const GlobalOptions& g, const Args& args);
Result<int> cmd_exec(const GlobalOptions& g, const Args& args);
Result<int> cmd_ps(const GlobalOptions& g, const Args& args);
Result<int> cmd_list(const GlobalOptions& g, const Args& args);
Result<int> cmd_pause(const GlobalOptions& g, const Args& args);
Result<int> cmd_resume(const GlobalOptions& g, const Args& args);
Result<int> cmd_update(const GlobalOptions& g, const Args& args);
Result<int> cmd_features(const GlobalOptions& g, const Args& args);
Result<int> cmd_doctor(const GlobalOptions& g, const Args& args);
Result<int> cmd_spec(const GlobalOptions& g, const Args& args);
// Register husk with Docker, containerd and Podman, and undo it (cmd_install.cpp).
Result<int> cmd_install(const GlobalOptions& g, const Args& args);
Result<int> cmd_uninstall(const GlobalOptions& g, const Args& args);
// Warm pools of VMs behind an HTTP API (runtime/serve/).
Result<int> cmd_serve(const GlobalOptions& g, const Args& args);

// A signal by number ("9") or name ("KILL", "SIGKILL").
Result<int> parse_signal(const std::string& text);

}  // namespace husk::runtime
