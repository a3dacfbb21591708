// Guest memory for the kernel loader targets: 4 MiB from address 0, made once; the loaders
// overwrite what they use for every input.
#pragma once

#include <cstddef>
#include <span>

#include "tests/fuzz/fuzz_input.hpp"
#include "vmm/guest_memory.hpp"

namespace ember::fuzz {

inline constexpr uint64_t kBootMemorySize = 4ull << 20;

inline const GuestMemory& boot_memory() {
  static const GuestMemory memory({{0, kBootMemorySize}});
  return memory;
}

inline std::span<const std::byte> as_image(std::span<const uint8_t> bytes) {
  return std::as_bytes(bytes);
}

// Whether `part` lies inside `whole` (a span into the input, not a copy).
inline bool inside(std::span<const std::byte> part, std::span<const std::byte> whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

}  // namespace ember::fuzz
