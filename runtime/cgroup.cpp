#include "runtime/cgroup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "vmm/base/system.h"

namespace husk::runtime {

namespace {

namespace fs = std::filesystem;

// v1's hierarchies husk-vmm joins: what the engines read for stats and limits.
constexpr const char* kV1Controllers[] = {"cpu", "cpuacct", "memory", "pids"};

bool unified(const std::string& root) {
    return fs::exists(root + "/cgroup.controllers");
}

// husk's own cgroup on the unified hierarchy ("0::/PATH" in /proc/self/cgroup).
std::string own_cgroup() {
    auto text = sys::read_file("/proc/self/cgroup", 64 << 10);
    if (!text) return "/";
    std::string_view rest = text.value();
    while (!rest.empty()) {
        std::string_view line = rest.substr(0, rest.find('\n'));
        rest.remove_prefix(std::min(rest.size(), line.size() + 1));
        if (line.starts_with("0::")) return std::string(line.substr(3));
    }
    return "/";
}

// mkdir -p below `base`; on v2, each level's parent delegates `controllers` first.
Result<std::vector<std::string>> make_dirs(const std::string& base, const std::string& cgroup,
                                           const std::vector<const char*>& controllers) {
    std::vector<std::string> made;
    std::string at = base;
    for (const auto& part : fs::path(cgroup).relative_path()) {
        if (part == "." || part == "..")
            return Error::from_string("cgroup `" + cgroup + "` leaves the hierarchy", EINVAL);
        // Best effort: a controller the parent lacks is simply not there.
        for (const char* c : controllers) (void)sys::write_text(at + "/cgroup.subtree_control", c);
        at += "/" + part.string();
        if (::mkdir(at.c_str(), 0755) == 0)
            made.push_back(at);
        else if (errno != EEXIST)
            return Error::from_errno(errno, "make the cgroup " + at);
    }
    return made;
}

}  // namespace

Result<std::string> cgroup_for(const std::string& cgroups_path, bool systemd) {
    if (cgroups_path.empty()) return std::string();
    if (systemd) {
        // SLICE:PREFIX:NAME; "a-b-c.slice" is nested as /a.slice/a-b.slice/a-b-c.slice.
        size_t first = cgroups_path.find(':'), second = cgroups_path.find(':', first + 1);
        if (first == std::string::npos || second == std::string::npos)
            return Error::from_string("cgroupsPath `" + cgroups_path + "` is not systemd's SLICE:PREFIX:NAME", EINVAL);
        std::string slice = cgroups_path.substr(0, first);
        std::string prefix = cgroups_path.substr(first + 1, second - first - 1);
        std::string name = cgroups_path.substr(second + 1);
        if (slice.empty()) slice = "system.slice";
        if (!slice.ends_with(".slice") || name.empty() || name.find('/') != std::string::npos ||
            prefix.find('/') != std::string::npos)
            return Error::from_string("cgroupsPath `" + cgroups_path + "` is not systemd's SLICE:PREFIX:NAME", EINVAL);
        std::string path;
        if (slice != "-.slice") {
            std::string stem = slice.substr(0, slice.size() - 6);
            for (size_t dash = stem.find('-'); dash != std::string::npos; dash = stem.find('-', dash + 1))
                path += "/" + stem.substr(0, dash) + ".slice";
            path += "/" + slice;
        }
        return path + "/" + (prefix.empty() ? name : prefix + "-" + name) + ".scope";
    }
    std::string path = cgroups_path[0] == '/' ? cgroups_path : own_cgroup() + "/" + cgroups_path;
    fs::path normal = fs::path(path).lexically_normal();
    if (normal.string().find("..") != std::string::npos)
        return Error::from_string("cgroupsPath `" + cgroups_path + "` leaves the hierarchy", EINVAL);
    return normal.string();
}

Result<CgroupPlacement> make_cgroup(const std::string& cgroup, bool cpu_limit, const std::string& root) {
    CgroupPlacement p;
    if (cgroup.empty() || cgroup == "/") return p;
    if (unified(root)) {
        std::vector<const char*> controllers = {"+memory", "+pids"};
        if (cpu_limit) controllers.push_back("+cpu");
        p.dirs = TRY(make_dirs(root, cgroup, controllers));
        p.procs.push_back(root + cgroup + "/cgroup.procs");
        return p;
    }
    for (const char* controller : kV1Controllers) {
        std::string base = root + "/" + controller;
        if (!fs::exists(base + "/cgroup.procs")) continue;  // not mounted here
        auto made = TRY(make_dirs(base, cgroup, {}));
        p.dirs.insert(p.dirs.end(), made.begin(), made.end());
        p.procs.push_back(base + cgroup + "/cgroup.procs");
    }
    return p;
}

Result<void> set_cpu_limit(const std::string& cgroup, std::optional<int64_t> quota, uint64_t period,
                           const std::string& root) {
    if (cgroup.empty()) return Error::from_string("the container has no cgroup", ENOENT);
    if (period == 0) period = 100000;
    bool limited = quota && *quota > 0;
    if (unified(root))
        return sys::write_text(root + cgroup + "/cpu.max",
                               (limited ? std::to_string(*quota) : std::string("max")) + " " + std::to_string(period));
    std::string dir = root + "/cpu" + cgroup;
    TRY(sys::write_text(dir + "/cpu.cfs_period_us", std::to_string(period)));
    return sys::write_text(dir + "/cpu.cfs_quota_us", limited ? std::to_string(*quota) : "-1");
}

void enable_cpu_controller(const std::string& cgroup, const std::string& root) {
    if (cgroup.empty() || !unified(root)) return;
    std::string at = root;
    for (const auto& part : fs::path(cgroup).relative_path()) {
        (void)sys::write_text(at + "/cgroup.subtree_control", "+cpu");
        at += "/" + part.string();
    }
}

void remove_cgroup(const std::string& cgroup, const std::string& root) {
    if (cgroup.empty() || cgroup == "/") return;
    if (unified(root)) {
        ::rmdir((root + cgroup).c_str());
        return;
    }
    for (const char* controller : kV1Controllers) ::rmdir((root + "/" + controller + cgroup).c_str());
}

bool cgroup_exists(const std::string& cgroup, const std::string& root) {
    if (cgroup.empty() || cgroup == "/") return false;
    if (unified(root)) return fs::exists(root + cgroup);
    for (const char* controller : kV1Controllers)
        if (fs::exists(root + "/" + controller + cgroup)) return true;
    return false;
}

}  // namespace husk::runtime
