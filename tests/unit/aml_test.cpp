#include "boot/aml.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "vmm/error.hpp"

namespace ember::boot::aml {
namespace {

// Expected encodings below were produced by iasl 20200925 (`iasl -tc` on the equivalent ASL) unless
// a comment says they come from the spec's grammar directly.
Bytes bytes(std::initializer_list<int> values) {
  Bytes out;
  for (int value : values) out.push_back(static_cast<std::byte>(value));
  return out;
}

TEST(AmlPkgLength, OneByteUpTo63) {
  EXPECT_EQ(pkg_length(0), bytes({0x01}));
  EXPECT_EQ(pkg_length(62), bytes({0x3f}));  // 62 + 1 = 63, the largest one-byte length.
}

TEST(AmlPkgLength, TwoBytesFrom64To4095) {
  // 63 payload bytes + 2 length bytes = 65 = 0x41: lead byte 0x40 | low nibble, then 0x41 >> 4.
  EXPECT_EQ(pkg_length(63), bytes({0x41, 0x04}));
  EXPECT_EQ(pkg_length(4093), bytes({0x4f, 0xff}));  // 4093 + 2 = 4095.
}

TEST(AmlPkgLength, ThreeBytesFrom4096To1MiB) {
  EXPECT_EQ(pkg_length(4094), bytes({0x81, 0x00, 0x01}));     // 4094 + 3 = 4097 = 0x1001.
  EXPECT_EQ(pkg_length(0xffffc), bytes({0x8f, 0xff, 0xff}));  // 0xfffff, the largest 3-byte one.
}

TEST(AmlPkgLength, FourBytesFrom1MiB) {
  EXPECT_EQ(pkg_length(0xffffd), bytes({0xc1, 0x00, 0x00, 0x01}));  // 0x100001.
  EXPECT_EQ(pkg_length(0xffffffb), bytes({0xcf, 0xff, 0xff, 0xff}));
  EXPECT_THROW(pkg_length(0xffffffc), Error);
}

TEST(AmlPkgLength, BufferAroundTheBoundaryCountsItsHeader) {
  // Buffer(n): PkgLength covers the BufferSize integer and the data.
  const Bytes small(60);  // 0x0a 0x3c + 60 bytes = 62 -> one-byte PkgLength 63.
  const Bytes large(61);  // 63 bytes of contents -> two-byte PkgLength 65.
  EXPECT_EQ(buffer(small)[1], std::byte{0x3f});
  EXPECT_EQ(buffer(small).size(), 64u);
  const Bytes encoded = buffer(large);
  EXPECT_EQ(encoded[1], std::byte{0x41});
  EXPECT_EQ(encoded[2], std::byte{0x04});
  EXPECT_EQ(encoded.size(), 66u);
}

TEST(AmlInteger, ConstantsAndNarrowestPrefix) {
  EXPECT_EQ(integer(0), bytes({0x00}));
  EXPECT_EQ(integer(1), bytes({0x01}));
  EXPECT_EQ(integer(~0ull), bytes({0xff}));
  EXPECT_EQ(integer(2), bytes({0x0a, 0x02}));
  EXPECT_EQ(integer(0xff), bytes({0x0a, 0xff}));
  EXPECT_EQ(integer(0x100), bytes({0x0b, 0x00, 0x01}));
  EXPECT_EQ(integer(0xffff), bytes({0x0b, 0xff, 0xff}));
  EXPECT_EQ(integer(0x12345), bytes({0x0c, 0x45, 0x23, 0x01, 0x00}));
  EXPECT_EQ(integer(0xffffffff), bytes({0x0c, 0xff, 0xff, 0xff, 0xff}));
  EXPECT_EQ(integer(0x123456789), bytes({0x0e, 0x89, 0x67, 0x45, 0x23, 0x01, 0x00, 0x00, 0x00}));
}

TEST(AmlName, Segments) {
  EXPECT_EQ(name_string("_SB"), bytes({'_', 'S', 'B', '_'}));
  EXPECT_EQ(name_string("COM1"), bytes({'C', 'O', 'M', '1'}));
  EXPECT_EQ(name_string("\\_SB"), bytes({'\\', '_', 'S', 'B', '_'}));
  EXPECT_EQ(name_string("\\_SB.PCI0"), bytes({'\\', 0x2e, '_', 'S', 'B', '_', 'P', 'C', 'I', '0'}));
  EXPECT_EQ(name_string("_SB.PCI0.EFGH"),
            bytes({0x2f, 3, '_', 'S', 'B', '_', 'P', 'C', 'I', '0', 'E', 'F', 'G', 'H'}));
  EXPECT_EQ(name_string("^^FOO"), bytes({'^', '^', 'F', 'O', 'O', '_'}));
  EXPECT_EQ(name_string("\\"), bytes({'\\', 0x00}));
}

TEST(AmlName, RejectsInvalidNames) {
  for (const char* bad : {"", "1ABC", "ABCDE", "abc", "A..B", "\\_SB.", "A-B", "\\^A"}) {
    EXPECT_THROW(name_string(bad), Error) << bad;
  }
}

TEST(AmlData, StringBufferPackage) {
  EXPECT_EQ(string("QEMU0001"), bytes({0x0d, 'Q', 'E', 'M', 'U', '0', '0', '0', '1', 0x00}));
  EXPECT_THROW(string("caf\xc3\xa9"), Error);
  EXPECT_EQ(buffer(bytes({1, 2, 3})), bytes({0x11, 0x06, 0x0a, 0x03, 0x01, 0x02, 0x03}));
  EXPECT_EQ(package({integer(5), integer(0), integer(0), integer(0)}),
            bytes({0x12, 0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00}));
  EXPECT_THROW(package(std::vector<Bytes>(256, integer(0))), Error);
}

TEST(AmlEisaId, Compresses) {
  EXPECT_EQ(eisa_id_value("PNP0501"), 0x0105d041u);
  EXPECT_EQ(eisa_id_value("PNP0A08"), 0x080ad041u);
  EXPECT_EQ(eisa_id("PNP0501"), bytes({0x0c, 0x41, 0xd0, 0x05, 0x01}));
  for (const char* bad : {"PNP050", "PNP05011", "pnp0501", "PNP05G1", "1NP0501"}) {
    EXPECT_THROW(eisa_id_value(bad), Error) << bad;
  }
}

TEST(AmlNamespace, NameScopeDeviceMethod) {
  // Scope (\_SB) { Device (PCI0) { Name (ABCD, One) } }, as iasl emits it at the root.
  EXPECT_EQ(scope("_SB", {device("PCI0", {name("ABCD", integer(1))})}),
            bytes({0x10, 0x12, '_', 'S', 'B', '_', 0x5b, 0x82, 0x0b, 'P', 'C', 'I', '0', 0x08, 'A',
                   'B', 'C', 'D', 0x01}));
  // Method (M000, 0, NotSerialized) { Return (0x0F) }
  EXPECT_EQ(method("M000", 0, false, {return_value(integer(0x0f))}),
            bytes({0x14, 0x09, 'M', '0', '0', '0', 0x00, 0xa4, 0x0a, 0x0f}));
  // Method (M001, 2, Serialized) { Return (One) }
  EXPECT_EQ(method("M001", 2, true, {return_value(integer(1))}),
            bytes({0x14, 0x08, 'M', '0', '0', '1', 0x0a, 0xa4, 0x01}));
  EXPECT_THROW(method("M002", 8, false, {}), Error);
  EXPECT_EQ(arg(0), bytes({0x68}));
  EXPECT_EQ(local(7), bytes({0x67}));
  EXPECT_THROW(arg(7), Error);
}

TEST(AmlResource, IoAndIrqNoFlags) {
  // ResourceTemplate () { IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08) IRQNoFlags () {4} }
  const std::array<uint8_t, 1> irq4{4};
  EXPECT_EQ(resource_template({io(0x3f8, 0x3f8, 0x00, 0x08), irq_no_flags(irq4)}),
            bytes({0x11, 0x10, 0x0a, 0x0d, 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x00, 0x08, 0x22,
                   0x10, 0x00, 0x79, 0x00}));
  // ResourceTemplate () { IO (Decode16, 0x0505, 0x0505, 0x01, 0x01) }
  EXPECT_EQ(
      resource_template({io(0x505, 0x505, 0x01, 0x01)}),
      bytes({0x11, 0x0d, 0x0a, 0x0a, 0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01, 0x79, 0x00}));
  const std::array<uint8_t, 1> irq16{16};
  EXPECT_THROW(irq_no_flags(irq16), Error);
}

TEST(AmlResource, ExtendedInterrupt) {
  // Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) {5}
  const std::array<uint32_t, 1> gsi5{5};
  EXPECT_EQ(interrupt(Usage::kConsumer, Trigger::kLevel, Polarity::kActiveHigh, Sharing::kExclusive,
                      gsi5),
            bytes({0x89, 0x06, 0x00, 0x01, 0x01, 0x05, 0x00, 0x00, 0x00}));
  // Interrupt (ResourceConsumer, Edge, ActiveLow, Shared) {5, 40}
  const std::array<uint32_t, 2> two{5, 40};
  EXPECT_EQ(
      interrupt(Usage::kConsumer, Trigger::kEdge, Polarity::kActiveLow, Sharing::kShared, two),
      bytes({0x89, 0x0a, 0x00, 0x0f, 0x02, 0x05, 0x00, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00}));
  EXPECT_THROW(
      interrupt(Usage::kConsumer, Trigger::kEdge, Polarity::kActiveHigh, Sharing::kExclusive, {}),
      Error);
}

TEST(AmlResource, Memory32Fixed) {
  // Memory32Fixed (ReadWrite, 0xD0000000, 0x00000200)
  EXPECT_EQ(memory32_fixed(true, 0xd0000000, 0x200),
            bytes({0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x02, 0x00, 0x00}));
}

TEST(AmlResource, WordBusNumberAndWordIo) {
  // WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
  //                0x0000, 0x0000, 0x00FF, 0x0000, 0x0100)
  EXPECT_EQ(word_bus_number(0, 0xff), bytes({0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0x00, 0x00, 0x00,
                                             0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x01}));
  // WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
  //         0x0000, 0x0D00, 0xFFFF, 0x0000, 0xF300)
  EXPECT_EQ(word_io(0x0d00, 0xffff), bytes({0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0x00, 0x00, 0x00,
                                            0x0d, 0xff, 0xff, 0x00, 0x00, 0x00, 0xf3}));
  EXPECT_THROW(word_io(0x10, 0x0f), Error);   // min > max.
  EXPECT_THROW(word_io(0x0, 0xffff), Error);  // Length 0x10000 does not fit a word.
}

TEST(AmlResource, DWordAndQWordMemory) {
  // DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
  //              0x00000000, 0xC0000000, 0xFEBFFFFF, 0x00000000, 0x3EC00000)
  EXPECT_EQ(dword_memory(0xc0000000, 0xfebfffff, Cacheability::kNonCacheable),
            bytes({0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                   0xc0, 0xff, 0xff, 0xbf, 0xfe, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x3e}));
  // QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Prefetchable, ReadWrite,
  //              0x0, 0x8000000000, 0xFFFFFFFFFF, 0x0, 0x8000000000)
  Bytes expected = bytes({0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x07});
  for (uint64_t field : {0x0ull, 0x8000000000ull, 0xffffffffffull, 0x0ull, 0x8000000000ull}) {
    append_u64(expected, field);
  }
  EXPECT_EQ(qword_memory(0x8000000000, 0xffffffffff, Cacheability::kPrefetchable), expected);
  EXPECT_THROW(qword_memory(0, ~0ull, Cacheability::kCacheable), Error);
}

}  // namespace
}  // namespace ember::boot::aml
