// Device 0 of bus 0: the host bridge itself, a configuration header and nothing else (no BARs, no
// interrupts). It identifies as Red Hat's "PCIe host bridge" 1b36:0008, class 06/00, as QEMU's
// generic PCIe host does, so guests treat it as a plain bridge to memory.
#pragma once

#include <mutex>

#include "devices/pci/function.hpp"

namespace ember {

namespace pci {
inline constexpr uint16_t kRedHatVendorId = 0x1b36;
inline constexpr uint16_t kHostBridgeDeviceId = 0x0008;
inline constexpr uint32_t kHostBridgeClass = 0x060000;
}  // namespace pci

class PciHostBridge : public PciFunction {
 public:
  PciHostBridge();

  void config_read(uint16_t offset, std::span<uint8_t> data) override;
  void config_write(uint16_t offset, std::span<const uint8_t> data) override;
  std::vector<PciBarDefinition> bar_definitions() const override { return {}; }
  void assign_bar(uint8_t index, uint64_t address) override;
  void enable_memory_decoding() override;
  std::vector<PciBarRegion> decoded_bars() const override { return {}; }
  void bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) override;
  void bar_write(uint8_t, uint64_t, std::span<const uint8_t>) override {}

 private:
  mutable std::mutex mutex_;
  PciConfigSpace config_;
};

}  // namespace ember
