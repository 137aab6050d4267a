#include "vmm/kvm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <memory>

#include "vmm/base/system.h"
#include "vmm/kvm/kvm_abi.h"

namespace husk {

Result<Kvm> Kvm::open(const std::string& path) {
    auto fd = TRY(sys::open(path, O_RDWR).context("KVM is not available (is the kvm module loaded, and may this user open it?)"));
    int version = TRY(sys::ioctl(fd.get(), KVM_GET_API_VERSION, 0ul, "KVM_GET_API_VERSION"));
    if (version != KVM_API_VERSION)
        return Error::from_string("KVM API version " + std::to_string(version) + " is not the stable API 12");
    int size = TRY(sys::ioctl(fd.get(), KVM_GET_VCPU_MMAP_SIZE, 0ul, "KVM_GET_VCPU_MMAP_SIZE"));
    return Kvm(std::move(fd), size_t(size));
}

const std::vector<RequiredCapability>& Kvm::required_capabilities() {
    static const std::vector<RequiredCapability> caps = {
        {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest RAM from VMM memory"},
        {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP", "in-kernel PIC/IOAPIC/LAPIC"},
        {KVM_CAP_PIT2, "KVM_CAP_PIT2", "in-kernel PIT timer"},
        {KVM_CAP_IRQ_INJECT_STATUS, "KVM_CAP_IRQ_INJECT_STATUS", "interrupt lines from devices"},
        {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "CPUID built from KVM_GET_SUPPORTED_CPUID"},
        {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR", "real/protected mode TSS on Intel"},
        {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE", "SMP bring-up and snapshots"},
        {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD", "virtio queue notifications without exits to user space"},
        {KVM_CAP_IRQFD, "KVM_CAP_IRQFD", "device interrupts from the event loop"},
        {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "stopping vCPUs without races"},
    };
    return caps;
}

int Kvm::check_extension(int cap) const {
    int r = ::ioctl(m_fd.get(), KVM_CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
}

Result<void> Kvm::check_required_capabilities() const {
    std::string missing;
    for (const auto& c : required_capabilities()) {
        if (check_extension(c.cap) > 0) continue;
        if (!missing.empty()) missing += ", ";
        missing += std::string(c.name) + " (" + c.why + ")";
    }
    if (!missing.empty()) return Error::from_string("this KVM lacks capabilities husk needs: " + missing, ENOTSUP);
    return {};
}

Result<std::vector<kvm_cpuid_entry2>> Kvm::supported_cpuid() const {
    // The kernel answers E2BIG while the buffer is too small; grow until it fits.
    for (uint32_t n = 64; n <= 256; n *= 2) {  // KVM_MAX_CPUID_ENTRIES is 256
        size_t bytes = sizeof(kvm_abi::Cpuid2Header) + n * sizeof(kvm_cpuid_entry2);
        auto buf = std::make_unique<uint64_t[]>((bytes + 7) / 8);
        auto* header = reinterpret_cast<kvm_abi::Cpuid2Header*>(buf.get());
        auto* entries = reinterpret_cast<kvm_cpuid_entry2*>(header + 1);
        header->nent = n;
        auto r = sys::ioctl(m_fd.get(), kvm_abi::kGetSupportedCpuid, header, "KVM_GET_SUPPORTED_CPUID");
        if (r.is_error()) {
            if (r.error().code() == E2BIG) continue;
            return r.release_error();
        }
        return std::vector<kvm_cpuid_entry2>(entries, entries + std::min(header->nent, n));
    }
    return Error::from_errno(E2BIG, "KVM_GET_SUPPORTED_CPUID");
}

Result<std::vector<uint32_t>> Kvm::msr_index_list() const {
    for (uint32_t n = 64; n <= 16384; n *= 2) {
        auto buf = std::make_unique<uint32_t[]>(n + 1);
        auto* header = reinterpret_cast<kvm_abi::MsrListHeader*>(buf.get());
        header->nmsrs = n;
        auto r = sys::ioctl(m_fd.get(), kvm_abi::kGetMsrIndexList, header, "KVM_GET_MSR_INDEX_LIST");
        if (r.is_error()) {
            if (r.error().code() == E2BIG) continue;
            return r.release_error();
        }
        return std::vector<uint32_t>(buf.get() + 1, buf.get() + 1 + std::min(header->nmsrs, n));
    }
    return Error::from_errno(E2BIG, "KVM_GET_MSR_INDEX_LIST");
}

}  // namespace husk
