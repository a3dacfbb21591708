// Enough of the 8042 PS/2 controller for Linux: the reset line (reboot=k pulses it with command
// 0xFE; command 0xD1 can clear it too) and the commands the i8042 driver's probe sends, answered at
// once so that probing never waits out a timeout. No keyboard or mouse is attached and no IRQ is
// raised. Data for the absent keyboard (including the parameter of commands this model does not
// offer, such as the 0xD3 aux loopback) is answered with 0xFF and the timeout status bit, and the
// aux interface test reports a stuck clock line, so Linux concludes "no aux port" without waiting.
// Registered at layout::kI8042DataPort with length i8042::kRegisterCount: offset 0 is the data port
// (0x60), offset 4 the status/command port (0x64); offsets 1-3 read 0xFF and ignore writes.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <span>

#include "boot/layout.hpp"
#include "devices/bus_device.hpp"
#include "devices/stop_reason.hpp"

namespace ember {

// Offsets and values from the IBM PS/2 Hardware Interface Technical Reference, "Keyboard/Auxiliary
// Device Controller" (status register, command byte, controller commands).
namespace i8042 {

inline constexpr uint64_t kRegisterCount = 5;
inline constexpr uint64_t kDataOffset = 0;  // Port 0x60.
inline constexpr uint64_t kStatusCommandOffset = layout::kI8042CommandPort - layout::kI8042DataPort;

// Status register (read at 0x64).
inline constexpr uint8_t kStatusOutputFull = 0x01;  // A byte waits at 0x60.
inline constexpr uint8_t kStatusInputFull = 0x02;   // Never set: writes are taken at once.
inline constexpr uint8_t kStatusSystemFlag = 0x04;  // Mirrors command byte bit 2.
inline constexpr uint8_t kStatusLastWasCommand = 0x08;
inline constexpr uint8_t kStatusNotInhibited = 0x10;  // Keyboard switch not locked.
inline constexpr uint8_t kStatusAuxData = 0x20;       // Output byte came from the aux device.
inline constexpr uint8_t kStatusTimeout = 0x40;       // The device did not answer.

// Command byte ("controller configuration byte").
inline constexpr uint8_t kCtrKeyboardInterrupt = 0x01;
inline constexpr uint8_t kCtrAuxInterrupt = 0x02;
inline constexpr uint8_t kCtrSystemFlag = 0x04;
inline constexpr uint8_t kCtrKeyboardDisabled = 0x10;
inline constexpr uint8_t kCtrAuxDisabled = 0x20;
inline constexpr uint8_t kCtrTranslate = 0x40;

// Output port (command 0xD0/0xD1).
inline constexpr uint8_t kOutputPortResetLine = 0x01;  // 0 = hold the CPU in reset.
inline constexpr uint8_t kOutputPortA20 = 0x02;

// Controller commands (written at 0x64).
inline constexpr uint8_t kCommandReadCtr = 0x20;
inline constexpr uint8_t kCommandWriteCtr = 0x60;
inline constexpr uint8_t kCommandDisableAux = 0xa7;
inline constexpr uint8_t kCommandEnableAux = 0xa8;
inline constexpr uint8_t kCommandAuxTest = 0xa9;
inline constexpr uint8_t kCommandSelfTest = 0xaa;
inline constexpr uint8_t kCommandKeyboardTest = 0xab;
inline constexpr uint8_t kCommandDisableKeyboard = 0xad;
inline constexpr uint8_t kCommandEnableKeyboard = 0xae;
inline constexpr uint8_t kCommandReadOutputPort = 0xd0;
inline constexpr uint8_t kCommandWriteOutputPort = 0xd1;
inline constexpr uint8_t kCommandPulseResetLine = 0xfe;  // Pulse output port bit 0 low.
inline constexpr uint8_t kCommandPulseMask = 0xf0;       // 0xF0-0xFF pulse the bits that are 0.

// Replies.
inline constexpr uint8_t kSelfTestPassed = 0x55;
inline constexpr uint8_t kInterfaceTestPassed = 0x00;
inline constexpr uint8_t kInterfaceClockStuckHigh = 0x02;  // Nothing wired to the aux port.
inline constexpr uint8_t kDeviceTimeout = 0xff;  // With kStatusTimeout: no device answered.

}  // namespace i8042

class I8042 : public BusDevice {
 public:
  // stop: receives StopReason::kReset when the guest pulses or clears the reset line.
  explicit I8042(StopHandler stop);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  // Both run with mutex_ held and return true when the guest asked for a reset.
  bool write_command(uint8_t command);
  bool write_data(uint8_t value);
  void queue_output(uint8_t value, uint8_t extra_status = 0);
  uint8_t status() const;
  uint8_t read_data();

  const StopHandler stop_;

  std::mutex mutex_;
  uint8_t command_byte_ =
      i8042::kCtrKeyboardInterrupt | i8042::kCtrSystemFlag | i8042::kCtrTranslate;
  uint8_t output_port_ = i8042::kOutputPortResetLine | i8042::kOutputPortA20;
  std::optional<uint8_t> pending_command_;  // A command whose parameter is the next data write.
  bool last_write_was_command_ = false;
  // The one-byte output buffer. A new reply replaces an unread one: the driver always wants the
  // answer to its latest command, and a stale "no device" byte must not stand in for it.
  std::optional<uint8_t> output_;
  uint8_t output_status_ = 0;  // kStatusAuxData/kStatusTimeout bits that go with output_.
  uint8_t last_output_ = 0;    // Reading an empty buffer returns the stale byte.
};

}  // namespace ember
