// virtio-blk requests from a hostile driver: headers, sectors, lengths and
// chains taken from the fuzzer, against a real 64 KiB disk image.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "tests/fuzz/virtio_harness.h"
#include "vmm/devices/virtio/block/block.h"

namespace {

// A 64 KiB disk in a memfd, opened by path as a drive is.
std::string disk_path() {
    static std::string path = [] {
        int fd = ::memfd_create("husk-blk-fuzz", 0);
        if (fd < 0 || ::ftruncate(fd, 64 << 10) < 0) std::abort();
        return "/proc/self/fd/" + std::to_string(fd);
    }();
    return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace husk;
    if (size < 1) return 0;
    // The first byte picks the drive's options; the rest is the harness's input.
    virtio::BlockOptions options{disk_path(), (data[0] & 1) != 0, false, (data[0] & 2) ? "fuzz-disk" : ""};
    auto block = virtio::Block::open(options);
    if (!block) std::abort();
    fuzz::VirtioHarness::get().run(block.release_value(), data + 1, size - 1);
    return 0;
}
