#include "runtime/rootfs_image.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "runtime/command.h"

namespace husk::runtime {

namespace fs = std::filesystem;

uint64_t tree_size(const std::string& tree) {
    uint64_t total = 0;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(tree, fs::directory_options::skip_permission_denied, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) break;
        total += 4096;
        if (it->is_regular_file(ec) && !it->is_symlink(ec)) total += it->file_size(ec);
    }
    return total;
}

Result<void> build_rootfs_image(const std::string& tree, const std::string& image,
                                const std::vector<ImageFile>& files) {
    struct stat st {};
    if (::stat(tree.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
        return Error::from_errno(errno ? errno : ENOTDIR, "the rootfs `" + tree + "`");
    // Room to write: the tree again plus 1 GiB, all sparse; mkfs initialises inode tables lazily.
    uint64_t size = (tree_size(tree) * 2 + (1ULL << 30) + (1 << 20) - 1) & ~uint64_t((1 << 20) - 1);
    {
        std::ofstream f(image, std::ios::binary | std::ios::trunc);
        if (!f) return Error::from_errno(errno, "create the rootfs image `" + image + "`");
    }
    if (::truncate(image.c_str(), off_t(size)) < 0) return Error::from_errno(errno, "size the rootfs image");
    auto mkfs = TRY(run_command({"mkfs.ext4", "-q", "-F", "-d", tree, image}));
    if (mkfs.status != 0)
        return Error::from_string("mkfs.ext4 -d `" + tree + "` failed: " + mkfs.err.substr(0, 400), EIO);
    if (files.empty()) return {};
    std::string script = "mkdir /.husk\nmkdir /.husk/binds\n";
    for (const auto& f : files) script += "write \"" + f.host_path + "\" \"" + f.image_path + "\"\n";
    std::string script_path = image + ".debugfs";
    std::ofstream(script_path) << script;
    auto debugfs = run_command({"debugfs", "-w", "-f", script_path, image});
    ::unlink(script_path.c_str());
    if (!debugfs || debugfs.value().status != 0)
        return Error::from_string("debugfs could not copy the bind-mounted files: " +
                                      (debugfs ? debugfs.value().err.substr(0, 400) : debugfs.error().message()),
                                  EIO);
    return {};
}

}  // namespace husk::runtime
