// Loads a Linux kernel, its initrd and command line into guest memory and writes the boot structure
// (boot_params for the 64-bit entry, hvm_start_info for PVH): everything up to the first
// instruction.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vmm/guest_memory.hpp"

namespace ember::boot {

enum class EntryMode {
  kLong64,  // 64-bit mode, paging on, RSI = boot_params (bzImage, or ELF vmlinux without PVH).
  kPvh32,   // 32-bit protected mode, paging off, EBX = hvm_start_info (ELF with the PVH note).
};

struct BootSpec {
  std::string kernel_path;  // For messages only; the caller reads the file.
  std::span<const std::byte> kernel;
  std::string initrd_path;
  std::span<const std::byte> initrd;  // Empty: no initrd.
  std::string cmdline;
  uint64_t rsdp_address = 0;  // 0: none (the kernel scans the BIOS area).
};

struct BootInfo {
  EntryMode mode;
  uint64_t entry;
  uint64_t boot_struct;  // layout::kBootParams or layout::kPvhStartInfo.
  uint64_t kernel_end;   // First byte above everything the kernel claims at boot.
  uint64_t initrd_address;
  uint64_t initrd_size;
};

// What load_kernel_image put into guest memory, for write_boot_structures.
struct LoadedImage {
  EntryMode mode;
  uint64_t entry;
  uint64_t end;
  uint64_t cmdline_max;                  // Longest command line without the NUL.
  std::vector<std::byte> setup_header;   // bzImage only: 0x1f1 to the header's end.
  uint64_t initrd_address = 0;
  uint64_t initrd_size = 0;
};

// Detects the format (bzImage or ELF64), loads the kernel and places the initrd at the top of low
// RAM below the kernel's initrd_addr_max. Needs no KVM: a machine checks the user's files with it
// before it opens /dev/kvm. spec.cmdline and spec.rsdp_address are not used. Throws Error with one
// line naming the file and reason.
LoadedImage load_kernel_image(const GuestMemory& memory, const BootSpec& spec);

// Copies the command line to layout::kCmdline and writes the e820 map with boot_params or the PVH
// start info, for a kernel load_kernel_image loaded.
BootInfo write_boot_structures(const GuestMemory& memory, const BootSpec& spec,
                               const LoadedImage& image);

// Both of the above.
BootInfo load_kernel(const GuestMemory& memory, const BootSpec& spec);

// Writes the boot GDT (and page tables for 64-bit) and sets the boot vCPU's registers for
// info.mode. `sregs` must come from KVM_GET_SREGS.
void setup_boot_cpu(const GuestMemory& memory, const BootInfo& info, kvm_regs& regs,
                    kvm_sregs& sregs);

}  // namespace ember::boot
