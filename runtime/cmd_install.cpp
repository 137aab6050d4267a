// husk install [--docker] [--containerd] [--podman] [--dry-run] [--path HUSK]:
// registers husk as the `husk` runtime with each container engine on this host
// (or those named). husk uninstall [engines] [--dry-run] removes what install
// added. The edits are runtime/install.h's; this file reads, writes and reports.
//
// Every engine's new file is worked out before any is written: an error in one
// (a malformed daemon.json) leaves all of them as they were.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "runtime/args.h"
#include "runtime/command.h"
#include "runtime/install.h"
#include "runtime/runtime.h"
#include "vmm/base/system.h"
#include "vmm/base/unique_fd.h"

namespace husk::runtime {
namespace {

namespace fs = std::filesystem;

enum class Engine { Docker, Containerd, Podman };
enum class Action { Install, Uninstall };

struct EngineInfo {
    Engine engine;
    const char* name;     // and its flag, --docker
    const char* program;  // in PATH: the engine is on this host
    const char* etc_dir;  // or this exists
    const char* file;     // what install edits
    const char* restart;  // how the engine rereads it (Podman reads its config on every command)
    const char* use;      // how to run a container with husk then
};

constexpr EngineInfo kEngines[] = {
    {Engine::Docker, "docker", "dockerd", "/etc/docker", "/etc/docker/daemon.json", "systemctl restart docker",
     "docker run --runtime husk IMAGE"},
    {Engine::Containerd, "containerd", "containerd", "/etc/containerd", "/etc/containerd/config.toml",
     "systemctl restart containerd", "a Kubernetes RuntimeClass with `handler: husk`"},
    {Engine::Podman, "podman", "podman", "/etc/containers", "/etc/containers/containers.conf.d/husk.conf", "",
     "podman --runtime husk run IMAGE"},
};

// Test hook: HUSK_INSTALL_ROOT (default empty) prefixes every /etc path husk
// install probes, reads or writes, so tests run it on a temporary directory
// rather than the host's /etc. Not for users: the engines read the real /etc.
std::string install_root() {
    const char* root = std::getenv("HUSK_INSTALL_ROOT");  // NOLINT(concurrency-mt-unsafe): one thread
    return root ? root : "";
}

// One engine's file as it is and as the command leaves it (nullopt: no file).
struct FilePlan {
    const EngineInfo* engine;
    bool on_host;  // found by its program or /etc directory
    std::string path;
    std::optional<std::string> before, after;
};

Result<std::optional<std::string>> read_if_exists(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) < 0) {
        if (errno == ENOENT) return std::nullopt;
        return Error::from_errno(errno, "stat " + path);
    }
    return TRY(sys::read_file(path, 1 << 20).context("read " + path));
}

Result<std::optional<std::string>> new_text(const EngineInfo& e, Action action, const std::optional<std::string>& now,
                                            const std::string& husk) {
    bool install = action == Action::Install;
    if (!install && !now) return std::nullopt;  // nothing to remove
    std::string text = now.value_or("");
    switch (e.engine) {
        case Engine::Docker:
            return TRY(install ? docker_with_husk(text, husk) : docker_without_husk(text));
        case Engine::Containerd:
            return TRY(install ? containerd_with_husk(text, husk) : containerd_without_husk(text));
        case Engine::Podman:
            if (!install) return std::nullopt;
            return podman_dropin(husk);
    }
    return Error::from_string("unknown engine");
}

// Replaces `path` through a temporary file in its directory and a rename, so
// the engine never reads half a file; the file keeps its mode and owner. A
// symlinked config has its target replaced and the link kept.
Result<void> write_atomically(const std::string& path, std::string_view text) {
    std::error_code ec;
    fs::path target = path;
    if (auto real = fs::canonical(target, ec); !ec) target = real;
    struct stat old {};
    bool existed = ::stat(target.c_str(), &old) == 0;
    if (!existed) {
        fs::create_directories(target.parent_path(), ec);
        if (ec) return Error::from_errno(ec.value(), "create " + target.parent_path().string());
    }
    std::string tmp = (target.parent_path() / ("." + target.filename().string() + ".husk-XXXXXX")).string();
    UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
    if (!fd) return Error::from_errno(errno, "create a temporary file beside " + target.string());
    auto written = [&]() -> Result<void> {
        if (::fchmod(fd.get(), existed ? old.st_mode & 07777 : 0644) < 0)
            return Error::from_errno(errno, "chmod " + tmp);
        struct stat now {};
        if (existed && ::fstat(fd.get(), &now) == 0 && (now.st_uid != old.st_uid || now.st_gid != old.st_gid) &&
            ::fchown(fd.get(), old.st_uid, old.st_gid) < 0)
            return Error::from_errno(errno, "give " + tmp + " the owner of " + target.string());
        TRY(sys::write_all(fd.get(), text).context("write " + tmp));
        if (::fsync(fd.get()) < 0) return Error::from_errno(errno, "fsync " + tmp);
        if (::rename(tmp.c_str(), target.c_str()) < 0)
            return Error::from_errno(errno, "rename " + tmp + " to " + target.string());
        return {};
    }();
    if (!written) ::unlink(tmp.c_str());
    return written;
}

Result<void> remove_file(const std::string& path) {
    if (::unlink(path.c_str()) < 0 && errno != ENOENT) return Error::from_errno(errno, "remove " + path);
    return {};
}

// The husk binary engines are to run: --path, else this one.
Result<std::string> husk_binary(const ArgParser& p) {
    if (!p.has("path")) {
        std::error_code ec;
        fs::path self = fs::read_symlink("/proc/self/exe", ec);
        if (ec) return Error::from_errno(ec.value(), "find husk's own path in /proc/self/exe (name it with --path)");
        return self.string();
    }
    std::string path = p.get("path");
    if (path.empty() || path[0] != '/')
        return Error::from_string("install: --path must be an absolute path, not `" + path + "`");
    struct stat st {};
    if (::stat(path.c_str(), &st) < 0) return Error::from_errno(errno, "install: --path `" + path + "`");
    if (!S_ISREG(st.st_mode) || ::access(path.c_str(), X_OK) < 0)
        return Error::from_string("install: --path `" + path + "` is not an executable file");
    return fs::path(path).lexically_normal().string();
}

void print_plan(const FilePlan& plan, Action action, const std::string& husk, bool dry_run) {
    const char* name = plan.engine->name;
    bool install = action == Action::Install;
    if (plan.before == plan.after) {
        std::printf("%s: husk %s %s\n", name, install ? "already registered in" : "not registered in",
                    plan.path.c_str());
    } else if (dry_run && plan.after) {
        std::printf("%s: would write %s:\n%s", name, plan.path.c_str(), plan.after->c_str());
        if (!plan.after->ends_with("\n")) std::printf("\n");
    } else if (dry_run) {
        std::printf("%s: would remove %s\n", name, plan.path.c_str());
    } else if (install) {
        std::printf("%s: registered husk (%s) in %s\n", name, husk.c_str(), plan.path.c_str());
        if (*plan.engine->restart)
            std::printf("  to use it: %s, then %s\n", plan.engine->restart, plan.engine->use);
        else
            std::printf("  to use it: %s\n", plan.engine->use);
    } else {
        std::printf("%s: removed %s%s\n", name, plan.after ? "husk from " : "", plan.path.c_str());
        if (*plan.engine->restart) std::printf("  for %s to drop it: %s\n", name, plan.engine->restart);
    }
}

Result<int> install_or_uninstall(Action action, const Args& args) {
    bool install = action == Action::Install;
    const char* command = install ? "install" : "uninstall";
    ArgParser p(command);
    p.flag("docker").flag("containerd").flag("podman").flag("dry-run");
    if (install) p.value("path");
    TRY(p.parse(args));
    if (!p.positionals().empty())
        return Error::from_string(std::string(command) + ": unexpected argument `" + p.positionals()[0] + "`");
    auto on = [&](const std::string& flag) { return p.get(flag) == "true"; };
    bool dry_run = on("dry-run");
    std::string husk = install ? TRY(husk_binary(p)) : "";
    std::string root = install_root();

    bool named = on("docker") || on("containerd") || on("podman");
    std::vector<FilePlan> plans;
    std::string errors;
    for (const EngineInfo& e : kEngines) {
        std::error_code ec;
        bool on_host = !find_program(e.program).empty() || fs::exists(root + e.etc_dir, ec);
        if (named ? !on(e.name) : !on_host) continue;
        FilePlan plan{&e, on_host, root + e.file, {}, {}};
        auto worked_out = [&]() -> Result<void> {
            plan.before = TRY(read_if_exists(plan.path));
            plan.after = TRY(new_text(e, action, plan.before, husk).context(plan.path));
            return {};
        }();
        if (!worked_out)
            errors += (errors.empty() ? "" : "; ") + std::string(e.name) + ": " + worked_out.error().message();
        plans.push_back(std::move(plan));
    }
    if (!errors.empty()) return Error::from_string(errors + " (nothing was changed)");
    if (plans.empty()) {
        if (install)
            return Error::from_string(
                "install: no container engine found (no dockerd, containerd or podman in PATH, no /etc/docker, "
                "/etc/containerd or /etc/containers): name one with --docker, --containerd or --podman");
        std::printf("no container engine found: nothing to remove\n");
        return 0;
    }

    for (const FilePlan& plan : plans) {
        if (!plan.on_host)
            std::printf("%s: not found on this host (no %s in PATH, no %s); %s anyway\n", plan.engine->name,
                        plan.engine->program, (root + plan.engine->etc_dir).c_str(),
                        install ? "registering husk" : "removing husk");
        if (!dry_run && plan.before != plan.after) {
            if (plan.after)
                TRY(write_atomically(plan.path, *plan.after).context(plan.engine->name));
            else
                TRY(remove_file(plan.path).context(plan.engine->name));
        }
        print_plan(plan, action, husk, dry_run);
    }
    if (dry_run) std::printf("(--dry-run: nothing was changed)\n");
    return 0;
}

}  // namespace

Result<int> cmd_install(const GlobalOptions&, const Args& args) {
    return install_or_uninstall(Action::Install, args);
}

Result<int> cmd_uninstall(const GlobalOptions&, const Args& args) {
    return install_or_uninstall(Action::Uninstall, args);
}

}  // namespace husk::runtime
