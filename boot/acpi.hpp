// ACPI tables for a hardware-reduced x86 microVM: RSDP, XSDT, FADT, MADT and a DSDT with AML for
// the legacy devices. Distro kernels find CPUs, the IOAPIC and devices through these (ACPI 6.5 §5).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "boot/layout.hpp"

namespace ember::boot {

inline constexpr uint32_t kAcpiMaxCpus = 254;  // xAPIC IDs 0-253; 255 is the broadcast ID.

struct AcpiConfig {
  uint32_t cpu_count = 1;
  bool com1 = true;     // PNP0501 at 0x3f8, IRQ 4
  bool pvpanic = true;  // QEMU0001 at 0x505
  bool i8042 = true;    // sets the FADT 8042 boot flag
  // Extension points. AML terms (usually aml::device(...)) placed inside Scope(\_SB) after the
  // built-in devices, and complete tables (see acpi_table()) listed in the XSDT after FADT and
  // MADT.
  std::vector<std::vector<std::byte>> extra_devices;
  std::vector<std::vector<std::byte>> extra_tables;
};

struct AcpiTables {
  uint64_t base;  // guest-physical address of bytes[0] (== RSDP address)
  uint64_t rsdp_address;
  std::vector<std::byte> bytes;  // everything, ready to copy into guest memory at base
  // Each table's guest-physical address and length, keyed by signature ("RSDP", "XSDT", "FACP",
  // "APIC", "DSDT", and those of extra_tables).
  std::map<std::string, std::pair<uint64_t, uint32_t>> tables;
};

// Lays out all tables from base (16-byte aligned) and checks that they end by layout::kAcpiEnd.
// Throws ember::Error for a bad cpu_count, a bad extra table or tables that do not fit.
AcpiTables build_acpi_tables(const AcpiConfig& config, uint64_t base = layout::kAcpiStart);

// A complete system description table: the 36-byte header (OEM "EMBER ", table ID "EMBR" +
// signature) followed by body, with length and checksum filled in. signature is four characters.
std::vector<std::byte> acpi_table(std::string_view signature, uint8_t revision,
                                  std::span<const std::byte> body);

// Sum of bytes modulo 256; zero for a table with a correct checksum.
uint8_t acpi_checksum(std::span<const std::byte> bytes);

}  // namespace ember::boot
