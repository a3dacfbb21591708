#include "devices/legacy/acpi_pm.hpp"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "vmm/error.hpp"

namespace ember {
namespace {

using namespace acpi_pm;

constexpr uint8_t sleep_request(uint8_t type, bool enable) {
  return static_cast<uint8_t>((type << kSleepTypeShift) | (enable ? kSleepEnable : 0));
}

class AcpiPmTest : public ::testing::Test {
 protected:
  AcpiPmTest() : device([this](StopReason reason) { stops.push_back(reason); }) {}

  uint8_t read_byte(uint64_t offset) {
    std::array<uint8_t, 1> data{0xaa};
    device.read(offset, data);
    return data[0];
  }
  void write_byte(uint64_t offset, uint8_t value) {
    const std::array<uint8_t, 1> data{value};
    device.write(offset, data);
  }

  std::vector<StopReason> stops;
  AcpiPm device;
};

TEST_F(AcpiPmTest, OffsetsMatchLayout) {
  EXPECT_EQ(layout::kAcpiPmPort + kSleepControlOffset, layout::kAcpiSleepControlPort);
  EXPECT_EQ(layout::kAcpiPmPort + kSleepStatusOffset, layout::kAcpiSleepStatusPort);
  EXPECT_EQ(layout::kAcpiPmPort + kResetOffset, layout::kAcpiResetPort);
  EXPECT_THROW(AcpiPm(nullptr), Error);
}

TEST_F(AcpiPmTest, S5PowersOff) {
  write_byte(kSleepControlOffset, sleep_request(layout::kAcpiS5SleepType, true));
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0], StopReason::kPowerOff);
}

TEST_F(AcpiPmTest, OtherSleepRequestsDoNothing) {
  write_byte(kSleepControlOffset,
             sleep_request(layout::kAcpiS5SleepType, false));  // Type without SLP_EN.
  write_byte(kSleepControlOffset, sleep_request(3, true));     // S3: unsupported.
  write_byte(kSleepControlOffset, sleep_request(1, true));
  write_byte(kSleepControlOffset, kSleepEnable);
  EXPECT_TRUE(stops.empty());
  EXPECT_EQ(read_byte(kSleepControlOffset) & kSleepEnable, 0);  // SLP_EN reads 0.
}

TEST_F(AcpiPmTest, SleepStatusReadsZeroAndClears) {
  EXPECT_EQ(read_byte(kSleepStatusOffset), 0);
  write_byte(kSleepStatusOffset, kWakeStatus);
  EXPECT_EQ(read_byte(kSleepStatusOffset), 0);
  EXPECT_TRUE(stops.empty());
}

TEST_F(AcpiPmTest, ResetValueResets) {
  write_byte(kResetOffset, static_cast<uint8_t>(layout::kAcpiResetValue + 1));
  EXPECT_TRUE(stops.empty());
  write_byte(kResetOffset, layout::kAcpiResetValue);
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0], StopReason::kReset);
}

TEST_F(AcpiPmTest, WideAndOddAccessesDoNotCrash) {
  std::array<uint8_t, 8> wide{};
  for (uint64_t offset = 0; offset < 8; ++offset) device.read(offset, wide);
  device.read(~0ull, wide);
  EXPECT_EQ(wide[0], 0xff);
  device.read(kSleepStatusOffset, std::span<uint8_t>());
  device.write(kResetOffset, std::span<const uint8_t>());
  const std::array<uint8_t, 4> reset_wide{layout::kAcpiResetValue, 0xff, 0xff, 0xff};
  device.write(7, reset_wide);
  EXPECT_TRUE(stops.empty());
  device.write(kResetOffset, reset_wide);  // First byte is the reset value.
  const std::array<uint8_t, 2> s5_wide{sleep_request(layout::kAcpiS5SleepType, true), 0};
  device.write(kSleepControlOffset, s5_wide);
  EXPECT_EQ(stops, (std::vector<StopReason>{StopReason::kReset, StopReason::kPowerOff}));
}

}  // namespace
}  // namespace ember
