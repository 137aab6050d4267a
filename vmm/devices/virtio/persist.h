// A device's persisted state (snapshots, vmm/snapshot/SNAPSHOTS.md): a struct
// of the device's own, beside the device, with a version, a name and its
// fields' codec:
//
//   struct BlockState {
//       static constexpr uint32_t kVersion = 1;
//       static constexpr const char* kName = "virtio-blk state";
//       uint64_t sectors = 0;
//       void encode(wire::Writer& w) const;
//       static BlockState decode(wire::Reader& r);
//   };
//
// persist() writes the version before the fields; read_persisted() refuses
// another version by name and checks every byte was read, so a state is
// never misread as a newer or older layout.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "vmm/base/result.h"
#include "vmm/base/wire.h"

namespace husk::virtio {

template <typename State>
std::string persist(const State& state) {
    wire::Writer w;
    w.u32(State::kVersion);
    state.encode(w);
    return w.take();
}

template <typename State>
Result<State> read_persisted(std::string_view bytes) {
    wire::Reader r(bytes, "snapshot");
    uint32_t version = r.u32();
    if (!r.failed() && version != State::kVersion)
        return Error::from_string(std::string("snapshot: ") + State::kName + " of version " + std::to_string(version) +
                                      "; this husk-vmm reads version " + std::to_string(State::kVersion),
                                  EINVAL);
    State state = State::decode(r);
    TRY(r.finish(State::kName));
    return state;
}

}  // namespace husk::virtio
