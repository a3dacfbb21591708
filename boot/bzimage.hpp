// bzImage: the Linux x86 boot protocol image (Documentation/arch/x86/boot.rst). ember skips the
// real-mode setup code and enters the protected-mode part through its 64-bit entry (load + 0x200).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "vmm/guest_memory.hpp"

namespace ember::boot {

// True when the bytes carry a setup header: boot_flag 0xAA55 at 0x1fe and "HdrS" at 0x202.
bool is_bzimage(std::span<const std::byte> image);

struct BzImageLoad {
  uint64_t load_address;  // Where the protected-mode part went (1 MiB).
  uint64_t entry;         // 64-bit entry point: load_address + 0x200.
  uint64_t end;           // End of everything the kernel claims before it reads e820 (init_size).
  std::span<const std::byte> setup_header;  // Into the image: 0x1f1 to the header's end.
  uint32_t initrd_addr_max;                 // Highest byte address the initrd may occupy.
  uint32_t cmdline_size;                    // Longest command line, without the NUL.
};

// Checks the header and copies the protected-mode part into guest memory. Throws Error naming
// `path` when the image is truncated, too old, lacks a 64-bit entry or does not fit in memory.
BzImageLoad load_bzimage(const GuestMemory& memory, const std::string& path,
                         std::span<const std::byte> image);

}  // namespace ember::boot
