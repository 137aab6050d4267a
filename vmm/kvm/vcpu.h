// Vcpu: one KVM vCPU fd and its shared kvm_run page.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "vmm/base/mapped_region.h"
#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk {

class Vm;

class Vcpu {
public:
    static Result<Vcpu> create(const Vm& vm, uint32_t id);

    Result<kvm_regs> regs() const;
    Result<void> set_regs(const kvm_regs& regs);
    Result<kvm_sregs> sregs() const;
    Result<void> set_sregs(const kvm_sregs& sregs);
    Result<void> set_fpu(const kvm_fpu& fpu);
    Result<void> set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
    Result<void> set_msrs(const std::vector<kvm_msr_entry>& msrs);
    Result<kvm_lapic_state> lapic() const;
    Result<void> set_lapic(const kvm_lapic_state& state);
    Result<std::vector<kvm_cpuid_entry2>> cpuid() const;
    // The MSRs among `indices` KVM can read; an index it refuses is left out.
    Result<std::vector<kvm_msr_entry>> msrs(const std::vector<uint32_t>& indices) const;

    // Fixed-size state (snapshots): KVM_GET_x / KVM_SET_x by request number.
    template <typename T>
    Result<T> get(unsigned long request, const char* name) const {
        T value{};
        TRY(get_raw(request, &value, name));
        return value;
    }
    template <typename T>
    Result<void> set(unsigned long request, const T& value, const char* name) {
        return set_raw(request, &value, name);
    }
    // KVM_GET_TSC_KHZ / KVM_SET_TSC_KHZ.
    Result<uint32_t> tsc_khz() const;
    Result<void> set_tsc_khz(uint32_t khz);

    // KVM_RUN once. EINTR (a kick) is not an error: it returns with exit_reason KVM_EXIT_INTR.
    Result<void> run();
    kvm_run* run_data() const { return reinterpret_cast<kvm_run*>(m_run.data()); }

    uint32_t id() const { return m_id; }
    int fd() const { return m_fd.get(); }

private:
    Result<void> get_raw(unsigned long request, void* out, const char* name) const;
    Result<void> set_raw(unsigned long request, const void* in, const char* name);

    Vcpu(uint32_t id, UniqueFd fd, MappedRegion run) : m_id(id), m_fd(std::move(fd)), m_run(std::move(run)) {}

    uint32_t m_id;
    UniqueFd m_fd;
    MappedRegion m_run;
};

}  // namespace husk
