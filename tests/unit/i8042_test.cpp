#include "devices/legacy/i8042.hpp"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "vmm/error.hpp"

namespace ember {
namespace {

using namespace i8042;

class I8042Test : public ::testing::Test {
 protected:
  I8042Test() : controller([this](StopReason reason) { stops.push_back(reason); }) {}

  uint8_t read_byte(uint64_t offset) {
    std::array<uint8_t, 1> data{0xaa};
    controller.read(offset, data);
    return data[0];
  }
  void write_byte(uint64_t offset, uint8_t value) {
    const std::array<uint8_t, 1> data{value};
    controller.write(offset, data);
  }
  uint8_t status() { return read_byte(kStatusCommandOffset); }
  void command(uint8_t value) { write_byte(kStatusCommandOffset, value); }

  std::vector<StopReason> stops;
  I8042 controller;
};

TEST_F(I8042Test, OffsetsMatchLayout) {
  EXPECT_EQ(layout::kI8042DataPort + kDataOffset, 0x60u);
  EXPECT_EQ(layout::kI8042DataPort + kStatusCommandOffset, 0x64u);
  EXPECT_THROW(I8042(nullptr), Error);
}

TEST_F(I8042Test, PulseResetCallsHandler) {
  EXPECT_EQ(status() & kStatusInputFull, 0);  // Linux's kb_wait() would spin otherwise.
  command(kCommandPulseResetLine);
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0], StopReason::kReset);
  command(kCommandPulseResetLine);  // A guest may try again; just report again.
  EXPECT_EQ(stops.size(), 2u);
  command(0xff);  // Pulses no line.
  EXPECT_EQ(stops.size(), 2u);
}

TEST_F(I8042Test, OutputPortResetLine) {
  command(kCommandWriteOutputPort);
  write_byte(kDataOffset, kOutputPortResetLine | kOutputPortA20);
  EXPECT_TRUE(stops.empty());
  command(kCommandReadOutputPort);
  EXPECT_EQ(read_byte(kDataOffset), kOutputPortResetLine | kOutputPortA20);
  command(kCommandWriteOutputPort);
  write_byte(kDataOffset, kOutputPortA20);  // Bit 0 clear: reset.
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0], StopReason::kReset);
}

TEST_F(I8042Test, SelfTestAndStatusOutputFull) {
  EXPECT_EQ(status() & kStatusOutputFull, 0);
  command(kCommandSelfTest);
  EXPECT_EQ(status() & kStatusOutputFull, kStatusOutputFull);
  EXPECT_EQ(status() & kStatusSystemFlag, kStatusSystemFlag);
  EXPECT_EQ(read_byte(kDataOffset), kSelfTestPassed);
  EXPECT_EQ(status() & kStatusOutputFull, 0);
  command(kCommandKeyboardTest);
  EXPECT_EQ(read_byte(kDataOffset), kInterfaceTestPassed);
}

TEST_F(I8042Test, CommandByteRoundTripAndPortEnables) {
  command(kCommandWriteCtr);
  write_byte(kDataOffset, 0x47);
  EXPECT_TRUE(stops.empty());
  command(kCommandReadCtr);
  EXPECT_EQ(read_byte(kDataOffset), 0x47);
  command(kCommandDisableAux);
  command(kCommandDisableKeyboard);
  command(kCommandReadCtr);
  EXPECT_EQ(read_byte(kDataOffset), 0x47 | kCtrAuxDisabled | kCtrKeyboardDisabled);
  command(kCommandEnableAux);
  command(kCommandEnableKeyboard);
  command(kCommandReadCtr);
  EXPECT_EQ(read_byte(kDataOffset), 0x47);
}

TEST_F(I8042Test, AbsentDevicesAnswerAtOnce) {
  // Linux's aux probe: the loopback parameter comes back as a keyboard timeout, not aux data...
  command(0xd3);
  write_byte(kDataOffset, 0x5a);
  EXPECT_EQ(status() & (kStatusOutputFull | kStatusAuxData | kStatusTimeout),
            kStatusOutputFull | kStatusTimeout);
  // ...and the interface test, sent without reading that, answers a stuck clock line.
  command(kCommandAuxTest);
  EXPECT_EQ(status() & kStatusTimeout, 0);
  EXPECT_EQ(read_byte(kDataOffset), kInterfaceClockStuckHigh);
  EXPECT_EQ(status() & kStatusOutputFull, 0);
  EXPECT_TRUE(stops.empty());
}

TEST_F(I8042Test, OtherOffsetsFloatAndWideAccessesAreSafe) {
  EXPECT_EQ(read_byte(1), 0xff);
  EXPECT_EQ(read_byte(3), 0xff);
  write_byte(2, kCommandPulseResetLine);
  EXPECT_TRUE(stops.empty());
  std::array<uint8_t, 4> wide{};
  command(kCommandSelfTest);
  controller.read(kDataOffset, wide);
  EXPECT_EQ(wide, (std::array<uint8_t, 4>{kSelfTestPassed, 0, 0, 0}));
  const std::array<uint8_t, 2> two{kCommandPulseResetLine, 0};
  controller.write(kStatusCommandOffset, two);
  EXPECT_EQ(stops.size(), 1u);
  controller.write(kStatusCommandOffset, std::span<const uint8_t>());
  controller.read(kStatusCommandOffset, std::span<uint8_t>());
  EXPECT_EQ(stops.size(), 1u);
}

}  // namespace
}  // namespace ember
