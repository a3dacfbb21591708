#include "devices/legacy/pvpanic.hpp"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "vmm/error.hpp"

namespace ember {
namespace {

class PvpanicTest : public ::testing::Test {
 protected:
  PvpanicTest() : device([this](StopReason reason) { stops.push_back(reason); }) {}

  void write_byte(uint8_t value) {
    const std::array<uint8_t, 1> data{value};
    device.write(0, data);
  }

  std::vector<StopReason> stops;
  Pvpanic device;
};

TEST_F(PvpanicTest, ReadReturnsSupportedEvents) {
  std::array<uint8_t, 1> data{};
  device.read(0, data);
  EXPECT_EQ(data[0], 3);
  std::array<uint8_t, 4> wide{0xaa, 0xaa, 0xaa, 0xaa};
  device.read(0, wide);
  EXPECT_EQ(wide, (std::array<uint8_t, 4>{3, 0, 0, 0}));
  EXPECT_THROW(Pvpanic(nullptr), Error);
}

TEST_F(PvpanicTest, PanickedStopsTheMachine) {
  write_byte(pvpanic::kPanicked);
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0], StopReason::kGuestPanic);
  write_byte(pvpanic::kPanicked | pvpanic::kCrashLoaded);
  EXPECT_EQ(stops.size(), 2u);
}

TEST_F(PvpanicTest, CrashLoadedOnlyLogs) {
  write_byte(pvpanic::kCrashLoaded);
  write_byte(0);
  EXPECT_TRUE(stops.empty());
}

TEST_F(PvpanicTest, OddAccessesAreSafe) {
  device.write(0, std::span<const uint8_t>());
  device.read(0, std::span<uint8_t>());
  const std::array<uint8_t, 8> wide{pvpanic::kCrashLoaded, pvpanic::kPanicked};
  device.write(0, wide);  // First byte only.
  EXPECT_TRUE(stops.empty());
  device.write(1, wide);
  std::array<uint8_t, 2> data{};
  device.read(1, data);
  EXPECT_EQ(data, (std::array<uint8_t, 2>{0xff, 0xff}));
  EXPECT_TRUE(stops.empty());
}

}  // namespace
}  // namespace ember
