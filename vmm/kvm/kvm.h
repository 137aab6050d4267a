// Kvm: the /dev/kvm system fd — API version, capabilities, supported CPUID.
#pragma once

#include <linux/kvm.h>

#include <string>
#include <vector>

#include "vmm/base/result.h"
#include "vmm/base/unique_fd.h"

namespace husk {

class Vm;

// A KVM capability husk depends on, with why.
struct RequiredCapability {
    int cap;
    const char* name;
    const char* why;
};

class Kvm {
public:
    static Result<Kvm> open(const std::string& path = "/dev/kvm");

    // Capabilities the VMM cannot run without.
    static const std::vector<RequiredCapability>& required_capabilities();
    // Fails with one message naming every missing capability.
    Result<void> check_required_capabilities() const;

    int check_extension(int cap) const;
    Result<std::vector<kvm_cpuid_entry2>> supported_cpuid() const;
    Result<std::vector<uint32_t>> msr_index_list() const;
    size_t vcpu_mmap_size() const { return m_vcpu_mmap_size; }
    int fd() const { return m_fd.get(); }

private:
    Kvm(UniqueFd fd, size_t mmap_size) : m_fd(std::move(fd)), m_vcpu_mmap_size(mmap_size) {}

    UniqueFd m_fd;
    size_t m_vcpu_mmap_size = 0;
};

}  // namespace husk
