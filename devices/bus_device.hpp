// What every device on a PIO or MMIO bus implements. A device sees offsets into the range the bus gave
// it, never absolute addresses. Calls come from vCPU threads (possibly several at once): a device
// protects its own state. Register accesses never block on I/O.
#pragma once

#include <cstdint>
#include <span>

namespace ember {

class BusDevice {
 public:
  virtual ~BusDevice() = default;
  // Fill data (1, 2, 4 or 8 bytes, little-endian) with the register value at offset.
  virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

}  // namespace ember
