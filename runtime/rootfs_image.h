// The container's rootfs as an ext4 image for virtio-blk: built from the
// bundle's root.path with mkfs.ext4 -d (no copy of the tree), plus the host
// files Docker bind-mounts (/etc/hosts, /etc/resolv.conf, /etc/hostname)
// written into it under /.husk/binds/ with debugfs.
#pragma once

#include <string>
#include <vector>

#include "vmm/base/result.h"

namespace husk::runtime {

struct ImageFile {
    std::string host_path;   // a regular file on the host
    std::string image_path;  // where it goes in the image ("/.husk/binds/0")
};

// Sparse, sized for the tree plus room to write; the files are added after.
Result<void> build_rootfs_image(const std::string& tree, const std::string& image, const std::vector<ImageFile>& files);

// Bytes the tree holds (file sizes plus a block per inode).
uint64_t tree_size(const std::string& tree);

}  // namespace husk::runtime
