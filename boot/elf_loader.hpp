// ELF64 x86-64 kernels (vmlinux): PT_LOAD segments at their physical addresses, and the PVH entry
// point from the Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY when the kernel has one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "vmm/guest_memory.hpp"

namespace ember::boot {

// True when the bytes start with the ELF magic (any class, any machine).
bool is_elf(std::span<const std::byte> image);

struct ElfLoad {
  uint64_t entry;                     // e_entry: a physical address for Linux's 64-bit entry.
  std::optional<uint64_t> pvh_entry;  // 32-bit PVH entry, when the note is present.
  uint64_t start;                     // Lowest p_paddr loaded.
  uint64_t end;                       // Highest p_paddr + p_memsz.
};

// Checks the header, copies every PT_LOAD segment (file bytes, then zeroes up to p_memsz) and finds
// the PVH note in PT_NOTE segments (or SHT_NOTE sections when there are no PT_NOTE segments).
// Throws Error naming `path` for anything that is not a loadable x86-64 executable.
ElfLoad load_elf(const GuestMemory& memory, const std::string& path,
                 std::span<const std::byte> image);

}  // namespace ember::boot
