// Register accesses for the transport and PCI targets: a count, then fixed-size records of
// (u8 operation, offset, le64 value). Bit 0 of the operation: write; bits 1-2: the access size
// (1, 2, 4 or 8 bytes); bits 3-7 are the target's to interpret.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "tests/fuzz/fuzz_input.hpp"

namespace ember::fuzz {

struct RegisterAccess {
  uint8_t operation;
  uint64_t offset;
  uint64_t value;

  bool write() const { return (operation & 1) != 0; }
  size_t size() const { return size_t{1} << ((operation >> 1) & 3); }
  unsigned kind() const { return operation >> 3; }
};

// `offset_bytes` bytes of offset per record.
inline std::vector<RegisterAccess> read_register_accesses(Input& input, size_t offset_bytes) {
  std::vector<RegisterAccess> accesses(input.u8());
  for (RegisterAccess& access : accesses) {
    access.operation = input.u8();
    access.offset = offset_bytes == 2 ? input.u16() : input.u32();
    access.value = input.u64();
  }
  return accesses;
}

// Makes `access` on a device with read(offset, span) / write(offset, span), at `offset` (which the
// target has brought inside the device's range).
template <typename Device>
void perform(Device& device, uint64_t offset, const RegisterAccess& access) {
  uint8_t bytes[8];
  const auto data = std::span(bytes, access.size());
  if (access.write()) {
    for (size_t i = 0; i < data.size(); ++i)
      data[i] = static_cast<uint8_t>(access.value >> (8 * i));
    device.write(offset, data);
  } else {
    device.read(offset, data);
  }
}

}  // namespace ember::fuzz
