// Just enough AML (ACPI 6.5 chapter 20) to read resource templates out of the DSDT without an interpreter:
// Name(_CRS, Buffer(){...}) and the resource descriptors in it (19.6).
#pragma once

#include <stdint.h>

namespace guest {

constexpr uint8_t kAmlNameOp = 0x08;
constexpr uint8_t kAmlStringPrefix = 0x0d;

struct AmlBuffer {
    uint64_t data = 0;  // first byte of the buffer's contents
    uint64_t size = 0;
};

// Decodes a DefBuffer (BufferOp PkgLength BufferSize ByteList) at `at` (the BufferOp); false if malformed.
bool aml_buffer(uint64_t at, uint64_t end, AmlBuffer& buffer);

}  // namespace guest
