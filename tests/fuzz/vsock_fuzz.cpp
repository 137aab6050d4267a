// virtio-vsock packets from a hostile driver: headers, operations, lengths
// and credit taken from the fuzzer. Guest-initiated connections go to
// "<socket>_<port>" paths nobody listens on.
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "tests/fuzz/virtio_harness.h"
#include "vmm/devices/virtio/vsock/vsock.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace husk;
    static const std::string socket_path = "/tmp/husk-vsock-fuzz-" + std::to_string(::getpid()) + ".sock";
    auto vsock = virtio::Vsock::create({3, socket_path});
    if (!vsock) std::abort();
    fuzz::VirtioHarness::get().run(vsock.release_value(), data, size);
    ::unlink(socket_path.c_str());
    return 0;
}
