// What each vCPU sees in CPUID and its boot MSRs and LAPIC LINT pins: derived from what KVM
// supports, with ember's topology (one socket, one thread per core, APIC ID == vCPU index).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

namespace ember::boot {

struct CpuTopology {
  uint32_t index = 0;     // This vCPU; also its APIC ID.
  uint32_t count = 1;     // vCPUs in the VM.
  uint32_t tsc_khz = 0;   // Advertised in the hypervisor timing leaf (and Intel's leaf 0x15) when known.
};

// CPUID leaves and bits ember sets (Intel SDM vol. 2A "CPUID"; AMD APM vol. 3 appendix E).
inline constexpr uint32_t kLeafFeatures = 0x1;
inline constexpr uint32_t kLeafCacheParameters = 0x4;
inline constexpr uint32_t kLeafExtendedTopology = 0xb;
inline constexpr uint32_t kLeafV2ExtendedTopology = 0x1f;
inline constexpr uint32_t kLeafTscCrystal = 0x15;
inline constexpr uint32_t kLeafHypervisorBase = 0x40000000;
inline constexpr uint32_t kLeafHypervisorTiming = 0x40000010;  // TSC and LAPIC bus kHz.
inline constexpr uint32_t kLeafAmdAddressSizes = 0x80000008;
inline constexpr uint32_t kLeafAmdTopology = 0x8000001e;
inline constexpr uint32_t kFeatureEcxHypervisor = 1u << 31;
inline constexpr uint32_t kFeatureEdxHtt = 1u << 28;
inline constexpr uint32_t kLapicBusKhz = 1000000;  // KVM's APIC timer runs at 1 GHz.

std::vector<kvm_cpuid_entry2> vcpu_cpuid(std::span<const kvm_cpuid_entry2> supported,
                                         const CpuTopology& topology);

// MSRs set on every vCPU before it runs: SYSENTER/SYSCALL state cleared, fast strings on, MTRRs
// enabled with write-back as the default type (Linux maps RAM uncached otherwise).
std::vector<kvm_msr_entry> boot_msrs();

// LINT0 in ExtINT mode (the 8259 behind it) and LINT1 as NMI, as a PC BIOS leaves them.
void configure_lapic_lint(kvm_lapic_state& lapic);

}  // namespace ember::boot
