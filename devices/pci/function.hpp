// One function on ember's PCI bus 0 as PciRoot sees it: configuration space, memory BARs and the
// accesses into them. Implementations keep their header in a PciConfigSpace and lock their own
// state: every call may come from any vCPU thread, several at once.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "devices/pci/config_space.hpp"

namespace ember {

class PciFunction {
 public:
  virtual ~PciFunction() = default;

  // Configuration space accesses, `offset` < 4096 and offset + data.size() <= 4096, 1 to 4 bytes.
  virtual void config_read(uint16_t offset, std::span<uint8_t> data) = 0;
  virtual void config_write(uint16_t offset, std::span<const uint8_t> data) = 0;

  // The memory BARs the function implements; fixed at construction.
  virtual std::vector<PciBarDefinition> bar_definitions() const = 0;
  // Set-up only: PciRoot places each BAR (naturally aligned, inside its window) and then turns on
  // memory decoding, as firmware would.
  virtual void assign_bar(uint8_t index, uint64_t address) = 0;
  virtual void enable_memory_decoding() = 0;
  // Where the BARs decode now (memory space enabled; addresses as the guest programmed them).
  virtual std::vector<PciBarRegion> decoded_bars() const = 0;

  // Accesses into BAR `index` at `offset` < its size (1, 2, 4 or 8 bytes, as the vCPU made them).
  virtual void bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) = 0;

  // Set-up: the function's requester ID (bus << 8 | device << 3 | function), for MSI messages.
  virtual void set_requester_id(uint16_t requester_id) { (void)requester_id; }
};

}  // namespace ember
