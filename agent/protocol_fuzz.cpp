// Fuzz target for the agent protocol decoders (both ends parse these bytes).
// libFuzzer with clang: meson setup build-fuzz -Dfuzz=enabled (see README.md);
// the unit tests also run it over deterministic mutations.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agent/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace husk::agent;
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    (void)decode_process_spec(bytes);
    (void)decode_container_spec(bytes);
    (void)decode_network_spec(bytes);
    (void)decode_specs_file(bytes);
    FrameBuffer frames;
    frames.append(std::span(data, size));
    for (int i = 0; i < 64; ++i) {
        auto next = frames.next();
        if (!next || !next.value()) break;
        Reader r(next.value()->payload);
        (void)r.str();
        (void)r.u32();
        (void)r.finish("fuzz");
    }
    return 0;
}
