#include "oci/spec.h"

#include <cerrno>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "vmm/base/system.h"

namespace husk::oci {

namespace {

using Json = nlohmann::json;

// Walks the document keeping the JSON path for error messages. The first
// error wins; later reads return defaults and the caller checks error().
class Walker {
public:
    explicit Walker(std::string_view name) : m_name(name) {}

    bool failed() const { return m_error.has_value(); }
    Error error() const { return *m_error; }
    void fail(const std::string& path, const std::string& what) {
        if (!m_error) m_error = Error::from_string(m_name + ": " + path + ": " + what);
    }

    const Json* field(const Json& object, const std::string& path, const char* key, bool required = false) {
        auto it = object.find(key);
        if (it == object.end() || it->is_null()) {
            if (required) fail(join(path, key), "is required");
            return nullptr;
        }
        return &*it;
    }

    std::string string(const Json& object, const std::string& path, const char* key, bool required = false) {
        const Json* v = field(object, path, key, required);
        if (!v) return {};
        if (!v->is_string()) {
            fail(join(path, key), "expected a string");
            return {};
        }
        return v->get<std::string>();
    }

    bool boolean(const Json& object, const std::string& path, const char* key) {
        const Json* v = field(object, path, key);
        if (!v) return false;
        if (!v->is_boolean()) {
            fail(join(path, key), "expected true or false");
            return false;
        }
        return v->get<bool>();
    }

    template <typename T>
    std::optional<T> integer(const Json& object, const std::string& path, const char* key, bool required = false) {
        const Json* v = field(object, path, key, required);
        if (!v) return std::nullopt;
        if (!v->is_number_integer()) {
            fail(join(path, key), "expected an integer");
            return std::nullopt;
        }
        // Range-checked in the widest types: a uid of -1 or 2^40 is an error, not a wrap.
        if (v->is_number_unsigned()) {
            uint64_t u = v->get<uint64_t>();
            if (u > uint64_t(std::numeric_limits<T>::max())) {
                fail(join(path, key), "out of range");
                return std::nullopt;
            }
            return T(u);
        }
        int64_t s = v->get<int64_t>();
        if (s < int64_t(std::numeric_limits<T>::min()) ||
            (s > 0 && uint64_t(s) > uint64_t(std::numeric_limits<T>::max()))) {
            fail(join(path, key), "out of range");
            return std::nullopt;
        }
        return T(s);
    }

    std::vector<std::string> strings(const Json& object, const std::string& path, const char* key) {
        const Json* v = field(object, path, key);
        std::vector<std::string> out;
        if (!v) return out;
        if (!v->is_array()) {
            fail(join(path, key), "expected an array of strings");
            return out;
        }
        for (size_t i = 0; i < v->size(); ++i) {
            if (!(*v)[i].is_string()) {
                fail(join(path, key) + "[" + std::to_string(i) + "]", "expected a string");
                return {};
            }
            out.push_back((*v)[i].get<std::string>());
        }
        return out;
    }

    // An object whose values are all strings (annotations, linux.sysctl).
    std::map<std::string, std::string> string_map(const Json& parent, const std::string& path, const char* key) {
        std::map<std::string, std::string> out;
        const Json* v = object(parent, path, key);
        if (!v) return out;
        for (const auto& [name, value] : v->items()) {
            if (!value.is_string()) {
                fail(join(path, key) + "." + name, "expected a string");
                return {};
            }
            out[name] = value.get<std::string>();
        }
        return out;
    }

    const Json* object(const Json& parent, const std::string& path, const char* key, bool required = false) {
        const Json* v = field(parent, path, key, required);
        if (v && !v->is_object()) {
            fail(join(path, key), "expected an object");
            return nullptr;
        }
        return v;
    }

    const Json* array(const Json& parent, const std::string& path, const char* key) {
        const Json* v = field(parent, path, key);
        if (v && !v->is_array()) {
            fail(join(path, key), "expected an array");
            return nullptr;
        }
        return v;
    }

    static std::string join(const std::string& path, const char* key) { return path.empty() ? key : path + "." + key; }

private:
    std::string m_name;
    std::optional<Error> m_error;
};

Process read_process(Walker& w, const Json& p, const std::string& path) {
    Process out;
    out.terminal = w.boolean(p, path, "terminal");
    if (const Json* size = w.object(p, path, "consoleSize")) {
        std::string sp = Walker::join(path, "consoleSize");
        out.console_height = w.integer<uint16_t>(*size, sp, "height", true).value_or(0);
        out.console_width = w.integer<uint16_t>(*size, sp, "width", true).value_or(0);
    }
    if (const Json* user = w.object(p, path, "user", true)) {
        std::string up = Walker::join(path, "user");
        out.user.uid = w.integer<uint32_t>(*user, up, "uid", true).value_or(0);
        out.user.gid = w.integer<uint32_t>(*user, up, "gid", true).value_or(0);
        out.user.umask = w.integer<uint32_t>(*user, up, "umask");
        if (out.user.umask && *out.user.umask > 0777) w.fail(up + ".umask", "must be at most 0777");
        if (const Json* groups = w.array(*user, up, "additionalGids")) {
            for (size_t i = 0; i < groups->size(); ++i) {
                const Json& g = (*groups)[i];
                if (!g.is_number_unsigned() || g.get<uint64_t>() > 0xffffffffu) {
                    w.fail(up + ".additionalGids[" + std::to_string(i) + "]", "expected a gid");
                    break;
                }
                out.user.additional_gids.push_back(g.get<uint32_t>());
            }
        }
    }
    out.args = w.strings(p, path, "args");
    if (!w.failed() && out.args.empty()) w.fail(Walker::join(path, "args"), "must not be empty");
    out.env = w.strings(p, path, "env");
    out.cwd = w.string(p, path, "cwd", true);
    if (!w.failed() && (out.cwd.empty() || out.cwd[0] != '/'))
        w.fail(Walker::join(path, "cwd"), "must be an absolute path");
    if (const Json* limits = w.array(p, path, "rlimits")) {
        for (size_t i = 0; i < limits->size(); ++i) {
            std::string lp = Walker::join(path, "rlimits") + "[" + std::to_string(i) + "]";
            const Json& l = (*limits)[i];
            if (!l.is_object()) {
                w.fail(lp, "expected an object");
                break;
            }
            Rlimit r;
            r.type = w.string(l, lp, "type", true);
            r.hard = w.integer<uint64_t>(l, lp, "hard", true).value_or(0);
            r.soft = w.integer<uint64_t>(l, lp, "soft", true).value_or(0);
            if (!w.failed() && r.type.rfind("RLIMIT_", 0) != 0)
                w.fail(lp + ".type", "`" + r.type + "` is not an rlimit");
            out.rlimits.push_back(std::move(r));
        }
    }
    if (const Json* caps = w.object(p, path, "capabilities")) {
        std::string cp = Walker::join(path, "capabilities");
        Capabilities c;
        c.bounding = w.strings(*caps, cp, "bounding");
        c.effective = w.strings(*caps, cp, "effective");
        c.inheritable = w.strings(*caps, cp, "inheritable");
        c.permitted = w.strings(*caps, cp, "permitted");
        c.ambient = w.strings(*caps, cp, "ambient");
        out.capabilities = std::move(c);
    }
    out.apparmor_profile = w.string(p, path, "apparmorProfile");
    out.selinux_label = w.string(p, path, "selinuxLabel");
    out.no_new_privileges = w.boolean(p, path, "noNewPrivileges");
    out.oom_score_adj = w.integer<int32_t>(p, path, "oomScoreAdj");
    if (out.oom_score_adj && (*out.oom_score_adj < -1000 || *out.oom_score_adj > 1000))
        w.fail(Walker::join(path, "oomScoreAdj"), "must be between -1000 and 1000");
    return out;
}

std::vector<Hook> read_hooks(Walker& w, const Json& hooks, const char* key) {
    std::vector<Hook> out;
    const Json* list = w.array(hooks, "hooks", key);
    if (!list) return out;
    for (size_t i = 0; i < list->size(); ++i) {
        std::string hp = std::string("hooks.") + key + "[" + std::to_string(i) + "]";
        const Json& h = (*list)[i];
        if (!h.is_object()) {
            w.fail(hp, "expected an object");
            break;
        }
        Hook hook;
        hook.path = w.string(h, hp, "path", true);
        if (!w.failed() && (hook.path.empty() || hook.path[0] != '/')) w.fail(hp + ".path", "must be an absolute path");
        hook.args = w.strings(h, hp, "args");
        hook.env = w.strings(h, hp, "env");
        hook.timeout = w.integer<int>(h, hp, "timeout");
        if (hook.timeout && *hook.timeout <= 0) w.fail(hp + ".timeout", "must be positive");
        out.push_back(std::move(hook));
    }
    return out;
}

std::optional<Seccomp> read_seccomp(Walker& w, const Json& s) {
    static const std::set<std::string, std::less<>> kActions(std::begin(kSeccompActionNames),
                                                             std::end(kSeccompActionNames));
    static const std::set<std::string, std::less<>> kOps(std::begin(kSeccompOpNames), std::end(kSeccompOpNames));
    const std::string path = "linux.seccomp";
    Seccomp out;
    out.default_action = w.string(s, path, "defaultAction", true);
    if (!w.failed() && !kActions.count(out.default_action))
        w.fail(path + ".defaultAction", "`" + out.default_action + "` is not a seccomp action");
    out.default_errno_ret = w.integer<uint32_t>(s, path, "defaultErrnoRet");
    out.architectures = w.strings(s, path, "architectures");
    for (const auto& arch : out.architectures)
        if (!w.failed() && arch.rfind("SCMP_ARCH_", 0) != 0)
            w.fail(path + ".architectures", "`" + arch + "` is not a seccomp architecture");
    out.flags = w.strings(s, path, "flags");
    out.listener_path = w.string(s, path, "listenerPath");
    if (const Json* list = w.array(s, path, "syscalls")) {
        for (size_t i = 0; i < list->size() && !w.failed(); ++i) {
            std::string sp = path + ".syscalls[" + std::to_string(i) + "]";
            const Json& e = (*list)[i];
            if (!e.is_object()) {
                w.fail(sp, "expected an object");
                break;
            }
            SeccompSyscall call;
            call.names = w.strings(e, sp, "names");
            if (!w.failed() && call.names.empty()) w.fail(sp + ".names", "must not be empty");
            call.action = w.string(e, sp, "action", true);
            if (!w.failed() && !kActions.count(call.action))
                w.fail(sp + ".action", "`" + call.action + "` is not a seccomp action");
            call.errno_ret = w.integer<uint32_t>(e, sp, "errnoRet");
            if (const Json* args = w.array(e, sp, "args")) {
                for (size_t j = 0; j < args->size() && !w.failed(); ++j) {
                    std::string ap = sp + ".args[" + std::to_string(j) + "]";
                    const Json& a = (*args)[j];
                    if (!a.is_object()) {
                        w.fail(ap, "expected an object");
                        break;
                    }
                    SeccompArg arg;
                    arg.index = w.integer<uint32_t>(a, ap, "index", true).value_or(0);
                    arg.value = w.integer<uint64_t>(a, ap, "value", true).value_or(0);
                    arg.value_two = w.integer<uint64_t>(a, ap, "valueTwo").value_or(0);
                    arg.op = w.string(a, ap, "op", true);
                    if (!w.failed() && arg.index > 5) w.fail(ap + ".index", "must be between 0 and 5");
                    if (!w.failed() && !kOps.count(arg.op))
                        w.fail(ap + ".op", "`" + arg.op + "` is not a seccomp comparison");
                    call.args.push_back(std::move(arg));
                }
            }
            out.syscalls.push_back(std::move(call));
        }
    }
    return out;
}

Result<Json> parse_json(std::string_view text, std::string_view name) {
    try {
        return Json::parse(text);
    } catch (const Json::exception& e) {
        // Not only parse_error: a number too large for a double ("1e999")
        // throws out_of_range from the parser itself.
        // nlohmann's message names the byte offset; keep it, drop its "[json.exception...]" prefix.
        std::string what = e.what();
        if (auto at = what.find("] "); at != std::string::npos) what = what.substr(at + 2);
        return Error::from_string(std::string(name) + ": not valid JSON: " + what);
    }
}

}  // namespace

Result<Spec> parse_spec(std::string_view json, std::string_view name) {
    Json doc = TRY(parse_json(json, name));
    if (!doc.is_object()) return Error::from_string(std::string(name) + ": expected a JSON object");
    Walker w(name);
    Spec s;
    s.oci_version = w.string(doc, "", "ociVersion", true);
    if (!w.failed() && s.oci_version.rfind("1.", 0) != 0)
        w.fail("ociVersion", "`" + s.oci_version + "` is not supported (husk implements runtime-spec 1.x)");
    if (const Json* root = w.object(doc, "", "root", true)) {
        s.root.path = w.string(*root, "root", "path", true);
        s.root.readonly = w.boolean(*root, "root", "readonly");
    }
    if (const Json* process = w.object(doc, "", "process")) s.process = read_process(w, *process, "process");
    s.hostname = w.string(doc, "", "hostname");
    if (const Json* mounts = w.array(doc, "", "mounts")) {
        for (size_t i = 0; i < mounts->size(); ++i) {
            std::string mp = "mounts[" + std::to_string(i) + "]";
            const Json& m = (*mounts)[i];
            if (!m.is_object()) {
                w.fail(mp, "expected an object");
                break;
            }
            Mount mount;
            mount.destination = w.string(m, mp, "destination", true);
            if (!w.failed() && (mount.destination.empty() || mount.destination[0] != '/'))
                w.fail(mp + ".destination", "must be an absolute path");
            mount.type = w.string(m, mp, "type");
            mount.source = w.string(m, mp, "source");
            mount.options = w.strings(m, mp, "options");
            s.mounts.push_back(std::move(mount));
        }
    }
    if (const Json* hooks = w.object(doc, "", "hooks")) {
        s.hooks.prestart = read_hooks(w, *hooks, "prestart");
        s.hooks.create_runtime = read_hooks(w, *hooks, "createRuntime");
        s.hooks.create_container = read_hooks(w, *hooks, "createContainer");
        s.hooks.start_container = read_hooks(w, *hooks, "startContainer");
        s.hooks.poststart = read_hooks(w, *hooks, "poststart");
        s.hooks.poststop = read_hooks(w, *hooks, "poststop");
    }
    s.annotations = w.string_map(doc, "", "annotations");
    if (const Json* lx = w.object(doc, "", "linux")) {
        s.linux_.cgroups_path = w.string(*lx, "linux", "cgroupsPath");
        s.linux_.masked_paths = w.strings(*lx, "linux", "maskedPaths");
        s.linux_.readonly_paths = w.strings(*lx, "linux", "readonlyPaths");
        s.linux_.sysctl = w.string_map(*lx, "linux", "sysctl");
        if (const Json* seccomp = w.object(*lx, "linux", "seccomp")) s.linux_.seccomp = read_seccomp(w, *seccomp);
        if (const Json* ns = w.array(*lx, "linux", "namespaces")) {
            for (size_t i = 0; i < ns->size(); ++i) {
                std::string np = "linux.namespaces[" + std::to_string(i) + "]";
                const Json& n = (*ns)[i];
                if (!n.is_object()) {
                    w.fail(np, "expected an object");
                    break;
                }
                Namespace entry{w.string(n, np, "type", true), w.string(n, np, "path")};
                static const std::set<std::string> kTypes = {"pid", "network", "mount",  "ipc",
                                                             "uts", "user",    "cgroup", "time"};
                if (!w.failed() && !kTypes.count(entry.type))
                    w.fail(np + ".type", "`" + entry.type + "` is not a namespace type");
                s.linux_.namespaces.push_back(std::move(entry));
            }
        }
        if (const Json* res = w.object(*lx, "linux", "resources")) {
            if (const Json* mem = w.object(*res, "linux.resources", "memory"))
                s.linux_.resources.memory_limit = w.integer<int64_t>(*mem, "linux.resources.memory", "limit");
            if (const Json* cpu = w.object(*res, "linux.resources", "cpu")) {
                s.linux_.resources.cpu_quota = w.integer<int64_t>(*cpu, "linux.resources.cpu", "quota");
                s.linux_.resources.cpu_period = w.integer<uint64_t>(*cpu, "linux.resources.cpu", "period");
                s.linux_.resources.cpuset_cpus = w.string(*cpu, "linux.resources.cpu", "cpus");
                if (!w.failed() && !s.linux_.resources.cpuset_cpus.empty()) {
                    if (auto n = cpuset_size(s.linux_.resources.cpuset_cpus); !n)
                        w.fail("linux.resources.cpu.cpus", n.error().message());
                }
            }
            if (const Json* pids = w.object(*res, "linux.resources", "pids"))
                s.linux_.resources.pids_limit = w.integer<int64_t>(*pids, "linux.resources.pids", "limit");
        }
    }
    if (w.failed()) return w.error();
    return s;
}

Result<Process> parse_process(std::string_view json, std::string_view name) {
    Json doc = TRY(parse_json(json, name));
    if (!doc.is_object()) return Error::from_string(std::string(name) + ": expected a JSON object");
    Walker w(name);
    Process p = read_process(w, doc, "");
    if (w.failed()) return w.error();
    return p;
}

bool is_bind(const Mount& m) {
    if (m.type == "bind") return true;
    for (const auto& o : m.options)
        if (o == "bind" || o == "rbind") return true;
    return false;
}

Result<Spec> load_spec(const std::string& bundle) {
    std::string path = bundle + "/config.json";
    std::string text = TRY(sys::read_file(path, 16 << 20));
    return parse_spec(text, path);
}

Result<uint32_t> cpuset_size(std::string_view cpus) {
    uint32_t count = 0;
    size_t pos = 0;
    auto number = [&](uint32_t& out) {
        size_t start = pos;
        uint64_t v = 0;
        while (pos < cpus.size() && cpus[pos] >= '0' && cpus[pos] <= '9' && v < 100000)
            v = v * 10 + uint64_t(cpus[pos++] - '0');
        out = uint32_t(v);
        return pos > start && v < 100000;
    };
    while (pos < cpus.size()) {
        uint32_t lo = 0, hi = 0;
        if (!number(lo)) return Error::from_string("malformed cpuset `" + std::string(cpus) + "`");
        hi = lo;
        if (pos < cpus.size() && cpus[pos] == '-') {
            ++pos;
            if (!number(hi) || hi < lo) return Error::from_string("malformed cpuset `" + std::string(cpus) + "`");
        }
        count += hi - lo + 1;
        if (pos < cpus.size()) {
            if (cpus[pos] != ',' || pos + 1 == cpus.size())
                return Error::from_string("malformed cpuset `" + std::string(cpus) + "`");
            ++pos;
        }
    }
    if (count == 0) return Error::from_string("empty cpuset");
    return count;
}

std::optional<uint32_t> vcpus_for(const Resources& r) {
    if (r.cpu_quota && *r.cpu_quota > 0) {
        uint64_t period = r.cpu_period.value_or(100000);
        if (period == 0) period = 100000;
        return uint32_t(std::max<uint64_t>(1, (uint64_t(*r.cpu_quota) + period - 1) / period));
    }
    if (!r.cpuset_cpus.empty())
        if (auto n = cpuset_size(r.cpuset_cpus)) return n.value();
    return std::nullopt;
}

}  // namespace husk::oci
