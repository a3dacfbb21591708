// Register accesses for the transport and PCI targets: a count, then fixed-size records of
// (u8 operation, offset, le64 value). Bit 0 of the operation: write; bits 1-2: the access size
// (1, 2, 4 or 8 bytes); bits 3-7 are the target's to interpret.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "tests/fuzz/fuzz_input.hpp"

namespace ember::fuzz {

struct RegisterOp {
  uint8_t operation;
  uint64_t offset;
  uint64_t value;

  bool write() const { return (operation & 1) != 0; }
  size_t size() const { return size_t{1} << ((operation >> 1) & 3); }
  unsigned kind() const { return operation >> 3; }
};

// `offset_bytes` bytes of offset per record.
inline std::vector<RegisterOp> read_register_ops(Input& input, size_t offset_bytes) {
  std::vector<RegisterOp> ops(input.u8());
  for (RegisterOp& op : ops) {
    op.operation = input.u8();
    op.offset = offset_bytes == 2 ? input.u16() : input.u32();
    op.value = input.u64();
  }
  return ops;
}

// Performs `op` on a device with read(offset, span) / write(offset, span).
template <typename Device>
void perform(Device& device, uint64_t offset, const RegisterOp& op) {
  uint8_t bytes[8];
  const auto access = std::span(bytes, op.size());
  if (op.write()) {
    for (size_t i = 0; i < access.size(); ++i) access[i] = static_cast<uint8_t>(op.value >> (8 * i));
    device.write(offset, access);
  } else {
    device.read(offset, access);
  }
}

}  // namespace ember::fuzz
