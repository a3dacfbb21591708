// The boot vCPU's state: the boot GDT, identity page tables and the registers for Linux's 64-bit
// entry (boot.rst "64-bit BOOT PROTOCOL") or the PVH 32-bit entry (Xen docs/misc/pvh.pandoc).
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include "vmm/guest_memory.hpp"

namespace ember::boot {

// Selectors in the boot GDT at layout::kBootGdt. 0x10/0x18 are Linux's __BOOT_CS/__BOOT_DS.
inline constexpr uint16_t kCode64Selector = 0x10;
inline constexpr uint16_t kDataSelector = 0x18;
inline constexpr uint16_t kCode32Selector = 0x20;
inline constexpr uint16_t kData32Selector = 0x28;
inline constexpr uint16_t kBootGdtEntries = 6;

// Control register and EFER bits (Intel SDM vol. 3, 2.5 and 2.2.1).
inline constexpr uint64_t kCr0Pe = 1u << 0;
inline constexpr uint64_t kCr0Et = 1u << 4;
inline constexpr uint64_t kCr0Ne = 1u << 5;
inline constexpr uint64_t kCr0Pg = 1u << 31;
inline constexpr uint64_t kCr4Pae = 1u << 5;
inline constexpr uint64_t kEferLme = 1u << 8;
inline constexpr uint64_t kEferLma = 1u << 10;
inline constexpr uint64_t kRflagsReserved = 1u << 1;  // Bit 1 always reads as 1.

// Page-table entry bits.
inline constexpr uint64_t kPtePresent = 1u << 0;
inline constexpr uint64_t kPteWritable = 1u << 1;
inline constexpr uint64_t kPtePageSize = 1u << 7;  // In a page directory: a 2 MiB page.

// Writes the six-entry boot GDT (null, null, 64-bit code, data, 32-bit code, 32-bit data).
void write_boot_gdt(const GuestMemory& memory);

// Writes PML4 -> one PDPT -> four page directories of 2 MiB pages identity-mapping [0, 4 GiB).
void write_identity_page_tables(const GuestMemory& memory);

// 64-bit mode, paging on, CS 0x10 (L=1), DS/ES/FS/GS/SS 0x18, RSI = boot_params. Writes the GDT and
// page tables. `sregs` comes from KVM_GET_SREGS; fields ember does not set keep KVM's values.
void setup_long_mode(const GuestMemory& memory, uint64_t entry, uint64_t boot_params,
                     kvm_regs& regs, kvm_sregs& sregs);

// 32-bit protected mode, paging off, flat CS 0x20 and data 0x28, EBX = start_info. Writes the GDT.
void setup_pvh(const GuestMemory& memory, uint64_t entry, uint64_t start_info, kvm_regs& regs,
               kvm_sregs& sregs);

}  // namespace ember::boot
