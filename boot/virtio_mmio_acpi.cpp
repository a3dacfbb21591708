#include "boot/virtio_mmio_acpi.hpp"

#include <array>
#include <cstdio>

#include "boot/layout.hpp"
#include "vmm/error.hpp"

namespace ember::boot {

namespace {

std::string hex(uint64_t value) {
  std::array<char, 24> text{};
  std::snprintf(text.data(), text.size(), "0x%llx", static_cast<unsigned long long>(value));
  return text.data();
}

// "VR00".."VRFF".
std::string device_name(uint32_t index) {
  std::array<char, 8> text{};
  std::snprintf(text.data(), text.size(), "VR%02X", index);
  return text.data();
}

}  // namespace

VirtioMmioPlacement virtio_mmio_slot(uint32_t index) {
  if (index >= layout::kVirtioMmioMaxDevices) {
    throw Error("virtio-mmio: slot " + std::to_string(index) + " is past the " +
                std::to_string(layout::kVirtioMmioMaxDevices) + " the layout has interrupts for");
  }
  return {
      .index = index,
      .base = layout::kVirtioMmioStart + index * layout::kVirtioMmioSlotSize,
      .size = layout::kVirtioMmioWindowSize,
      .gsi = layout::kVirtioMmioFirstGsi + index,
  };
}

aml::Bytes virtio_mmio_acpi_device(const VirtioMmioPlacement& placement) {
  if (placement.index > 0xff) {
    throw Error("virtio-mmio: device index " + std::to_string(placement.index) +
                " does not fit a VRxx name");
  }
  const uint64_t end = placement.base + placement.size;
  if (placement.size == 0 || end < placement.base || end > (uint64_t{1} << 32)) {
    throw Error("virtio-mmio: window " + hex(placement.base) + "+" + hex(placement.size) +
                " is not below 4 GiB");
  }
  const std::array<uint32_t, 1> gsis{placement.gsi};
  return aml::device(
      device_name(placement.index),
      {
          aml::name("_HID", aml::string("LNRO0005")),
          aml::name("_UID", aml::integer(placement.index)),
          aml::name("_CCA", aml::integer(1)),  // DMA is cache coherent.
          aml::name("_CRS",
                    aml::resource_template({
                        aml::memory32_fixed(true, static_cast<uint32_t>(placement.base),
                                            static_cast<uint32_t>(placement.size)),
                        aml::interrupt(aml::Usage::kConsumer, aml::Trigger::kEdge,
                                       aml::Polarity::kActiveHigh, aml::Sharing::kExclusive, gsis),
                    })),
      });
}

std::string virtio_mmio_cmdline(const VirtioMmioPlacement& placement) {
  return "virtio_mmio.device=" + hex(placement.size) + "@" + hex(placement.base) + ":" +
         std::to_string(placement.gsi);
}

}  // namespace ember::boot
