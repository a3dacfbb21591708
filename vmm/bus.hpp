// An address space (port I/O or MMIO) mapping ranges to devices. Filled at setup, read-only after,
// so vCPU threads dispatch without locks.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "devices/bus_device.hpp"

namespace ember {

class Bus {
 public:
  explicit Bus(std::string name) : name_(std::move(name)) {}

  // Throws Error if the range is empty, wraps, or overlaps a range already inserted.
  void insert(uint64_t base, uint64_t length, std::shared_ptr<BusDevice> device);

  // False when no device claims the address: reads then see all ones, writes are dropped.
  bool read(uint64_t address, std::span<uint8_t> data) const;
  bool write(uint64_t address, std::span<const uint8_t> data) const;

 private:
  struct Range {
    uint64_t length;
    std::shared_ptr<BusDevice> device;
  };
  // Finds the range containing [address, address + size); returns nullptr and leaves offset alone if none.
  const Range* find(uint64_t address, uint64_t size, uint64_t& offset) const;

  std::string name_;
  std::map<uint64_t, Range> ranges_;  // Keyed by base address.
};

}  // namespace ember
