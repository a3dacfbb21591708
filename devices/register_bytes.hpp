// The bytes of one register access, as the buses hand them to devices: little-endian (x86), 1 to 8
// bytes. Shared so that every device reads and fills accesses the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ember {

// The value a guest wrote; bytes past the eighth are ignored.
inline uint64_t access_value(std::span<const uint8_t> data) {
  uint64_t value = 0;
  for (size_t i = 0; i < data.size() && i < 8; ++i)
    value |= static_cast<uint64_t>(data[i]) << (8 * i);
  return value;
}

// Fills a read with `value`; bytes past the eighth read as zero.
inline void fill_access(std::span<uint8_t> data, uint64_t value) {
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = i < 8 ? static_cast<uint8_t>(value >> (8 * i)) : 0;
}

}  // namespace ember
