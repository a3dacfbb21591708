// How the guest finds ember's PCI bus through ACPI: the MCFG table pointing at the ECAM window (PCI
// Firmware 3.2 §4.1.2), the host bridge Device(PCI0) in the DSDT (PNP0A08, with its bus, I/O and
// memory windows in _CRS), and a motherboard-resource device (PNP0C02) that reserves the ECAM
// range; Linux uses MMCONFIG only when that range is reserved by e820 or by such a device.
//
//   AcpiConfig acpi;
//   add_pci_to_acpi(acpi, PciAcpiConfig{});  // MCFG into extra_tables, PCI0 and PRES into
//   extra_devices
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "boot/acpi.hpp"
#include "boot/aml.hpp"
#include "boot/layout.hpp"

namespace ember::boot {

struct PciAcpiConfig {
  uint64_t ecam_base = layout::kPciEcamBase;  // Bus 0's configuration space; 1 MiB per bus.
  uint8_t last_bus = layout::kPciLastBus;     // Buses 0..last_bus.
  uint64_t mmio_base = layout::kPciMmioBase;  // The 32-bit BAR window.
  uint64_t mmio_size = layout::kPciMmioSize;
};

// Bytes of the ECAM window the config describes.
uint64_t pci_ecam_size(const PciAcpiConfig& config);

// The complete MCFG table: one allocation (ecam_base, segment 0, buses 0..last_bus).
std::vector<std::byte> pci_mcfg_table(const PciAcpiConfig& config);

// Device (PCI0) { _HID PNP0A08, _CID PNP0A03, _SEG 0, _BBN 0, _UID 0, _CRS {
//   WordBusNumber 0..last_bus, IO 0xcf8 (8 ports, the bridge's own), WordIO 0x0000-0x0cf7,
//   WordIO 0x0d00-0xffff, DWordMemory mmio window } }.
// No _PRT: ember's PCI functions interrupt through MSI-X only.
// Throws Error if the window is empty or not below 4 GiB.
aml::Bytes pci_host_bridge_device(const PciAcpiConfig& config);

// Device (PRES) { _HID PNP0C02, _UID "PCI ECAM", _CRS { Memory32Fixed (ReadWrite, ecam) } }.
// Throws Error if the ECAM window is not below 4 GiB.
aml::Bytes pci_ecam_reservation_device(const PciAcpiConfig& config);

// Appends the MCFG table to acpi.extra_tables and both devices to acpi.extra_devices.
void add_pci_to_acpi(AcpiConfig& acpi, const PciAcpiConfig& config = {});

}  // namespace ember::boot
