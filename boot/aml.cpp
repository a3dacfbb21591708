#include "boot/aml.hpp"

#include <string>

#include "vmm/error.hpp"

namespace ember::boot::aml {
namespace {

// Opcodes and prefixes, ACPI 6.5 §20.3.
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0a;
constexpr uint8_t kWordPrefix = 0x0b;
constexpr uint8_t kDWordPrefix = 0x0c;
constexpr uint8_t kStringPrefix = 0x0d;
constexpr uint8_t kQWordPrefix = 0x0e;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kMethodOp = 0x14;
constexpr uint8_t kDualNamePrefix = 0x2e;
constexpr uint8_t kMultiNamePrefix = 0x2f;
constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kDeviceOp = 0x82;          // After kExtOpPrefix.
constexpr uint8_t kRootChar = 0x5c;          // '\'
constexpr uint8_t kParentPrefixChar = 0x5e;  // '^'
constexpr uint8_t kNullName = 0x00;
constexpr uint8_t kLocal0Op = 0x60;
constexpr uint8_t kArg0Op = 0x68;
constexpr uint8_t kReturnOp = 0xa4;
constexpr uint8_t kOnesOp = 0xff;

// Resource descriptor tags, §6.4.2 (small) and §6.4.3 (large).
constexpr uint8_t kIrqNoFlagsTag = 0x22;  // Small item 0x04, length 2.
constexpr uint8_t kIoTag = 0x47;          // Small item 0x08, length 7.
constexpr uint8_t kEndTag = 0x79;         // Small item 0x0f, length 1.
constexpr uint8_t kMemory32FixedTag = 0x86;
constexpr uint8_t kDWordAddressTag = 0x87;
constexpr uint8_t kWordAddressTag = 0x88;
constexpr uint8_t kExtendedInterruptTag = 0x89;
constexpr uint8_t kQWordAddressTag = 0x8a;

constexpr uint8_t kIoDecode16 = 0x01;

// Address space descriptor fields, §6.4.3.5.
constexpr uint8_t kResourceTypeMemory = 0;
constexpr uint8_t kResourceTypeIo = 1;
constexpr uint8_t kResourceTypeBusNumber = 2;
constexpr uint8_t kAddressConsumer = 1 << 0;
constexpr uint8_t kAddressMinFixed = 1 << 2;
constexpr uint8_t kAddressMaxFixed = 1 << 3;
constexpr uint8_t kMemoryReadWrite = 1 << 0;
constexpr uint8_t kIoEntireRange = 0x3;

// Extended interrupt flags, §6.4.3.6.
constexpr uint8_t kInterruptConsumer = 1 << 0;
constexpr uint8_t kInterruptEdge = 1 << 1;
constexpr uint8_t kInterruptActiveLow = 1 << 2;
constexpr uint8_t kInterruptShared = 1 << 3;

Bytes concat(const std::vector<Bytes>& parts) {
  Bytes out;
  for (const auto& part : parts) append(out, part);
  return out;
}

// opcode bytes, PkgLength, then contents: the shape of every package-like term.
Bytes with_pkg_length(std::initializer_list<uint8_t> opcode, const Bytes& contents) {
  Bytes out;
  for (uint8_t byte : opcode) append_u8(out, byte);
  append(out, pkg_length(contents.size()));
  append(out, contents);
  return out;
}

bool is_lead_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_name_char(char c) {
  return is_lead_name_char(c) || (c >= '0' && c <= '9');
}

void append_name_seg(Bytes& out, std::string_view segment, std::string_view path) {
  if (segment.empty() || segment.size() > 4 || !is_lead_name_char(segment[0])) {
    throw Error("AML name '" + std::string(path) + "': bad segment '" + std::string(segment) + "'");
  }
  for (char c : segment) {
    if (!is_name_char(c)) {
      throw Error("AML name '" + std::string(path) + "': bad character in '" +
                  std::string(segment) + "'");
    }
    append_u8(out, static_cast<uint8_t>(c));
  }
  for (size_t i = segment.size(); i < 4; ++i) append_u8(out, '_');
}

// Word, DWord and QWord address space descriptors share one layout; only the field width differs.
Bytes address_space(uint8_t tag, unsigned width, uint8_t resource_type, Usage usage,
                    uint8_t type_flags, uint64_t min, uint64_t max) {
  const uint64_t width_max = width == 8 ? ~0ull : (1ull << (8 * width)) - 1;
  if (min > max || max > width_max || (min == 0 && max == width_max)) {
    throw Error("AML address space descriptor: bad range " + std::to_string(min) + "-" +
                std::to_string(max));
  }
  const uint64_t length = max - min + 1;
  Bytes out;
  append_u8(out, tag);
  append_u16(out, static_cast<uint16_t>(3 + 5 * width));  // Bytes after the length field.
  append_u8(out, resource_type);
  uint8_t general_flags = kAddressMinFixed | kAddressMaxFixed;  // PosDecode: bit 1 clear.
  if (usage == Usage::kConsumer) general_flags |= kAddressConsumer;
  append_u8(out, general_flags);
  append_u8(out, type_flags);
  for (uint64_t field : {uint64_t{0}, min, max, uint64_t{0}, length}) {  // _GRA _MIN _MAX _TRA _LEN
    for (unsigned i = 0; i < width; ++i) append_u8(out, static_cast<uint8_t>(field >> (8 * i)));
  }
  return out;
}

uint8_t memory_flags(Cacheability cacheability, bool writable) {
  return static_cast<uint8_t>((static_cast<uint8_t>(cacheability) << 1) |
                              (writable ? kMemoryReadWrite : 0));
}

}  // namespace

void append_u8(Bytes& out, uint8_t value) {
  out.push_back(static_cast<std::byte>(value));
}
void append_u16(Bytes& out, uint16_t value) {
  append_u8(out, static_cast<uint8_t>(value));
  append_u8(out, static_cast<uint8_t>(value >> 8));
}
void append_u32(Bytes& out, uint32_t value) {
  append_u16(out, static_cast<uint16_t>(value));
  append_u16(out, static_cast<uint16_t>(value >> 16));
}
void append_u64(Bytes& out, uint64_t value) {
  append_u32(out, static_cast<uint32_t>(value));
  append_u32(out, static_cast<uint32_t>(value >> 32));
}
void append(Bytes& out, std::span<const std::byte> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

Bytes pkg_length(size_t payload_size) {
  // One byte holds 6 bits of length; each following byte adds 8 bits on top of the lead byte's
  // low nibble (§20.2.4), so n-byte forms cover up to 2^(4 + 8(n-1)) - 1.
  Bytes out;
  if (payload_size + 1 <= 0x3f) {
    append_u8(out, static_cast<uint8_t>(payload_size + 1));
    return out;
  }
  for (size_t extra = 1; extra <= 3; ++extra) {
    const size_t total = payload_size + 1 + extra;
    if (total >= (size_t{1} << (4 + 8 * extra))) continue;
    append_u8(out, static_cast<uint8_t>((extra << 6) | (total & 0xf)));
    for (size_t i = 0; i < extra; ++i) append_u8(out, static_cast<uint8_t>(total >> (4 + 8 * i)));
    return out;
  }
  throw Error("AML package of " + std::to_string(payload_size) + " bytes exceeds PkgLength");
}

Bytes name_string(std::string_view path) {
  Bytes out;
  std::string_view rest = path;
  if (!rest.empty() && rest.front() == '\\') {
    append_u8(out, kRootChar);
    rest.remove_prefix(1);
  } else {
    while (!rest.empty() && rest.front() == '^') {
      append_u8(out, kParentPrefixChar);
      rest.remove_prefix(1);
    }
  }
  if (rest.empty()) {
    if (out.empty()) throw Error("AML name is empty");
    append_u8(out, kNullName);
    return out;
  }
  std::vector<std::string_view> segments;
  for (size_t start = 0;;) {
    const size_t dot = rest.find('.', start);
    segments.push_back(rest.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (segments.size() == 2) {
    append_u8(out, kDualNamePrefix);
  } else if (segments.size() > 2) {
    if (segments.size() > 255) throw Error("AML name '" + std::string(path) + "' is too deep");
    append_u8(out, kMultiNamePrefix);
    append_u8(out, static_cast<uint8_t>(segments.size()));
  }
  for (auto segment : segments) append_name_seg(out, segment, path);
  return out;
}

Bytes integer(uint64_t value) {
  Bytes out;
  if (value == 0) {
    append_u8(out, kZeroOp);
  } else if (value == 1) {
    append_u8(out, kOneOp);
  } else if (value == ~0ull) {
    append_u8(out, kOnesOp);
  } else if (value <= 0xff) {
    append_u8(out, kBytePrefix);
    append_u8(out, static_cast<uint8_t>(value));
  } else if (value <= 0xffff) {
    append_u8(out, kWordPrefix);
    append_u16(out, static_cast<uint16_t>(value));
  } else if (value <= 0xffffffff) {
    append_u8(out, kDWordPrefix);
    append_u32(out, static_cast<uint32_t>(value));
  } else {
    append_u8(out, kQWordPrefix);
    append_u64(out, value);
  }
  return out;
}

Bytes string(std::string_view text) {
  Bytes out;
  append_u8(out, kStringPrefix);
  for (char c : text) {
    const auto byte = static_cast<uint8_t>(c);
    if (byte == 0 || byte > 0x7f) throw Error("AML string: only ASCII 0x01-0x7f is allowed");
    append_u8(out, byte);
  }
  append_u8(out, 0);
  return out;
}

Bytes buffer(std::span<const std::byte> bytes) {
  Bytes contents = integer(bytes.size());
  append(contents, bytes);
  return with_pkg_length({kBufferOp}, contents);
}

Bytes package(const std::vector<Bytes>& elements) {
  if (elements.size() > 255) throw Error("AML Package: more than 255 elements");
  Bytes contents;
  append_u8(contents, static_cast<uint8_t>(elements.size()));
  append(contents, concat(elements));
  return with_pkg_length({kPackageOp}, contents);
}

uint32_t eisa_id_value(std::string_view id) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  bool valid = id.size() == 7;
  for (size_t i = 0; valid && i < 3; ++i) valid = id[i] >= 'A' && id[i] <= 'Z';
  for (size_t i = 3; valid && i < 7; ++i) valid = hex(id[i]) >= 0;
  if (!valid)
    throw Error("EISAID '" + std::string(id) + "': expected three letters and four hex digits");
  // Big-endian on the wire: 5-bit letters (A = 1) in bits 14-0 of the first 16 bits, then the
  // four product digits; read back as a little-endian DWord.
  const uint32_t vendor =
      static_cast<uint32_t>(((id[0] - 0x40) << 10) | ((id[1] - 0x40) << 5) | (id[2] - 0x40));
  const uint32_t product = static_cast<uint32_t>((hex(id[3]) << 12) | (hex(id[4]) << 8) |
                                                 (hex(id[5]) << 4) | hex(id[6]));
  return (vendor >> 8) | ((vendor & 0xff) << 8) | ((product >> 8) << 16) | ((product & 0xff) << 24);
}

Bytes eisa_id(std::string_view id) {
  Bytes out;
  append_u8(out, kDWordPrefix);  // Always a DWord, even when the value would fit a narrower one.
  append_u32(out, eisa_id_value(id));
  return out;
}

Bytes name(std::string_view path, const Bytes& object) {
  Bytes out;
  append_u8(out, kNameOp);
  append(out, name_string(path));
  append(out, object);
  return out;
}

Bytes scope(std::string_view path, const std::vector<Bytes>& terms) {
  Bytes contents = name_string(path);
  append(contents, concat(terms));
  return with_pkg_length({kScopeOp}, contents);
}

Bytes device(std::string_view path, const std::vector<Bytes>& terms) {
  Bytes contents = name_string(path);
  append(contents, concat(terms));
  return with_pkg_length({kExtOpPrefix, kDeviceOp}, contents);
}

Bytes method(std::string_view path, uint8_t argument_count, bool serialized,
             const std::vector<Bytes>& terms) {
  if (argument_count > 7)
    throw Error("AML Method '" + std::string(path) + "': at most 7 arguments");
  Bytes contents = name_string(path);
  // MethodFlags: bits 0-2 ArgCount, bit 3 SerializeFlag, bits 4-7 SyncLevel (0).
  append_u8(contents, static_cast<uint8_t>(argument_count | (serialized ? 1 << 3 : 0)));
  append(contents, concat(terms));
  return with_pkg_length({kMethodOp}, contents);
}

Bytes return_value(const Bytes& object) {
  Bytes out;
  append_u8(out, kReturnOp);
  append(out, object);
  return out;
}

Bytes arg(unsigned index) {
  if (index > 6) throw Error("AML: Arg" + std::to_string(index) + " does not exist");
  return {static_cast<std::byte>(kArg0Op + index)};
}

Bytes local(unsigned index) {
  if (index > 7) throw Error("AML: Local" + std::to_string(index) + " does not exist");
  return {static_cast<std::byte>(kLocal0Op + index)};
}

Bytes resource_template(const std::vector<Bytes>& descriptors) {
  Bytes contents = concat(descriptors);
  append_u8(contents, kEndTag);
  append_u8(contents, 0);  // Checksum 0: "treat as valid" (§6.4.2.9).
  return buffer(contents);
}

Bytes io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length) {
  Bytes out;
  append_u8(out, kIoTag);
  append_u8(out, kIoDecode16);
  append_u16(out, min);
  append_u16(out, max);
  append_u8(out, alignment);
  append_u8(out, length);
  return out;
}

Bytes irq_no_flags(std::span<const uint8_t> irqs) {
  uint16_t mask = 0;
  for (uint8_t irq : irqs) {
    if (irq > 15) throw Error("IRQNoFlags: ISA IRQ " + std::to_string(irq) + " is above 15");
    mask = static_cast<uint16_t>(mask | (1u << irq));
  }
  Bytes out;
  append_u8(out, kIrqNoFlagsTag);
  append_u16(out, mask);
  return out;
}

Bytes interrupt(Usage usage, Trigger trigger, Polarity polarity, Sharing sharing,
                std::span<const uint32_t> gsis) {
  if (gsis.empty() || gsis.size() > 255) throw Error("Interrupt: needs 1 to 255 interrupts");
  uint8_t flags = 0;
  if (usage == Usage::kConsumer) flags |= kInterruptConsumer;
  if (trigger == Trigger::kEdge) flags |= kInterruptEdge;
  if (polarity == Polarity::kActiveLow) flags |= kInterruptActiveLow;
  if (sharing == Sharing::kShared) flags |= kInterruptShared;
  Bytes out;
  append_u8(out, kExtendedInterruptTag);
  append_u16(out, static_cast<uint16_t>(2 + 4 * gsis.size()));
  append_u8(out, flags);
  append_u8(out, static_cast<uint8_t>(gsis.size()));
  for (uint32_t gsi : gsis) append_u32(out, gsi);
  return out;
}

Bytes memory32_fixed(bool writable, uint32_t base, uint32_t length) {
  Bytes out;
  append_u8(out, kMemory32FixedTag);
  append_u16(out, 9);
  append_u8(out, writable ? kMemoryReadWrite : 0);
  append_u32(out, base);
  append_u32(out, length);
  return out;
}

Bytes word_bus_number(uint16_t min, uint16_t max, Usage usage) {
  return address_space(kWordAddressTag, 2, kResourceTypeBusNumber, usage, 0, min, max);
}

Bytes word_io(uint16_t min, uint16_t max, Usage usage) {
  return address_space(kWordAddressTag, 2, kResourceTypeIo, usage, kIoEntireRange, min, max);
}

Bytes dword_memory(uint32_t min, uint32_t max, Cacheability cacheability, bool writable,
                   Usage usage) {
  return address_space(kDWordAddressTag, 4, kResourceTypeMemory, usage,
                       memory_flags(cacheability, writable), min, max);
}

Bytes qword_memory(uint64_t min, uint64_t max, Cacheability cacheability, bool writable,
                   Usage usage) {
  return address_space(kQWordAddressTag, 8, kResourceTypeMemory, usage,
                       memory_flags(cacheability, writable), min, max);
}

}  // namespace ember::boot::aml
