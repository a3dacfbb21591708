// How the guest finds virtio-mmio devices (virtio 1.2 §4.2): an ACPI device per transport in the
// DSDT (what Linux's virtio_mmio driver matches as "LNRO0005"), and, for kernels built with
// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, the equivalent kernel command-line parameter.
#pragma once

#include <cstdint>
#include <string>

#include "boot/aml.hpp"

namespace ember::boot {

// One transport as the platform describes it.
struct VirtioMmioPlacement {
  uint32_t index;  // _UID and the VRxx name; unique per machine, 0-255.
  uint64_t base;   // Guest-physical address of the registers (below 4 GiB).
  uint64_t size;   // Length of the register window (usually layout::kVirtioMmioWindowSize).
  uint32_t gsi;    // Edge-triggered, active-high interrupt.
};

// Slot n of the layout's virtio-mmio area: layout::kVirtioMmioStart + n * kVirtioMmioSlotSize,
// GSI layout::kVirtioMmioFirstGsi + n. Throws Error past layout::kVirtioMmioMaxDevices.
VirtioMmioPlacement virtio_mmio_slot(uint32_t index);

// Device (VRxx) { _HID "LNRO0005", _UID index, _CCA 1, _CRS { Memory32Fixed (ReadWrite, base,
// size), Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi } } }, xx the index in
// hex, for AcpiConfig::extra_devices. Throws Error if the window is not below 4 GiB or index > 255.
aml::Bytes virtio_mmio_acpi_device(const VirtioMmioPlacement& placement);

// "virtio_mmio.device=<size>@<base>:<gsi>", sizes and addresses in hex (Linux parses them with
// memparse), for one device.
std::string virtio_mmio_cmdline(const VirtioMmioPlacement& placement);

}  // namespace ember::boot
