// Shared by the PCI fuzz targets: an MSI sink that checks what the MSI-X table tells it, and the
// virtio-pci functions they put on the bus.
#pragma once

#include <memory>

#include "devices/pci/msi.hpp"
#include "devices/pci/msix.hpp"
#include "devices/virtio/console.hpp"
#include "devices/virtio/pci_transport.hpp"
#include "devices/virtio/rng.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace ember::fuzz {

class CheckingSink : public MsiSink {
 public:
  void configure(uint32_t, uint16_t vector, uint64_t address, uint32_t, bool) override {
    FUZZ_CHECK(vector < pci::kMsixMaxVectors);
    FUZZ_CHECK((address & 3) == 0);  // Bits 1:0 of a message address read as zero.
  }
  void trigger(uint32_t, uint16_t vector) override { FUZZ_CHECK(vector < pci::kMsixMaxVectors); }
};

// virtio-rng, or virtio-console when `console`, on the virtio-pci transport.
inline std::shared_ptr<virtio::VirtioPciTransport> make_virtio_pci(bool console,
                                                                   const GuestMemory& memory,
                                                                   EventLoop& loop) {
  std::unique_ptr<virtio::Device> device;
  if (console) {
    device = std::make_unique<virtio::VirtioConsole>([](std::span<const uint8_t>) {});
  } else {
    device = std::make_unique<virtio::VirtioRng>();
  }
  return std::make_shared<virtio::VirtioPciTransport>(std::move(device), memory, loop,
                                                      std::make_shared<CheckingSink>());
}

}  // namespace ember::fuzz
