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

    // KVM_RUN once. EINTR (a kick) is not an error: it returns with exit_reason KVM_EXIT_INTR.
    Result<void> run();
    kvm_run* run_data() const { return reinterpret_cast<kvm_run*>(m_run.data()); }

    uint32_t id() const { return m_id; }
    int fd() const { return m_fd.get(); }

private:
    Vcpu(uint32_t id, UniqueFd fd, MappedRegion run) : m_id(id), m_fd(std::move(fd)), m_run(std::move(run)) {}

    uint32_t m_id;
    UniqueFd m_fd;
    MappedRegion m_run;
};

}  // namespace husk
