// Intel MultiProcessor Specification 1.4 tables: how the guest finds its
// vCPUs and IOAPIC without ACPI.
#pragma once

#include <cstdint>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/memory/guest_memory.h"

namespace husk::x86 {

inline constexpr uint32_t kMaxMpVcpus = 254;  // APIC ids 0..253; the IOAPIC takes the next id

// Builds the floating pointer structure and configuration table for vcpu_count
// processors at address `at` (the EBDA); returns the bytes.
std::vector<uint8_t> build_mptable(uint32_t vcpu_count, uint64_t at);
Result<void> write_mptable(const GuestMemory& mem, uint32_t vcpu_count);

}  // namespace husk::x86
