// virtio-balloon from a hostile driver: inflate and deflate PFN arrays,
// statistics and free page reports, all taken from the fuzzer.
#include "tests/fuzz/virtio_harness.h"
#include "vmm/devices/virtio/balloon/balloon.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace husk;
    if (size < 1) return 0;
    virtio::BalloonOptions options{uint32_t(data[0]) * 4, (data[0] & 1) != 0, (data[0] & 2) != 0};
    fuzz::VirtioHarness::get().run(std::make_unique<virtio::Balloon>(options), data + 1, size - 1);
    return 0;
}
