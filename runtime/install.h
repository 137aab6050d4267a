// husk install / uninstall: registering husk as the `husk` runtime with
// Docker, containerd and Podman. Pure text transforms: each takes a config
// file's current text and returns its new text, or an error and no text.
// runtime/cmd_install.cpp reads the files, writes them and says what it did.
//
// A transform that has nothing to do returns its input byte for byte, which is
// how the command knows a second `husk install` is "already registered".
#pragma once

#include <string>
#include <string_view>

#include "vmm/base/result.h"

namespace husk::runtime {

// The name the engines know husk by: `docker run --runtime husk`, a
// Kubernetes RuntimeClass with `handler: husk`, `podman --runtime husk`.
inline constexpr const char* kRuntimeName = "husk";

// containerd's config.toml: the lines around the block husk install owns.
inline constexpr const char* kBlockBegin = "# husk install: begin";
inline constexpr const char* kBlockEnd = "# husk install: end";

// Docker's daemon.json (empty text: no file yet) with "runtimes": {"husk":
// {"path": husk}}; every other key, and their order, kept. Errors on text that
// is not a JSON object, or whose "runtimes" or "runtimes.husk" is no object.
Result<std::string> docker_with_husk(std::string_view daemon_json, const std::string& husk);
// daemon.json without runtimes.husk, and without "runtimes" when that empties it.
// Refuses while "default-runtime" is husk: dockerd does not start with a
// default runtime it does not know.
Result<std::string> docker_without_husk(std::string_view daemon_json);

// containerd's config.toml (empty text: no file yet) with husk's block, which
// registers husk with the CRI plugin as a runc-v2-shim runtime whose
// BinaryName is `husk`. The block replaces an existing one in place, else is
// appended; a missing file becomes `version = 2` plus the block. The table's
// name follows the file's config version: 1 (no `version`) `plugins.cri`,
// 2 `plugins."io.containerd.grpc.v1.cri"` (containerd 1.x), 3
// `plugins."io.containerd.cri.v1.runtime"` (containerd 2.x's default).
// Errors on invalid TOML, and when the file defines husk's runtime outside
// the block (writing it again would be a duplicate table).
Result<std::string> containerd_with_husk(std::string_view config_toml, const std::string& husk);
// config.toml without husk's block (and the blank line install put before it).
// Refuses while the CRI plugin's default_runtime_name is husk.
Result<std::string> containerd_without_husk(std::string_view config_toml);

// Podman's drop-in, /etc/containers/containers.conf.d/husk.conf (Podman 4
// reads containers.conf.d/*.conf over containers.conf).
std::string podman_dropin(const std::string& husk);

}  // namespace husk::runtime
