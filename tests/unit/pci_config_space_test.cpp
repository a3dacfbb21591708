#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "devices/pci/config_space.hpp"
#include "vmm/error.hpp"

namespace ember {
namespace {

// Offsets written out from the PCI Local Bus 3.0 type 0 header (§6.1) on purpose.
constexpr uint16_t kVendor = 0x00;
constexpr uint16_t kCommand = 0x04;
constexpr uint16_t kStatus = 0x06;
constexpr uint16_t kClass = 0x08;  // Revision in the low byte.
constexpr uint16_t kHeader = 0x0c;
constexpr uint16_t kBar0 = 0x10;
constexpr uint16_t kSubsystem = 0x2c;
constexpr uint16_t kCapPointer = 0x34;
constexpr uint16_t kInterrupt = 0x3c;

uint32_t read(const PciConfigSpace& config, uint16_t offset, size_t size = 4) {
  std::array<uint8_t, 4> bytes{};
  config.read(offset, std::span(bytes).first(size));
  uint32_t value = 0;
  for (size_t i = 0; i < size; ++i) value |= static_cast<uint32_t>(bytes[i]) << (8 * i);
  return value;
}

void write(PciConfigSpace& config, uint16_t offset, uint32_t value, size_t size = 4) {
  std::array<uint8_t, 4> bytes{};
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(value >> (8 * i));
  config.write(offset, std::span<const uint8_t>(bytes).first(size));
}

PciConfigSpace make_config() {
  return PciConfigSpace(PciIdentity{.vendor_id = 0x1234,
                                    .device_id = 0x5678,
                                    .revision = 0x9a,
                                    .class_code = 0x020000,
                                    .subsystem_vendor_id = 0xabcd,
                                    .subsystem_id = 0xef01});
}

TEST(PciConfigSpace, HeaderHoldsTheIdentityAndIsReadOnly) {
  PciConfigSpace config = make_config();
  EXPECT_EQ(read(config, kVendor), 0x56781234u);
  EXPECT_EQ(read(config, kClass), 0x0200009au);
  EXPECT_EQ(read(config, kHeader + 2, 1), 0u);  // Type 0, single function.
  EXPECT_EQ(read(config, kSubsystem), 0xef01abcdu);
  EXPECT_EQ(read(config, kCapPointer, 1), 0u);
  EXPECT_EQ(read(config, kStatus, 2) & 0x10, 0u);  // No capabilities yet.
  write(config, kVendor, 0xffffffff);
  write(config, kClass, 0);
  EXPECT_EQ(read(config, kVendor), 0x56781234u);
  EXPECT_EQ(read(config, kClass), 0x0200009au);
  // Interrupt line is scratch; the pin stays 0 (no INTx).
  write(config, kInterrupt, 0xffffffff);
  EXPECT_EQ(read(config, kInterrupt), 0x000000ffu);
}

TEST(PciConfigSpace, CommandKeepsOnlyImplementedBits) {
  PciConfigSpace config = make_config();
  write(config, kCommand, 0xffff, 2);
  EXPECT_EQ(read(config, kCommand, 2), 0x0406u);  // Memory, bus master, INTx disable; no I/O.
  EXPECT_TRUE(config.memory_enabled());
  write(config, kCommand, 0, 2);
  EXPECT_FALSE(config.memory_enabled());
}

TEST(PciConfigSpace, ThirtyTwoBitBarSizesAndDecodesOnlyWithMemoryEnabled) {
  PciConfigSpace config = make_config();
  config.add_memory_bar({.index = 1, .size = 0x1000, .is_64bit = false, .prefetchable = true});
  EXPECT_EQ(read(config, kBar0 + 4), 0x8u);  // Prefetchable, 32-bit, not placed.
  write(config, kBar0 + 4, 0xffffffff);
  EXPECT_EQ(read(config, kBar0 + 4), 0xfffff008u);  // Size 4 KiB.
  write(config, kBar0 + 4, 0xc0001234);
  EXPECT_EQ(read(config, kBar0 + 4), 0xc0001008u);  // Low bits stay zero.
  EXPECT_EQ(config.bar_address(1), 0xc0001000u);
  EXPECT_TRUE(config.decoded_bars().empty());
  write(config, kCommand, 0x2, 2);
  const auto decoded = config.decoded_bars();
  ASSERT_EQ(decoded.size(), 1u);
  EXPECT_EQ(decoded[0], (PciBarRegion{1, 0xc0001000, 0x1000}));
  // Unimplemented BARs read zero and ignore writes.
  write(config, kBar0, 0xffffffff);
  EXPECT_EQ(read(config, kBar0), 0u);
}

TEST(PciConfigSpace, SixtyFourBitBarSizesBothHalves) {
  PciConfigSpace config = make_config();
  config.add_memory_bar({.index = 2, .size = 0x4000, .is_64bit = true, .prefetchable = false});
  EXPECT_EQ(read(config, kBar0 + 8), 0x4u);
  write(config, kBar0 + 8, 0xffffffff);
  write(config, kBar0 + 12, 0xffffffff);
  EXPECT_EQ(read(config, kBar0 + 8), 0xffffc004u);
  EXPECT_EQ(read(config, kBar0 + 12), 0xffffffffu);
  config.set_bar_address(2, 0x1'2345'8000);
  EXPECT_EQ(read(config, kBar0 + 8), 0x23458004u);
  EXPECT_EQ(read(config, kBar0 + 12), 0x1u);
  EXPECT_EQ(config.bar_address(2), 0x1'2345'8000u);
  EXPECT_THROW(config.set_bar_address(2, 0x1000), Error);  // Not naturally aligned.
  EXPECT_THROW(config.set_bar_address(3, 0), Error);       // Upper half, not a BAR.
}

TEST(PciConfigSpace, RejectsBadBars) {
  PciConfigSpace config = make_config();
  EXPECT_THROW(config.add_memory_bar({.index = 5, .size = 0x1000, .is_64bit = true}), Error);
  EXPECT_THROW(config.add_memory_bar({.index = 0, .size = 0x1800}), Error);
  EXPECT_THROW(config.add_memory_bar({.index = 6, .size = 0x1000}), Error);
  config.add_memory_bar({.index = 0, .size = 0x1000, .is_64bit = true});
  EXPECT_THROW(config.add_memory_bar({.index = 1, .size = 0x1000}), Error);
}

TEST(PciConfigSpace, CapabilitiesFormALinkedListWithTheirOwnWriteMasks) {
  PciConfigSpace config = make_config();
  const std::array<uint8_t, 3> first{1, 2, 3};
  const std::array<uint8_t, 6> second{4, 5, 6, 7, 8, 9};
  const std::array<uint8_t, 6> second_writable{0, 0xff, 0, 0, 0, 0x0f};
  const uint16_t a = config.add_capability(0x09, first);
  const uint16_t b = config.add_capability(0x11, second, second_writable);
  EXPECT_EQ(a, 0x40u);
  EXPECT_EQ(b, 0x48u);  // 0x40 + 5 bytes, dword aligned.
  EXPECT_NE(read(config, kStatus, 2) & 0x10, 0u);
  EXPECT_EQ(read(config, kCapPointer, 1), a);
  EXPECT_EQ(read(config, a, 2), 0x4809u);  // ID, next.
  EXPECT_EQ(read(config, b, 2), 0x0011u);  // Last.
  EXPECT_EQ(read(config, a + 2, 1), 1u);
  write(config, b + 2, 0xffffffff);
  write(config, b + 6, 0xffff, 2);
  EXPECT_EQ(read(config, b + 2), 0x0706ff04u);
  EXPECT_EQ(read(config, b + 6, 2), 0x0f08u);
  write(config, a, 0xffffffff);  // ID, next and read-only body stay.
  EXPECT_EQ(read(config, a), 0x02014809u);
}

TEST(PciConfigSpace, CapabilitiesMustFitTheFirst256Bytes) {
  PciConfigSpace config = make_config();
  const std::vector<uint8_t> body(60, 0);
  for (int i = 0; i < 3; ++i) config.add_capability(0x09, body);
  EXPECT_THROW(config.add_capability(0x09, body), Error);
  const std::array<uint8_t, 2> mask{};
  EXPECT_THROW(config.add_capability(0x09, std::span<const uint8_t>(body).first(3), mask), Error);
}

TEST(PciConfigSpace, AccessesPastTheEndReadOnesAndWriteNothing) {
  PciConfigSpace config = make_config();
  EXPECT_EQ(read(config, 0xffe, 4), 0xffff0000u);
  write(config, 0xffe, 0x12345678);
  EXPECT_EQ(read(config, 0x100, 4), 0u);  // Extended space is empty.
}

}  // namespace
}  // namespace ember
