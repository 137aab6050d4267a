// virtio-vsock packets from a hostile driver: headers, operations, lengths
// and credit taken from the fuzzer. Guest-initiated connections go to
// "<socket>_<port>" paths nobody listens on. One device serves every input
// (as one VM's device sees many driver resets); each input gets a fresh
// transport and ends with a device reset.
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "tests/fuzz/virtio_harness.h"
#include "vmm/devices/virtio/vsock/vsock.h"

namespace {

using husk::Result;
using husk::virtio::DeviceContext;
using husk::virtio::Queue;
using husk::virtio::VirtioDevice;

// The transport owns its device; this one lends it the long-lived vsock.
class Lent final : public VirtioDevice {
public:
    explicit Lent(VirtioDevice& device) : m_device(device) {}
    uint32_t device_type() const override { return m_device.device_type(); }
    uint64_t device_features() const override { return m_device.device_features(); }
    std::vector<uint16_t> queue_max_sizes() const override { return m_device.queue_max_sizes(); }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override { m_device.read_config(offset, data); }
    void write_config(uint64_t offset, std::span<const uint8_t> data) override { m_device.write_config(offset, data); }
    Result<void> activate(uint64_t features, std::span<Queue> queues, DeviceContext ctx) override {
        return m_device.activate(features, queues, std::move(ctx));
    }
    void queue_notify(size_t index) override { m_device.queue_notify(index); }
    void reset() override { m_device.reset(); }
    bool has_pending_output() const override { return m_device.has_pending_output(); }
    bool busy() const override { return m_device.busy(); }

private:
    VirtioDevice& m_device;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace husk;
    static std::string path = "/tmp/husk-vsock-fuzz-" + std::to_string(::getpid()) + ".sock";
    static virtio::Vsock* vsock = [] {
        auto v = virtio::Vsock::create({3, path});
        if (!v) std::abort();
        // libFuzzer ends with exit(): the socket file goes with the process.
        std::atexit([] { ::unlink(path.c_str()); });
        return v.release_value().release();
    }();
    fuzz::VirtioHarness::get().run(std::make_unique<Lent>(*vsock), data, size);
    return 0;
}
