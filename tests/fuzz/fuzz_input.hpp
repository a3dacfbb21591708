// What every fuzz target shares: a reader over the fuzzer's bytes (little-endian fields, zeros once
// the input runs out, so every input is a valid one) and FUZZ_CHECK for the properties a target
// asserts beyond "no crash": a failed check aborts, which libFuzzer reports like a crash.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

#define FUZZ_CHECK(condition)                                                                 \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (false)

namespace ember::fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size) : bytes_(data, size) {}

  uint8_t u8() { return static_cast<uint8_t>(take(1)); }
  uint16_t u16() { return static_cast<uint16_t>(take(2)); }
  uint32_t u32() { return static_cast<uint32_t>(take(4)); }
  uint64_t u64() { return take(8); }
  // Up to `count` bytes (fewer at the end of the input).
  std::span<const uint8_t> bytes(size_t count) {
    const auto taken = bytes_.first(std::min(count, bytes_.size()));
    bytes_ = bytes_.subspan(taken.size());
    return taken;
  }
  std::span<const uint8_t> rest() { return bytes(bytes_.size()); }
  bool empty() const { return bytes_.empty(); }

 private:
  uint64_t take(size_t count) {
    uint64_t value = 0;
    const auto field = bytes(count);
    for (size_t i = 0; i < field.size(); ++i) value |= uint64_t{field[i]} << (8 * i);
    return value;
  }

  std::span<const uint8_t> bytes_;
};

inline std::string_view as_text(std::span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

}  // namespace ember::fuzz
