// The PVH boot structure (xen/include/public/arch-x86/hvm/start_info.h, version 1): hvm_start_info,
// a module list holding the initrd, and the memory map, laid out one after another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "boot/e820.hpp"

namespace ember::boot {

namespace pvh {
inline constexpr uint32_t kMagic = 0x336ec578;  // XEN_HVM_START_MAGIC_VALUE.
inline constexpr uint32_t kVersion = 1;         // Has memmap_paddr / memmap_entries.
// struct hvm_start_info.
inline constexpr size_t kMagicOffset = 0;           // u32.
inline constexpr size_t kVersionOffset = 4;         // u32.
inline constexpr size_t kFlagsOffset = 8;           // u32.
inline constexpr size_t kNrModulesOffset = 12;      // u32.
inline constexpr size_t kModlistPaddrOffset = 16;   // u64.
inline constexpr size_t kCmdlinePaddrOffset = 24;   // u64.
inline constexpr size_t kRsdpPaddrOffset = 32;      // u64.
inline constexpr size_t kMemmapPaddrOffset = 40;    // u64.
inline constexpr size_t kMemmapEntriesOffset = 48;  // u32, then a reserved u32.
inline constexpr size_t kStartInfoSize = 56;
// struct hvm_modlist_entry: paddr, size, cmdline_paddr, reserved (all u64).
inline constexpr size_t kModlistEntrySize = 32;
// struct hvm_memmap_table_entry: addr (u64), size (u64), type (u32, e820 values), reserved (u32).
inline constexpr size_t kMemmapEntrySize = 24;
}  // namespace pvh

struct PvhSpec {
  uint64_t address;  // Where the block goes (layout::kPvhStartInfo); the list addresses follow it.
  uint64_t cmdline_address;
  uint64_t rsdp_address;
  uint64_t initrd_address;
  uint64_t initrd_size;  // 0: no module.
  std::span<const E820Entry> memmap;
};

// Offsets of the module list and the memory map inside the block, from its start.
inline constexpr size_t kPvhModlistOffset = pvh::kStartInfoSize;
inline constexpr size_t kPvhMemmapOffset = kPvhModlistOffset + pvh::kModlistEntrySize;

// The start info, module list and memmap as bytes to write at spec.address.
std::vector<std::byte> build_pvh_start_info(const PvhSpec& spec);

}  // namespace ember::boot
