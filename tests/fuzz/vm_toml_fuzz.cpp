// vm.toml as husk-vmm reads it: any bytes, a value or a clear error.
#include <string_view>

#include "vmm/config/vm_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto config = husk::parse_vm_toml(text, "vm.toml");
    if (config) (void)husk::validate(config.value());
    return 0;
}
