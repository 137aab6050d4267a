// A snapshot's vmstate as restore reads it, then the device state inside it
// as the serial port and the virtio transports load it.
//   u8 mode: 0 the bytes are a whole vmstate file (header checks included);
//   otherwise the bytes are its body, and the header (length, checksum) is
//   made for them so the fuzzer gets past the checksum.
#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <string_view>

#include "tests/fuzz/virtio_harness.h"
#include "vmm/base/wire.h"
#include "vmm/devices/legacy/serial.h"
#include "vmm/devices/virtio/balloon/balloon.h"
#include "vmm/devices/virtio/rng/rng.h"
#include "vmm/snapshot/snapshot.h"

namespace {

void put_le(std::string& out, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(char(v >> (8 * i)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace husk;
    if (size < 1) return 0;
    std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
    std::string file;
    if (data[0] == 0) {
        file = input;
    } else {
        file = "HUSKSNAP";
        put_le(file, snapshot::kFormatVersion, 4);
        put_le(file, 0, 4);
        put_le(file, input.size(), 8);
        put_le(file, wire::fnv1a64(input), 8);
        file += input;
    }
    auto snap = snapshot::decode(file, "vmstate");
    if (!snap) return 0;
    static int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    Serial serial(null_fd, [] {});
    (void)serial.load_state(snap.value().serial);
    auto& harness = fuzz::VirtioHarness::get();
    for (size_t i = 0; i < snap.value().devices.size() && i < 8; ++i) {
        std::unique_ptr<virtio::VirtioDevice> device;
        if (i % 2)
            device = std::make_unique<virtio::Balloon>(virtio::BalloonOptions{});
        else
            device = std::make_unique<virtio::Rng>();
        harness.load_state(std::move(device), snap.value().devices[i].state);
    }
    return 0;
}
