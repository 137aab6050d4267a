// Layouts and request numbers for the KVM ioctls whose uapi structs end in a
// flexible array. Debian's linux-libc-dev 6.1 declares those arrays with
// __DECLARE_FLEX_ARRAY, which in C++ inserts an empty struct: sizeof grows
// (kvm_cpuid2 is 12 bytes, not 8), the entries move, and the _IOWR request
// numbers built from sizeof no longer match the kernel's. So husk spells the
// headers out and builds buffers as header + entries by hand.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace husk::kvm_abi {

struct Cpuid2Header {  // struct kvm_cpuid2 without entries
    uint32_t nent;
    uint32_t padding;
};
struct MsrsHeader {  // struct kvm_msrs without entries
    uint32_t nmsrs;
    uint32_t pad;
};
struct MsrListHeader {  // struct kvm_msr_list without indices
    uint32_t nmsrs;
};
struct Xsave {  // struct kvm_xsave without the flexible `extra` (KVM_GET_XSAVE fills 4 KiB)
    uint32_t region[1024];
};
static_assert(sizeof(Cpuid2Header) == 8 && sizeof(MsrsHeader) == 8 && sizeof(MsrListHeader) == 4);
static_assert(sizeof(kvm_cpuid_entry2) == 40 && sizeof(kvm_msr_entry) == 16);

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, Cpuid2Header);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, Cpuid2Header);
inline constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, Cpuid2Header);
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, Xsave);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, Xsave);

}  // namespace husk::kvm_abi
