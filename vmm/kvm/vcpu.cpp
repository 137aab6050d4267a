#include "vmm/kvm/vcpu.h"

#include <fmt/format.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <memory>

#include "vmm/base/system.h"
#include "vmm/kvm/kvm_abi.h"
#include "vmm/kvm/vm.h"

namespace husk {

Result<Vcpu> Vcpu::create(const Vm& vm, uint32_t id) {
    int raw = TRY(sys::ioctl(vm.fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(id), "KVM_CREATE_VCPU"));
    UniqueFd fd(raw);
    auto run = TRY(MappedRegion::map(vm.vcpu_mmap_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd.get())
                       .context("map kvm_run of vCPU " + std::to_string(id)));
    return Vcpu(id, std::move(fd), std::move(run));
}

Result<kvm_regs> Vcpu::regs() const {
    kvm_regs r{};
    TRY(sys::ioctl(m_fd.get(), KVM_GET_REGS, &r, "KVM_GET_REGS"));
    return r;
}

Result<void> Vcpu::set_regs(const kvm_regs& regs) {
    TRY(sys::ioctl(m_fd.get(), KVM_SET_REGS, &regs, "KVM_SET_REGS"));
    return {};
}

Result<kvm_sregs> Vcpu::sregs() const {
    kvm_sregs s{};
    TRY(sys::ioctl(m_fd.get(), KVM_GET_SREGS, &s, "KVM_GET_SREGS"));
    return s;
}

Result<void> Vcpu::set_sregs(const kvm_sregs& sregs) {
    TRY(sys::ioctl(m_fd.get(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS"));
    return {};
}

Result<void> Vcpu::set_fpu(const kvm_fpu& fpu) {
    TRY(sys::ioctl(m_fd.get(), KVM_SET_FPU, &fpu, "KVM_SET_FPU"));
    return {};
}

Result<void> Vcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
    size_t bytes = sizeof(kvm_abi::Cpuid2Header) + entries.size() * sizeof(kvm_cpuid_entry2);
    auto buf = std::make_unique<uint64_t[]>((bytes + 7) / 8);
    auto* header = reinterpret_cast<kvm_abi::Cpuid2Header*>(buf.get());
    header->nent = uint32_t(entries.size());
    std::copy(entries.begin(), entries.end(), reinterpret_cast<kvm_cpuid_entry2*>(header + 1));
    TRY(sys::ioctl(m_fd.get(), kvm_abi::kSetCpuid2, header, "KVM_SET_CPUID2"));
    return {};
}

Result<void> Vcpu::set_msrs(const std::vector<kvm_msr_entry>& msrs) {
    size_t bytes = sizeof(kvm_abi::MsrsHeader) + msrs.size() * sizeof(kvm_msr_entry);
    auto buf = std::make_unique<uint64_t[]>((bytes + 7) / 8);
    auto* header = reinterpret_cast<kvm_abi::MsrsHeader*>(buf.get());
    header->nmsrs = uint32_t(msrs.size());
    std::copy(msrs.begin(), msrs.end(), reinterpret_cast<kvm_msr_entry*>(header + 1));
    int written = TRY(sys::ioctl(m_fd.get(), kvm_abi::kSetMsrs, header, "KVM_SET_MSRS"));
    // KVM stops at the first MSR it refuses and returns how many it set.
    if (size_t(written) != msrs.size())
        return Error::from_string(fmt::format("KVM_SET_MSRS: MSR {:#x} refused", msrs[size_t(written)].index));
    return {};
}

Result<kvm_lapic_state> Vcpu::lapic() const {
    kvm_lapic_state s{};
    TRY(sys::ioctl(m_fd.get(), KVM_GET_LAPIC, &s, "KVM_GET_LAPIC"));
    return s;
}

Result<void> Vcpu::set_lapic(const kvm_lapic_state& state) {
    TRY(sys::ioctl(m_fd.get(), KVM_SET_LAPIC, &state, "KVM_SET_LAPIC"));
    return {};
}

Result<std::vector<kvm_cpuid_entry2>> Vcpu::cpuid() const {
    constexpr uint32_t kMax = 256;  // KVM_MAX_CPUID_ENTRIES
    size_t bytes = sizeof(kvm_abi::Cpuid2Header) + kMax * sizeof(kvm_cpuid_entry2);
    auto buf = std::make_unique<uint64_t[]>((bytes + 7) / 8);
    auto* header = reinterpret_cast<kvm_abi::Cpuid2Header*>(buf.get());
    header->nent = kMax;
    TRY(sys::ioctl(m_fd.get(), kvm_abi::kGetCpuid2, header, "KVM_GET_CPUID2"));
    auto* entries = reinterpret_cast<kvm_cpuid_entry2*>(header + 1);
    return std::vector<kvm_cpuid_entry2>(entries, entries + std::min(header->nent, kMax));
}

Result<std::vector<kvm_msr_entry>> Vcpu::msrs(const std::vector<uint32_t>& indices) const {
    std::vector<kvm_msr_entry> out;
    size_t next = 0;
    while (next < indices.size()) {
        size_t n = indices.size() - next;
        size_t bytes = sizeof(kvm_abi::MsrsHeader) + n * sizeof(kvm_msr_entry);
        auto buf = std::make_unique<uint64_t[]>((bytes + 7) / 8);
        auto* header = reinterpret_cast<kvm_abi::MsrsHeader*>(buf.get());
        auto* entries = reinterpret_cast<kvm_msr_entry*>(header + 1);
        header->nmsrs = uint32_t(n);
        for (size_t i = 0; i < n; ++i) entries[i] = kvm_msr_entry{indices[next + i], 0, 0};
        // KVM reads in order and stops at the first MSR it refuses: keep what
        // it read, skip that one, go on.
        size_t got = size_t(TRY(sys::ioctl(m_fd.get(), kvm_abi::kGetMsrs, header, "KVM_GET_MSRS")));
        out.insert(out.end(), entries, entries + std::min(got, n));
        next += got + 1;
    }
    return out;
}

Result<void> Vcpu::get_raw(unsigned long request, void* out, const char* name) const {
    TRY(sys::ioctl(m_fd.get(), request, out, name));
    return {};
}

Result<void> Vcpu::set_raw(unsigned long request, const void* in, const char* name) {
    TRY(sys::ioctl(m_fd.get(), request, in, name));
    return {};
}

Result<uint32_t> Vcpu::tsc_khz() const {
    int khz = TRY(sys::ioctl(m_fd.get(), KVM_GET_TSC_KHZ, 0ul, "KVM_GET_TSC_KHZ"));
    return uint32_t(khz);
}

Result<void> Vcpu::set_tsc_khz(uint32_t khz) {
    TRY(sys::ioctl(m_fd.get(), KVM_SET_TSC_KHZ, static_cast<unsigned long>(khz), "KVM_SET_TSC_KHZ"));
    return {};
}

Result<void> Vcpu::run() {
    if (::ioctl(m_fd.get(), KVM_RUN, 0) < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            run_data()->exit_reason = KVM_EXIT_INTR;
            return {};
        }
        return Error::from_errno(errno, "KVM_RUN on vCPU " + std::to_string(m_id));
    }
    return {};
}

}  // namespace husk
