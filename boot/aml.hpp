// A small builder for ACPI Machine Language (AML) byte code, enough for ember's DSDT: names,
// scopes, devices, simple methods, packages and resource templates. Every function returns the
// complete encoding of one term, so terms compose by nesting calls:
//
//   aml::scope("\\_SB", {aml::device("COM1", {aml::name("_HID", aml::eisa_id("PNP0501")), ...})})
//
// References: ACPI 6.5 §20 (AML grammar) and §6.4 (resource data types). Functions throw
// ember::Error for input that has no valid encoding (bad names, oversized lengths, min > max).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace ember::boot::aml {

using Bytes = std::vector<std::byte>;

// Little-endian writers shared by the AML and ACPI table code.
void append_u8(Bytes& out, uint8_t value);
void append_u16(Bytes& out, uint16_t value);
void append_u32(Bytes& out, uint32_t value);
void append_u64(Bytes& out, uint64_t value);
void append(Bytes& out, std::span<const std::byte> bytes);

// PkgLength (§20.2.4) for a package whose contents after the PkgLength are payload_size bytes. The
// encoded length counts its own 1-4 bytes, so the form is chosen for payload_size + its own size.
Bytes pkg_length(size_t payload_size);

// NameString (§20.2.2). Segments shorter than four characters are padded with '_'. Accepts an
// optional root '\' or parent '^' prefixes and dot-separated segments: "_SB", "\\_SB.PCI0",
// "^^FOO".
// "\\" alone is the root (RootChar NullName).
Bytes name_string(std::string_view path);

// Data objects (§20.2.3). integer() picks ZeroOp, OneOp, OnesOp or the narrowest
// Byte/Word/DWord/QWord prefix; string() is an ASCII String with its NUL; buffer() is a Buffer
// initialised with bytes.
Bytes integer(uint64_t value);
Bytes string(std::string_view text);
Bytes buffer(std::span<const std::byte> bytes);
Bytes package(const std::vector<Bytes>& elements);  // At most 255 elements.

// EISAID("PNP0501"): three upper-case letters and four hex digits compressed into 32 bits
// (e.g. 0x0105D041). eisa_id() is the AML DWord integer, as iasl emits it.
uint32_t eisa_id_value(std::string_view id);
Bytes eisa_id(std::string_view id);

// Named objects and namespace modifiers (§20.2.5).
Bytes name(std::string_view path, const Bytes& object);
Bytes scope(std::string_view path, const std::vector<Bytes>& terms);
Bytes device(std::string_view path, const std::vector<Bytes>& terms);
Bytes method(std::string_view path, uint8_t argument_count, bool serialized,
             const std::vector<Bytes>& terms);
Bytes return_value(const Bytes& object);  // Return (object)

// Arguments and locals (§20.2.6.1/2), for method bodies.
Bytes arg(unsigned index);    // Arg0..Arg6
Bytes local(unsigned index);  // Local0..Local7

// Resource templates (§6.4): a Buffer of descriptors closed by an EndTag. The EndTag checksum is
// written as 0, which §6.4.2.9 defines as "treat as valid" and which is what iasl emits.
Bytes resource_template(const std::vector<Bytes>& descriptors);

enum class Usage : uint8_t { kProducer, kConsumer };
enum class Trigger : uint8_t { kLevel, kEdge };
enum class Polarity : uint8_t { kActiveHigh, kActiveLow };
enum class Sharing : uint8_t { kExclusive, kShared };
enum class Cacheability : uint8_t { kNonCacheable, kCacheable, kWriteCombining, kPrefetchable };

// IO (Decode16, min, max, alignment, length)                          §6.4.2.5
Bytes io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);
// IRQNoFlags () {irqs...}, ISA IRQs 0-15                                  §6.4.2.1
Bytes irq_no_flags(std::span<const uint8_t> irqs);
// Interrupt (usage, trigger, polarity, sharing) {gsis...}              §6.4.3.6
Bytes interrupt(Usage usage, Trigger trigger, Polarity polarity, Sharing sharing,
                std::span<const uint32_t> gsis);
// Memory32Fixed (ReadWrite|ReadOnly, base, length)                       §6.4.3.4
Bytes memory32_fixed(bool writable, uint32_t base, uint32_t length);

// Address space descriptors (§6.4.3.5) for fixed windows: MinFixed, MaxFixed, PosDecode,
// granularity and translation 0, length = max - min + 1. WordBusNumber (usage, MinFixed, MaxFixed,
// PosDecode, 0, min, max, 0, length)
Bytes word_bus_number(uint16_t min, uint16_t max, Usage usage = Usage::kProducer);
// WordIO (usage, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, length)
Bytes word_io(uint16_t min, uint16_t max, Usage usage = Usage::kProducer);
// DWordMemory / QWordMemory (usage, PosDecode, MinFixed, MaxFixed, cacheability,
//                            ReadWrite|ReadOnly, 0, min, max, 0, length)
Bytes dword_memory(uint32_t min, uint32_t max, Cacheability cacheability, bool writable = true,
                   Usage usage = Usage::kProducer);
Bytes qword_memory(uint64_t min, uint64_t max, Cacheability cacheability, bool writable = true,
                   Usage usage = Usage::kProducer);

}  // namespace ember::boot::aml
