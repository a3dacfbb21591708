#include "vmm/bus.hpp"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "vmm/error.hpp"

namespace ember {
namespace {

class RecordingDevice : public BusDevice {
 public:
  void read(uint64_t offset, std::span<uint8_t> data) override {
    last_offset = offset;
    for (auto& byte : data) byte = static_cast<uint8_t>(offset);
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    last_offset = offset;
    written.assign(data.begin(), data.end());
  }
  uint64_t last_offset = ~0ull;
  std::vector<uint8_t> written;
};

TEST(Bus, DispatchesWithOffsets) {
  Bus bus("test");
  auto device = std::make_shared<RecordingDevice>();
  bus.insert(0x3f8, 8, device);
  std::array<uint8_t, 1> data{};
  EXPECT_TRUE(bus.read(0x3fd, data));
  EXPECT_EQ(device->last_offset, 5u);
  EXPECT_EQ(data[0], 5);
  const std::array<uint8_t, 2> out{1, 2};
  EXPECT_TRUE(bus.write(0x3fe, out));
  EXPECT_EQ(device->last_offset, 6u);
  EXPECT_EQ(device->written, (std::vector<uint8_t>{1, 2}));
}

TEST(Bus, UnclaimedAndStraddlingAccesses) {
  Bus bus("test");
  auto device = std::make_shared<RecordingDevice>();
  bus.insert(0x1000, 0x10, device);
  std::array<uint8_t, 4> data{};
  EXPECT_FALSE(bus.read(0x0fff, data));  // Starts before the range.
  EXPECT_EQ(data[0], 0xff);
  EXPECT_FALSE(bus.read(0x100e, data));  // Runs past the end.
  EXPECT_FALSE(bus.write(0x2000, data));
  EXPECT_TRUE(bus.read(0x100c, data));   // Last four bytes.
}

TEST(Bus, RejectsOverlapsAndEmptyRanges) {
  Bus bus("test");
  auto device = std::make_shared<RecordingDevice>();
  bus.insert(0x100, 0x10, device);
  EXPECT_THROW(bus.insert(0x108, 0x10, device), Error);
  EXPECT_THROW(bus.insert(0xf8, 0x10, device), Error);
  EXPECT_THROW(bus.insert(0x200, 0, device), Error);
  EXPECT_THROW(bus.insert(~0ull - 1, 4, device), Error);
  EXPECT_NO_THROW(bus.insert(0x110, 0x10, device));  // Adjacent is fine.
}

}  // namespace
}  // namespace ember
