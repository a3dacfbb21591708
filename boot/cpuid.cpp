#include "boot/cpuid.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace ember::boot {

namespace {

kvm_cpuid_entry2* find(std::vector<kvm_cpuid_entry2>& entries, uint32_t function,
                       uint32_t index = 0) {
  for (auto& entry : entries) {
    const bool indexed = (entry.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) != 0;
    if (entry.function == function && (!indexed || entry.index == index)) return &entry;
  }
  return nullptr;
}

kvm_cpuid_entry2& find_or_add(std::vector<kvm_cpuid_entry2>& entries, uint32_t function,
                              uint32_t index = 0, uint32_t flags = 0) {
  if (auto* entry = find(entries, function, index)) return *entry;
  kvm_cpuid_entry2 entry{};
  entry.function = function;
  entry.index = index;
  entry.flags = flags;
  entries.push_back(entry);
  return entries.back();
}

bool is_intel(const std::vector<kvm_cpuid_entry2>& entries) {
  for (const auto& entry : entries) {
    if (entry.function != 0) continue;
    char vendor[12];
    std::memcpy(vendor, &entry.ebx, 4);
    std::memcpy(vendor + 4, &entry.edx, 4);
    std::memcpy(vendor + 8, &entry.ecx, 4);
    return std::memcmp(vendor, "GenuineIntel", 12) == 0;
  }
  return false;
}

// Bits of APIC ID needed to number count cores.
uint32_t core_id_bits(uint32_t count) { return count <= 1 ? 0 : std::bit_width(count - 1); }

void set_extended_topology(std::vector<kvm_cpuid_entry2>& entries, uint32_t function,
                           const CpuTopology& topology) {
  // Level 0: SMT, one thread per core. Level 1: cores in the package. Then an invalid level.
  // (Intel SDM vol. 2A, CPUID leaf 0BH: ECX[15:8] level type 1 = SMT, 2 = Core.)
  std::erase_if(entries, [&](const kvm_cpuid_entry2& e) { return e.function == function; });
  for (uint32_t level = 0; level < 3; ++level) {
    kvm_cpuid_entry2 entry{};
    entry.function = function;
    entry.index = level;
    entry.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    entry.edx = topology.index;
    entry.ecx = level;
    if (level == 0) {
      entry.eax = 0;
      entry.ebx = 1;
      entry.ecx |= 1u << 8;
    } else if (level == 1) {
      entry.eax = core_id_bits(topology.count);
      entry.ebx = topology.count;
      entry.ecx |= 2u << 8;
    }
    entries.push_back(entry);
  }
}

}  // namespace

std::vector<kvm_cpuid_entry2> vcpu_cpuid(std::span<const kvm_cpuid_entry2> supported,
                                         const CpuTopology& topology) {
  std::vector<kvm_cpuid_entry2> entries(supported.begin(), supported.end());
  const bool intel = is_intel(entries);

  if (auto* features = find(entries, kLeafFeatures)) {
    // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package.
    features->ebx = (features->ebx & 0x0000ffffu) | (topology.index << 24) |
                    (std::min<uint32_t>(topology.count, 255) << 16);
    features->ecx |= kFeatureEcxHypervisor;
    if (topology.count > 1) {
      features->edx |= kFeatureEdxHtt;
    } else {
      features->edx &= ~kFeatureEdxHtt;
    }
  }

  for (auto& entry : entries) {
    // Deterministic cache parameters: EAX[31:26] = cores per package - 1, EAX[25:14] = threads
    // sharing this cache - 1 (each core has its own, except the last level which all share).
    if (entry.function == kLeafCacheParameters && intel) {
      const uint32_t cache_level = (entry.eax >> 5) & 0x7;
      const uint32_t sharing = cache_level >= 3 ? topology.count - 1 : 0;
      entry.eax = (entry.eax & 0x3fffu) | ((topology.count - 1) << 26) | (sharing << 14);
    }
  }

  if (find(entries, kLeafExtendedTopology) != nullptr || intel)
    set_extended_topology(entries, kLeafExtendedTopology, topology);
  if (find(entries, kLeafV2ExtendedTopology) != nullptr)
    set_extended_topology(entries, kLeafV2ExtendedTopology, topology);

  if (auto* sizes = find(entries, kLeafAmdAddressSizes); sizes != nullptr && !intel) {
    // ECX[7:0] NC = cores - 1, ECX[15:12] ApicIdCoreIdSize.
    sizes->ecx = (sizes->ecx & ~0xf0ffu) | (topology.count - 1) |
                 (core_id_bits(topology.count) << 12);
  }
  if (auto* amd_topology = find(entries, kLeafAmdTopology); amd_topology != nullptr && !intel) {
    amd_topology->eax = topology.index;  // Extended APIC ID.
    amd_topology->ebx = topology.index;  // Core ID; threads per core - 1 = 0 in EBX[15:8].
    amd_topology->ecx = 0;               // Node 0, one node per processor.
  }

  if (topology.tsc_khz != 0) {
    // The hypervisor timing leaf (as VMware and QEMU define it): TSC and APIC bus kHz.
    auto& base = find_or_add(entries, kLeafHypervisorBase);
    base.eax = std::max(base.eax, kLeafHypervisorTiming);
    auto& timing = find_or_add(entries, kLeafHypervisorTiming);
    timing.eax = topology.tsc_khz;
    timing.ebx = kLapicBusKhz;
    timing.ecx = timing.edx = 0;
    if (intel) {
      // TSC = crystal * EBX / EAX with a 1 kHz "crystal" in ECX: Linux's native_calibrate_tsc()
      // then knows the frequency without a PIT, which a hardware-reduced ACPI machine lacks.
      auto& leaf0 = find_or_add(entries, 0);
      leaf0.eax = std::max(leaf0.eax, kLeafTscCrystal);
      auto& crystal = find_or_add(entries, kLeafTscCrystal);
      crystal.eax = 1;
      crystal.ebx = topology.tsc_khz;
      crystal.ecx = 1000;
      crystal.edx = 0;
    }
  }
  return entries;
}

std::vector<kvm_msr_entry> boot_msrs() {
  // Intel SDM vol. 4 / AMD APM vol. 2 MSR numbers.
  constexpr uint32_t kSysenterCs = 0x174, kSysenterEsp = 0x175, kSysenterEip = 0x176;
  constexpr uint32_t kStar = 0xc0000081, kLstar = 0xc0000082, kCstar = 0xc0000083;
  constexpr uint32_t kSyscallMask = 0xc0000084, kKernelGsBase = 0xc0000102;
  constexpr uint32_t kMiscEnable = 0x1a0, kMtrrDefType = 0x2ff;
  constexpr uint64_t kMiscEnableFastStrings = 1;
  constexpr uint64_t kMtrrEnable = 1u << 11, kMemoryTypeWriteBack = 6;
  std::vector<kvm_msr_entry> msrs;
  for (uint32_t index : {kSysenterCs, kSysenterEsp, kSysenterEip, kStar, kLstar, kCstar,
                         kSyscallMask, kKernelGsBase}) {
    msrs.push_back({index, 0, 0});
  }
  msrs.push_back({kMiscEnable, 0, kMiscEnableFastStrings});
  msrs.push_back({kMtrrDefType, 0, kMtrrEnable | kMemoryTypeWriteBack});
  return msrs;
}

void configure_lapic_lint(kvm_lapic_state& lapic) {
  // Local vector table registers (Intel SDM vol. 3A §11.5.1): delivery mode in bits 10:8.
  constexpr size_t kLvtLint0 = 0x350, kLvtLint1 = 0x360;
  constexpr uint32_t kDeliveryModeMask = 0x700, kDeliveryExtInt = 0x700, kDeliveryNmi = 0x400;
  auto update = [&](size_t offset, uint32_t mode) {
    uint32_t value;
    std::memcpy(&value, lapic.regs + offset, sizeof(value));
    value = (value & ~kDeliveryModeMask) | mode;
    std::memcpy(lapic.regs + offset, &value, sizeof(value));
  };
  update(kLvtLint0, kDeliveryExtInt);
  update(kLvtLint1, kDeliveryNmi);
}

}  // namespace ember::boot
