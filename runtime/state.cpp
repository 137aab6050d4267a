#include "runtime/state.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <fstream>
#include <sstream>

#include "vmm/base/json_text.h"
#include "vmm/base/system.h"
#include "vmm/client/api_client.h"

namespace husk::runtime {

using Json = nlohmann::json;

Result<void> validate_id(const std::string& id) {
    if (id.empty()) return Error::from_string("container id must not be empty");
    if (id.size() > 1024) return Error::from_string("container id is longer than 1024 bytes");
    for (char ch : id)
        if (!(isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.'))
            return Error::from_string("invalid container id `" + id + "`: use letters, digits, _ - .");
    if (id == "." || id == "..") return Error::from_string("invalid container id `" + id + "`");
    return {};
}

std::string state_dir(const std::string& root, const std::string& id) {
    return root + "/" + id;
}

nlohmann::json ContainerState::oci_json(const std::string& live) const {
    Json j = {{"ociVersion", oci_version.empty() ? "1.0.2" : oci_version},
              {"id", id},
              {"status", live},
              {"bundle", bundle},
              {"rootfs", rootfs},
              {"created", created},
              {"owner", ""}};
    // runc omits the pid once stopped; the shim accepts 0.
    j["pid"] = live == "stopped" ? 0 : pid;
    j["annotations"] = annotations;
    return j;
}

Result<ContainerState> load_state(const std::string& root, const std::string& id) {
    TRY(validate_id(id));
    std::string dir = state_dir(root, id);
    auto text = sys::read_file(dir + "/state.json", 16 << 20);
    if (!text) {
        if (text.error().code() == ENOENT) return Error::from_string("container `" + id + "` does not exist", ENOENT);
        return text.release_error().with_context("read the state of `" + id + "`");
    }
    try {
        Json j = Json::parse(text.value());
        ContainerState s;
        s.id = j.at("id");
        s.bundle = j.at("bundle");
        s.rootfs = j.value("rootfs", "");
        s.created = j.value("created", "");
        s.annotations = j.value("annotations", std::map<std::string, std::string>{});
        s.oci_version = j.value("ociVersion", "");
        s.pid = j.value("pid", 0);
        s.pid_start = j.value("pid_start", 0ULL);
        s.dir = dir;
        s.api_socket = j.value("api_socket", "");
        s.vsock_socket = j.value("vsock_socket", "");
        s.image = j.value("image", "");
        s.cgroup = j.value("cgroup", "");
        s.status = j.value("status", "created");
        s.exec_pids = j.value("exec_pids", std::vector<pid_t>{});
        s.network_pending = j.value("network_pending", false);
        return s;
    } catch (const Json::exception& e) {
        return Error::from_string("the state of `" + id + "` is corrupt: " + e.what());
    }
}

Result<void> save_state(const ContainerState& s) {
    Json j = s.oci_json(s.status);
    j["pid"] = s.pid;
    j["pid_start"] = s.pid_start;
    j["api_socket"] = s.api_socket;
    j["vsock_socket"] = s.vsock_socket;
    j["image"] = s.image;
    j["cgroup"] = s.cgroup;
    j["exec_pids"] = s.exec_pids;
    j["network_pending"] = s.network_pending;
    // Write then rename: a reader never sees half a file.
    std::string tmp = s.dir + "/state.json.tmp";
    {
        auto fd = TRY(sys::open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        TRY(sys::write_all(fd.get(), json_text(j)));
    }
    if (::rename(tmp.c_str(), (s.dir + "/state.json").c_str()) < 0) return Error::from_errno(errno, "save the state");
    return {};
}

std::vector<std::string> list_ids(const std::string& root) {
    std::vector<std::string> ids;
    DIR* d = ::opendir(root.c_str());
    if (!d) return ids;
    while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        if (::access((root + "/" + name + "/state.json").c_str(), F_OK) == 0) ids.push_back(name);
    }
    ::closedir(d);
    std::sort(ids.begin(), ids.end());
    return ids;
}

namespace {
struct ProcStat {
    char state = 0;
    unsigned long long start_time = 0;  // field 22
};
// One read of /proc/PID/stat. The command name may hold spaces and
// parentheses: the fields start after the last ')'.
ProcStat proc_stat(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    ProcStat st;
    auto close = text.rfind(')');
    if (close == std::string::npos || close + 2 >= text.size()) return st;
    std::istringstream rest(text.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 22 && rest >> field; ++i) {
        if (i == 3) st.state = field[0];
        if (i == 22) st.start_time = std::stoull(field);
    }
    return st;
}
}  // namespace

unsigned long long process_start_time(pid_t pid) {
    return proc_stat(pid).start_time;
}

bool vmm_alive(const ContainerState& s) {
    if (s.pid <= 0) return false;
    if (::kill(s.pid, 0) < 0 && errno == ESRCH) return false;
    ProcStat st = proc_stat(s.pid);
    // A zombie still has its stat; it is stopped for us.
    if (st.start_time == 0 || st.state == 'Z') return false;
    return s.pid_start == 0 || st.start_time == s.pid_start;
}

std::string live_status(const ContainerState& s) {
    if (!vmm_alive(s)) return "stopped";
    auto reply = api_call(s.api_socket, {{"cmd", "state"}}, 3000);
    if (!reply) return s.status;  // busy or mid-start: what we recorded
    std::string status = reply.value().value("status", s.status);
    if (status == "creating") return "creating";
    return status;
}

}  // namespace husk::runtime
