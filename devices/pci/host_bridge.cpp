#include "devices/pci/host_bridge.hpp"

#include <algorithm>

#include "vmm/error.hpp"

namespace ember {

PciHostBridge::PciHostBridge()
    : config_(PciIdentity{.vendor_id = pci::kRedHatVendorId,
                          .device_id = pci::kHostBridgeDeviceId,
                          .revision = 0,
                          .class_code = pci::kHostBridgeClass,
                          .subsystem_vendor_id = pci::kRedHatVendorId,
                          .subsystem_id = pci::kHostBridgeDeviceId}) {}

void PciHostBridge::config_read(uint16_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  config_.read(offset, data);
}

void PciHostBridge::config_write(uint16_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mutex_);
  config_.write(offset, data);
}

void PciHostBridge::assign_bar(uint8_t, uint64_t) {
  throw Error("pci host bridge: has no BARs");
}

void PciHostBridge::enable_memory_decoding() {
  std::lock_guard lock(mutex_);
  config_.set_command(config_.command() | pci::kCommandMemorySpace);
}

void PciHostBridge::bar_read(uint8_t, uint64_t, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), uint8_t{0xff});
}

}  // namespace ember
