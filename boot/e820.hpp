// The guest-physical RAM layout and the e820 memory map that describes it to the kernel.
#pragma once

#include <cstdint>
#include <vector>

#include "vmm/guest_memory.hpp"

namespace ember::boot {

// e820 range types (ACPI 6.5 table 15.1; the values Linux's boot_e820_entry uses).
inline constexpr uint32_t kE820Ram = 1;
inline constexpr uint32_t kE820Reserved = 2;

struct E820Entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  bool operator==(const E820Entry&) const = default;
};

// RAM regions for a guest of memory_size bytes: [0, min(size, 3 GiB)) and the rest from 4 GiB, so
// that the 32-bit MMIO hole stays free. Throws Error when the size is not page aligned or too
// small.
std::vector<GuestMemory::RegionSpec> ram_regions(uint64_t memory_size);

// The e820 map for those regions: conventional RAM below the EBDA, the EBDA/VGA hole and the ACPI
// area reserved, RAM from 1 MiB to the end of the first region, and each further region as RAM.
// Throws Error when the first region does not start at 0 or does not reach past 1 MiB.
std::vector<E820Entry> build_e820(const std::vector<MemoryRegion>& regions);

}  // namespace ember::boot
