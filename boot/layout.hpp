// Where ember puts things in guest-physical memory and I/O space. One place, so that loaders, ACPI
// tables, e820 and devices agree.
#pragma once

#include <cstdint>

namespace ember::layout {

// Low memory (below 1 MiB).
inline constexpr uint64_t kBootGdt = 0x500;           // Boot GDT: 64-bit code 0x10, data 0x18, PVH 32-bit code 0x20 and data 0x28.
inline constexpr uint64_t kPvhStartInfo = 0x6000;     // hvm_start_info, module list, memmap.
inline constexpr uint64_t kBootParams = 0x7000;       // Linux zero page (struct boot_params).
inline constexpr uint64_t kBootStackTop = 0x8ff0;     // Initial stack for 64-bit entry.
inline constexpr uint64_t kPml4 = 0x9000;             // Identity page tables: PML4,
inline constexpr uint64_t kPdpt = 0xa000;             //   one PDPT,
inline constexpr uint64_t kPageDirectories = 0xb000;  //   four PDs of 2 MiB pages (4 GiB).
inline constexpr uint64_t kCmdline = 0x20000;         // Kernel command line.
inline constexpr uint64_t kCmdlineMax = 0x10000;      // Including the NUL.
inline constexpr uint64_t kLowRamEnd = 0x9fc00;       // End of conventional RAM (EBDA above).
inline constexpr uint64_t kAcpiStart = 0xe0000;       // RSDP and all ACPI tables (BIOS area).
inline constexpr uint64_t kAcpiEnd = 0x100000;
inline constexpr uint64_t kHighRamStart = 0x100000;   // Kernels load at 1 MiB.

// 32-bit MMIO hole: RAM above kMmioHoleStart moves to 4 GiB.
inline constexpr uint64_t kMmioHoleStart = 0xc0000000;
inline constexpr uint64_t kMmioHoleEnd = 0x100000000;
inline constexpr uint64_t kIoapicAddress = 0xfec00000;
inline constexpr uint64_t kLapicAddress = 0xfee00000;

// Port I/O.
inline constexpr uint16_t kI8042DataPort = 0x60;      // i8042 occupies 0x60 and 0x64.
inline constexpr uint16_t kI8042CommandPort = 0x64;
inline constexpr uint16_t kCom1Port = 0x3f8;          // 16550 UART, 8 ports.
inline constexpr uint8_t kCom1Irq = 4;
inline constexpr uint16_t kPvpanicPort = 0x505;       // QEMU pvpanic, 1 port.
inline constexpr uint16_t kAcpiPmPort = 0x600;        // ACPI hardware-reduced registers, 3 ports:
inline constexpr uint16_t kAcpiSleepControlPort = 0x600;  //   sleep control (FADT SLEEP_CONTROL_REG),
inline constexpr uint16_t kAcpiSleepStatusPort = 0x601;   //   sleep status (FADT SLEEP_STATUS_REG),
inline constexpr uint16_t kAcpiResetPort = 0x602;         //   reset register (FADT RESET_REG).
inline constexpr uint8_t kAcpiResetValue = 0x1;
inline constexpr uint8_t kAcpiS5SleepType = 5;        // SLP_TYP for \_S5 (poweroff).

// virtio-mmio devices (virtio 1.2 §4.2), in the 32-bit MMIO hole below the IOAPIC and clear of the
// PCI ECAM and BAR windows: 32 slots of 4 KiB at 0xfe000000..0xfe01ffff (0xfe000000..0xfe0fffff is
// kept for them). Slot n is at kVirtioMmioStart + n * kVirtioMmioSlotSize; its registers and
// configuration space are the first 0x200 bytes (what ACPI and the command line describe). Slot n
// interrupts on GSI kVirtioMmioFirstGsi + n, an edge-triggered IOAPIC pin; KVM's IOAPIC has pins
// 0-23, so pins 16-23 allow 8 devices (kVirtioMmioMaxDevices) until GSIs are shared.
inline constexpr uint64_t kVirtioMmioStart = 0xfe000000;
inline constexpr uint64_t kVirtioMmioEnd = 0xfe100000;  // Reserved range, exclusive.
inline constexpr uint64_t kVirtioMmioSlotSize = 0x1000;
inline constexpr uint64_t kVirtioMmioWindowSize = 0x200;  // Registers (0x100) + config.
inline constexpr uint32_t kVirtioMmioSlots = 32;
inline constexpr uint32_t kVirtioMmioFirstGsi = 16;
inline constexpr uint32_t kVirtioMmioMaxDevices = 8;  // GSIs 16-23.

// PCI (bus 0 only, segment 0), in the 32-bit MMIO hole clear of the IOAPIC, LAPIC and virtio-mmio:
// the BAR window 0xc0000000..0xdfffffff (ember places BARs there at set-up; the guest may move them
// within it), the ECAM window for bus 0 at 0xe0000000 (1 MiB: 32 devices x 8 functions x 4 KiB,
// PCI Express Base §7.2.2; MCFG lists buses 0-0), and configuration mechanism #1 at 0xcf8..0xcff.
inline constexpr uint64_t kPciMmioBase = 0xc0000000;
inline constexpr uint64_t kPciMmioSize = 0x20000000;
inline constexpr uint64_t kPciEcamBase = 0xe0000000;
inline constexpr uint64_t kPciEcamSize = 0x100000;
inline constexpr uint8_t kPciLastBus = 0;
inline constexpr uint16_t kPciConfigPort = 0xcf8;     // CONFIG_ADDRESS 0xcf8, CONFIG_DATA 0xcfc.
inline constexpr uint16_t kPciConfigPortCount = 8;

}  // namespace ember::layout
