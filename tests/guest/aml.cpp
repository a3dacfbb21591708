#include "aml.hpp"

#include "base.hpp"

namespace guest {
namespace {

constexpr uint8_t kAmlBufferOp = 0x11;
constexpr uint8_t kAmlZeroOp = 0x00;
constexpr uint8_t kAmlOneOp = 0x01;
constexpr uint8_t kAmlBytePrefix = 0x0a;
constexpr uint8_t kAmlWordPrefix = 0x0b;
constexpr uint8_t kAmlDWordPrefix = 0x0c;

// PkgLength (20.2.4): lead byte bits 7:6 = count of following bytes; returns the encoding's size.
uint64_t package_length(uint64_t at, uint64_t& length) {
    uint8_t lead = read8(at);
    uint32_t follow = lead >> 6;
    if (follow == 0) {
        length = lead & 0x3f;
        return 1;
    }
    length = lead & 0x0f;
    for (uint32_t i = 0; i < follow; ++i) length |= uint64_t{read8(at + 1 + i)} << (4 + 8 * i);
    return 1 + follow;
}

}  // namespace

bool aml_buffer(uint64_t at, uint64_t end, AmlBuffer& buffer) {
    if (at >= end || read8(at) != kAmlBufferOp) return false;
    uint64_t length;
    uint64_t p = at + 1;
    uint64_t package_end = p;
    p += package_length(p, length);
    package_end += length;
    uint8_t op = read8(p);
    uint64_t size;
    if (op == kAmlZeroOp) size = 0, p += 1;
    else if (op == kAmlOneOp) size = 1, p += 1;
    else if (op == kAmlBytePrefix) size = read8(p + 1), p += 2;
    else if (op == kAmlWordPrefix) size = read16(p + 1), p += 3;
    else if (op == kAmlDWordPrefix) size = read32(p + 1), p += 5;
    else return false;
    if (package_end > end || p > package_end) return false;
    buffer.data = p;
    buffer.size = size < package_end - p ? size : package_end - p;
    return true;
}

}  // namespace guest
