// CPUID for a husk guest: KVM_GET_SUPPORTED_CPUID normalised per vendor.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

namespace husk::x86 {

enum class CpuVendor { Intel, Amd, Other };

CpuVendor cpu_vendor(const std::vector<kvm_cpuid_entry2>& entries);
std::string vendor_string(const std::vector<kvm_cpuid_entry2>& entries);

struct CpuidOptions {
    uint32_t vcpu_id = 0;
    uint32_t vcpu_count = 1;
    // KVM emulates the TSC-deadline timer but leaves its CPUID bit for user
    // space to set (KVM_CAP_TSC_DEADLINE_TIMER, api.rst).
    bool tsc_deadline = false;
    // The "baseline" CPU template: only features every x86-64 server of the
    // last decade has (SSE4.2, AVX2, AES, ... no AVX-512, no AMX), so a
    // snapshot taken here restores on another host of the same vendor.
    bool baseline = false;
};

// The table for one vCPU: topology (APIC ids, core counts) for vcpu_count
// single-threaded cores in one package, the KVM hypervisor leaves, and the
// features husk cannot back masked (nested virtualization, MONITOR/MWAIT,
// thermal/power management, performance counters, debug store).
std::vector<kvm_cpuid_entry2> normalize_cpuid(std::vector<kvm_cpuid_entry2> supported, const CpuidOptions& options);

kvm_cpuid_entry2* find_leaf(std::vector<kvm_cpuid_entry2>& entries, uint32_t function, uint32_t index = 0);

}  // namespace husk::x86
