#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <vector>

#include "devices/pci/msix.hpp"
#include "vmm/error.hpp"

namespace ember {
namespace {

// Records what the table tells the sink.
class RecordingSink : public MsiSink {
 public:
  struct Configure {
    uint32_t requester;
    uint16_t vector;
    uint64_t address;
    uint32_t data;
    bool masked;
    bool operator==(const Configure&) const = default;
  };
  void configure(uint32_t requester, uint16_t vector, uint64_t address, uint32_t data,
                 bool masked) override {
    configures.push_back({requester, vector, address, data, masked});
  }
  void trigger(uint32_t requester, uint16_t vector) override {
    triggers.push_back(vector);
    last_requester = requester;
  }
  std::vector<Configure> configures;
  std::vector<uint16_t> triggers;
  uint32_t last_requester = 0;
};

// Message control and entry layout written out from PCI 3.0 §6.8.2 on purpose.
constexpr uint16_t kEnable = 0x8000;
constexpr uint16_t kFunctionMask = 0x4000;

class MsixTest : public ::testing::Test {
 protected:
  MsixTest()
      : sink(std::make_shared<RecordingSink>()),
        config(PciIdentity{.vendor_id = 1, .device_id = 2}),
        table(3, sink) {
    capability = table.add_capability(config, 2, 0x800, 0xc00);
    table.set_requester_id(0x18);
  }

  void set_control(uint16_t value) {
    const std::array<uint8_t, 2> bytes{static_cast<uint8_t>(value),
                                       static_cast<uint8_t>(value >> 8)};
    config.write(capability + 2, bytes);
    table.update_from_config(config);
  }
  void table_write32(uint64_t offset, uint32_t value) {
    std::array<uint8_t, 4> bytes{};
    for (size_t i = 0; i < 4; ++i) bytes[i] = static_cast<uint8_t>(value >> (8 * i));
    table.table_write(offset, bytes);
  }
  uint64_t table_read(uint64_t offset, size_t size) {
    std::array<uint8_t, 8> bytes{};
    table.table_read(offset, std::span(bytes).first(size));
    uint64_t value = 0;
    for (size_t i = 0; i < size; ++i) value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
    return value;
  }
  uint64_t pba() {
    std::array<uint8_t, 8> bytes{};
    table.pba_read(0, bytes);
    uint64_t value = 0;
    for (size_t i = 0; i < 8; ++i) value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
    return value;
  }
  void program(uint16_t vector, uint64_t address, uint32_t data, bool masked) {
    table_write32(vector * 16 + 0, static_cast<uint32_t>(address));
    table_write32(vector * 16 + 4, static_cast<uint32_t>(address >> 32));
    table_write32(vector * 16 + 8, data);
    table_write32(vector * 16 + 12, masked ? 1 : 0);
  }

  std::shared_ptr<RecordingSink> sink;
  PciConfigSpace config;
  MsixTable table;
  uint16_t capability = 0;
};

TEST_F(MsixTest, CapabilityDescribesTableAndPba) {
  EXPECT_EQ(config.load(capability, 1), 0x11u);
  EXPECT_EQ(config.load(capability + 2, 2), 2u);  // Table size N - 1.
  EXPECT_EQ(config.load(capability + 4, 4), 0x800u | 2);
  EXPECT_EQ(config.load(capability + 8, 4), 0xc00u | 2);
  EXPECT_EQ(table.table_size(), 48u);
  EXPECT_EQ(table.pba_size(), 8u);
  // Only Enable and Function Mask are writable.
  set_control(0xffff);
  EXPECT_EQ(config.load(capability + 2, 2), 0xc002u);
  EXPECT_TRUE(table.enabled());
}

TEST_F(MsixTest, EntriesStartMaskedAndReadBackWhatWasWritten) {
  EXPECT_EQ(table_read(12, 4), 1u);
  program(1, 0xfee01000, 0x4041, false);
  EXPECT_EQ(table_read(16, 8), 0xfee01000u);
  EXPECT_EQ(table_read(24, 4), 0x4041u);
  EXPECT_EQ(table_read(28, 4), 0u);
  table_write32(28, 0xfffffffe);  // Reserved control bits stay zero.
  EXPECT_EQ(table_read(28, 4), 0u);
}

TEST_F(MsixTest, NothingIsSentWhileDisabled) {
  program(0, 0xfee00000, 0x30, false);
  EXPECT_FALSE(table.signal(0));
  EXPECT_TRUE(sink->triggers.empty());
  EXPECT_EQ(pba(), 0u);
  ASSERT_FALSE(sink->configures.empty());
  EXPECT_TRUE(sink->configures.back().masked);  // Disabled counts as masked.
}

TEST_F(MsixTest, ConfigureFollowsChangesAndTriggerDelivers) {
  set_control(kEnable);
  sink->configures.clear();
  program(2, 0xfee02000, 0x51, false);
  ASSERT_FALSE(sink->configures.empty());
  EXPECT_EQ(sink->configures.back(), (RecordingSink::Configure{0x18, 2, 0xfee02000, 0x51, false}));
  EXPECT_TRUE(table.signal(2));
  EXPECT_EQ(sink->triggers, std::vector<uint16_t>{2});
  EXPECT_EQ(sink->last_requester, 0x18u);
  EXPECT_FALSE(table.signal(3));  // No such vector.
  EXPECT_FALSE(table.signal(0xffff));
}

TEST_F(MsixTest, MaskedVectorSetsPendingAndFiresOnUnmask) {
  set_control(kEnable);
  program(1, 0xfee00000, 0x41, true);
  EXPECT_TRUE(table.signal(1));
  EXPECT_TRUE(sink->triggers.empty());
  EXPECT_EQ(pba(), 0b010u);
  table_write32(28, 0);  // Unmask.
  EXPECT_EQ(sink->triggers, std::vector<uint16_t>{1});
  EXPECT_EQ(pba(), 0u);
  EXPECT_FALSE(sink->configures.back().masked);
}

TEST_F(MsixTest, FunctionMaskHoldsEveryVector) {
  set_control(kEnable | kFunctionMask);
  program(0, 0xfee00000, 0x40, false);
  program(2, 0xfee00000, 0x42, false);
  table.signal(0);
  table.signal(2);
  EXPECT_TRUE(sink->triggers.empty());
  EXPECT_EQ(pba(), 0b101u);
  set_control(kEnable);
  EXPECT_EQ(sink->triggers, (std::vector<uint16_t>{0, 2}));
  EXPECT_EQ(pba(), 0u);
}

TEST_F(MsixTest, OddAccessesAreIgnored) {
  program(0, 0xfee00000, 0x40, false);
  const std::array<uint8_t, 2> word{0xff, 0xff};
  table.table_write(8, word);                      // WORD: ignored.
  table.table_write(9, std::span(word).first(1));  // Byte: ignored.
  EXPECT_EQ(table_read(8, 4), 0x40u);
  EXPECT_EQ(table_read(8, 2), 0u);  // WORD read: zeros.
  EXPECT_EQ(table_read(4, 8), 0u);  // Misaligned QWORD: zeros.
  table_write32(48, 0x1234);        // Past the table.
  EXPECT_EQ(table_read(48, 4), 0u);
  std::array<uint8_t, 8> bytes{};
  table.pba_read(8, bytes);  // Past the PBA.
  table.pba_read(2, std::span(bytes).first(2));
}

TEST(Msix, RejectsBadSetUps) {
  auto sink = std::make_shared<RecordingSink>();
  EXPECT_THROW(MsixTable(0, sink), Error);
  EXPECT_THROW(MsixTable(2049, sink), Error);
  EXPECT_THROW(MsixTable(1, nullptr), Error);
  MsixTable table(1, sink);
  PciConfigSpace config(PciIdentity{});
  EXPECT_THROW(table.add_capability(config, 6, 0, 0x100), Error);
  EXPECT_THROW(table.add_capability(config, 0, 4, 0x100), Error);
}

}  // namespace
}  // namespace ember
