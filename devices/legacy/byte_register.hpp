// How a guest's access of any size maps onto a device made of byte-wide registers (UART, i8042,
// pvpanic, ACPI PM). A guest may use inw/inl on them by mistake: a write applies its first byte, a
// read puts the register value in the first byte and zeroes the rest. Nothing a guest does here can
// fault.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>

namespace ember {

// Fills a read of any size with one register value.
inline void fill_byte_read(std::span<uint8_t> data, uint8_t value) {
  if (data.empty()) return;
  data[0] = value;
  std::fill(data.begin() + 1, data.end(), uint8_t{0});
}

// A read of a port nothing answers: the ISA bus floats high.
inline void fill_unassigned_read(std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), uint8_t{0xff});
}

// The byte a write carries, if it carries any.
inline std::optional<uint8_t> written_byte(std::span<const uint8_t> data) {
  if (data.empty()) return std::nullopt;
  return data[0];
}

}  // namespace ember
