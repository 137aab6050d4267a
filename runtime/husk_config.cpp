#include "runtime/husk_config.h"

#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "vmm/base/system.h"
#include "vmm/base/toml.h"

namespace husk::runtime {

namespace {

std::string newest_cached_kernel() {
    const char* home = std::getenv("HOME");
    std::string pattern = std::string(home && *home ? home : "/root") + "/.cache/husk/kernel/*/vmlinux";
    glob_t g{};
    std::string best;
    time_t best_time = 0;
    if (::glob(pattern.c_str(), 0, nullptr, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; ++i) {
            struct stat st {};
            if (::stat(g.gl_pathv[i], &st) == 0 && st.st_mtime >= best_time) {
                best_time = st.st_mtime;
                best = g.gl_pathv[i];
            }
        }
    }
    ::globfree(&g);
    return best;
}

Result<uint32_t> parse_count(const std::string& key, const std::string& value, uint32_t min, uint32_t max) {
    char* end = nullptr;
    errno = 0;
    unsigned long v = std::strtoul(value.c_str(), &end, 10);
    if (value.empty() || *end || errno || v < min || v > max)
        return Error::from_string(key + ": `" + value + "` must be a number from " + std::to_string(min) + " to " +
                                  std::to_string(max));
    return uint32_t(v);
}

Result<RootfsMode> parse_rootfs_mode(const std::string& key, const std::string& value) {
    if (value == "share") return RootfsMode::Share;
    if (value == "image") return RootfsMode::Image;
    return Error::from_string(key + ": `" + value + "` must be share (virtio-fs) or image (an ext4 copy)");
}

}  // namespace

Result<RuntimeConfig> load_runtime_config(const std::string& path) {
    RuntimeConfig c;
    if (::access(path.c_str(), F_OK) == 0) {
        std::string text = TRY(sys::read_file(path, 1 << 20));
        if (auto bad = check_ascii(text)) return Error::from_string(path + ":" + *bad);
        try {
            auto doc = toml::parse(text, path);
            for (auto&& [key, value] : doc) {
                if (key.str() != "vm" || !value.is_table())
                    return Error::from_string(path + ": unknown key `" + std::string(key.str()) + "`");
                for (auto&& [k, v] : *value.as_table()) {
                    std::string name(k.str());
                    if (name == "kernel" || name == "vmm" || name == "initramfs") {
                        auto s = v.value<std::string>();
                        if (!s) return Error::from_string(path + ": vm." + name + " must be a string");
                        (name == "kernel" ? c.kernel : name == "vmm" ? c.vmm : c.initramfs) = *s;
                    } else if (name == "rootfs") {
                        auto s = v.value<std::string>();
                        if (!s) return Error::from_string(path + ": vm.rootfs must be a string (share or image)");
                        c.rootfs = TRY(parse_rootfs_mode(path + ": vm.rootfs", *s));
                    } else if (name == "template") {
                        if (!v.is_boolean()) return Error::from_string(path + ": vm.template must be true or false");
                        c.use_template = *v.value<bool>();
                    } else if (name == "memory_mib" || name == "vcpus") {
                        // value_exact: a float (2e60) is no integer, and converting one is undefined.
                        auto n = v.value_exact<int64_t>();
                        if (!n) return Error::from_string(path + ": vm." + name + " must be an integer");
                        if (*n < 1 || *n > (name == "vcpus" ? 64 : 1 << 20))
                            return Error::from_string(path + ": vm." + name + " out of range");
                        (name == "vcpus" ? c.vcpus : c.memory_mib) = uint32_t(*n);
                    } else {
                        return Error::from_string(path + ": unknown key `vm." + name + "`");
                    }
                }
            }
        } catch (const toml::parse_error& e) {
            return Error::from_string(path + ": " + std::string(e.description()));
        }
    }
    if (c.kernel.empty()) {
        const char* k = std::getenv("HUSK_KERNEL");
        c.kernel = k && *k ? k : newest_cached_kernel();
    }
    if (c.vmm.empty()) {
        for (const std::string& candidate :
             {sys::executable_dir() + "/../vmm/husk-vmm", sys::executable_dir() + "/husk-vmm"})
            if (::access(candidate.c_str(), X_OK) == 0) {
                c.vmm = candidate;
                break;
            }
        if (c.vmm.empty()) c.vmm = "husk-vmm";
    }
    return c;
}

Result<void> apply_annotations(RuntimeConfig& c, const std::map<std::string, std::string>& a) {
    if (auto it = a.find("io.husk.kernel"); it != a.end()) c.kernel = it->second;
    if (auto it = a.find("io.husk.memory_mib"); it != a.end())
        c.memory_mib = TRY(parse_count(it->first, it->second, 64, 1 << 20));
    if (auto it = a.find("io.husk.vcpus"); it != a.end()) c.vcpus = TRY(parse_count(it->first, it->second, 1, 64));
    if (auto it = a.find("io.husk.template"); it != a.end()) {
        if (it->second != "true" && it->second != "false")
            return Error::from_string("io.husk.template: `" + it->second + "` must be true or false");
        c.use_template = it->second == "true";
    }
    if (auto it = a.find("io.husk.rootfs"); it != a.end()) c.rootfs = TRY(parse_rootfs_mode(it->first, it->second));
    return {};
}

}  // namespace husk::runtime
