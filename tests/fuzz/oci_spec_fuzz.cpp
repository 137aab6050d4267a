// An OCI bundle's config.json (and exec's process.json) as the runtime reads them.
#include <string_view>

#include "oci/spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    (void)husk::oci::parse_spec(text);
    (void)husk::oci::parse_process(text);
    return 0;
}
