// Little-endian loads and stores on byte spans, for boot-protocol structures the guest reads.
// Callers check bounds first and report them as setup errors; these helpers only guard against
// their bugs.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>

namespace ember::boot {

template <std::unsigned_integral T>
T load_le(std::span<const std::byte> bytes, size_t offset) {
  if (offset > bytes.size() || bytes.size() - offset < sizeof(T))
    throw std::out_of_range("load_le past the end of a buffer");
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    value |= static_cast<T>(static_cast<T>(bytes[offset + i]) << (8 * i));
  return value;
}

template <std::unsigned_integral T>
void store_le(std::span<std::byte> bytes, size_t offset, T value) {
  if (offset > bytes.size() || bytes.size() - offset < sizeof(T))
    throw std::out_of_range("store_le past the end of a buffer");
  for (size_t i = 0; i < sizeof(T); ++i)
    bytes[offset + i] = static_cast<std::byte>((value >> (8 * i)) & 0xff);
}

}  // namespace ember::boot
