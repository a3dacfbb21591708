// KVM ioctls whose argument ends in a flexible array.
//
// Linux's uapi headers declare those arrays with __DECLARE_FLEX_ARRAY, which wraps them in a struct
// holding an empty struct. An empty struct has size 0 in C but 1 in C++, so under g++ the arrays
// start 4-8 bytes late and the structs' sizes (encoded in the ioctl request numbers) differ from
// what KVM expects: KVM answers ENOTTY or EINVAL. ember therefore uses its own headers with the C
// layout and builds each buffer as header + entries. tests/unit/kvm_abi_test.cpp checks every
// number here against the same macros compiled as C.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace ember::kvm_abi {

struct CpuidHeader {  // struct kvm_cpuid2 without entries[]
  uint32_t nent;
  uint32_t padding;
};
struct MsrsHeader {  // struct kvm_msrs without entries[]
  uint32_t nmsrs;
  uint32_t pad;
};
struct MsrListHeader {  // struct kvm_msr_list without indices[]
  uint32_t nmsrs;
};
struct IrqRoutingHeader {  // struct kvm_irq_routing without entries[]
  uint32_t nr;
  uint32_t flags;
};

// Request numbers as <linux/kvm.h> computes them in C.
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CpuidHeader);
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, IrqRoutingHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CpuidHeader);

// A buffer holding header followed by the entries, as the ioctl expects.
template <typename Header, typename Entry>
std::vector<std::byte> pack(const Header& header, std::span<const Entry> entries) {
  std::vector<std::byte> buffer(sizeof(Header) + entries.size_bytes());
  std::memcpy(buffer.data(), &header, sizeof(Header));
  if (!entries.empty()) std::memcpy(buffer.data() + sizeof(Header), entries.data(), entries.size_bytes());
  return buffer;
}

// The entries of a buffer filled by KVM.
template <typename Header, typename Entry>
std::vector<Entry> unpack(const std::vector<std::byte>& buffer, size_t count) {
  std::vector<Entry> entries(count);
  std::memcpy(entries.data(), buffer.data() + sizeof(Header), count * sizeof(Entry));
  return entries;
}

}  // namespace ember::kvm_abi
