#include "boot/e820.hpp"

#include <algorithm>
#include <string>

#include "boot/layout.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

constexpr uint64_t kPageSize = 4096;
constexpr uint64_t kEbdaEnd = 0xa0000;  // Start of the VGA window; the EBDA sits just below it.

}  // namespace

std::vector<GuestMemory::RegionSpec> ram_regions(uint64_t memory_size) {
  if (memory_size % kPageSize != 0)
    throw Error("guest memory size " + std::to_string(memory_size) +
                " bytes is not a multiple of 4 KiB");
  if (memory_size <= layout::kHighRamStart)
    throw Error("guest memory size " + std::to_string(memory_size) +
                " bytes is too small: ember needs more than 1 MiB");
  const uint64_t low_size = std::min(memory_size, layout::kMmioHoleStart);
  std::vector<GuestMemory::RegionSpec> regions{{0, low_size}};
  if (memory_size > low_size) regions.push_back({layout::kMmioHoleEnd, memory_size - low_size});
  return regions;
}

std::vector<E820Entry> build_e820(const std::vector<MemoryRegion>& regions) {
  if (regions.empty() || regions.front().guest_address != 0 ||
      regions.front().size <= layout::kHighRamStart)
    throw Error("guest memory: the first RAM region must start at 0 and reach past 1 MiB");
  const MemoryRegion& low = regions.front();
  std::vector<E820Entry> map{
      {0, layout::kLowRamEnd, kE820Ram},
      {layout::kLowRamEnd, kEbdaEnd - layout::kLowRamEnd, kE820Reserved},
      // ACPI tables live here; reserved (not ACPI reclaimable) so the kernel never reuses them.
      {layout::kAcpiStart, layout::kAcpiEnd - layout::kAcpiStart, kE820Reserved},
      {layout::kHighRamStart, low.size - layout::kHighRamStart, kE820Ram},
  };
  for (size_t i = 1; i < regions.size(); ++i)
    map.push_back({regions[i].guest_address, regions[i].size, kE820Ram});
  return map;
}

}  // namespace ember::boot
