#include "devices/legacy/i8042.hpp"

#include <spdlog/spdlog.h>

#include <utility>

#include "devices/legacy/byte_register.hpp"
#include "vmm/error.hpp"

namespace ember {

using namespace i8042;

I8042::I8042(StopHandler stop) : stop_(std::move(stop)) {
  if (!stop_) throw Error("i8042: no stop handler");
}

void I8042::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  switch (offset) {
    case kDataOffset:
      fill_byte_read(data, read_data());
      break;
    case kStatusCommandOffset:
      fill_byte_read(data, status());
      break;
    default:
      fill_unassigned_read(data);
      break;
  }
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data) {
  const auto value = written_byte(data);
  if (!value) return;
  bool reset = false;
  {
    std::lock_guard lock(mutex_);
    if (offset == kDataOffset) {
      reset = write_data(*value);
    } else if (offset == kStatusCommandOffset) {
      reset = write_command(*value);
    }
  }
  // Outside the lock: the machine may stop vCPUs, one of which could be waiting for this lock.
  if (reset) {
    spdlog::info("i8042: guest pulsed the reset line");
    stop_(StopReason::kReset);
  }
}

bool I8042::write_command(uint8_t command) {
  last_write_was_command_ = true;
  pending_command_.reset();
  switch (command) {
    case kCommandReadCtr:
      queue_output(command_byte_);
      return false;
    case kCommandWriteCtr:
    case kCommandWriteOutputPort:
      pending_command_ = command;
      return false;
    case kCommandDisableAux:
      command_byte_ |= kCtrAuxDisabled;
      return false;
    case kCommandEnableAux:
      command_byte_ &= ~kCtrAuxDisabled;
      return false;
    case kCommandAuxTest:
      queue_output(kInterfaceClockStuckHigh);
      return false;
    case kCommandSelfTest:
      command_byte_ |= kCtrSystemFlag;  // A passed self test sets the system flag.
      queue_output(kSelfTestPassed);
      return false;
    case kCommandKeyboardTest:
      queue_output(kInterfaceTestPassed);
      return false;
    case kCommandDisableKeyboard:
      command_byte_ |= kCtrKeyboardDisabled;
      return false;
    case kCommandEnableKeyboard:
      command_byte_ &= ~kCtrKeyboardDisabled;
      return false;
    case kCommandReadOutputPort:
      queue_output(output_port_);
      return false;
    default:
      break;
  }
  if ((command & kCommandPulseMask) == kCommandPulseMask) {
    // 0xF0-0xFF pulse low the output port bits that are 0 in the command's low nibble; bit 0 is the
    // CPU reset line.
    return (command & kOutputPortResetLine) == 0;
  }
  spdlog::debug("i8042: ignoring command {:#04x}", command);
  return false;
}

bool I8042::write_data(uint8_t value) {
  last_write_was_command_ = false;
  const auto command = std::exchange(pending_command_, std::nullopt);
  if (command == kCommandWriteCtr) {
    command_byte_ = value;
    return false;
  }
  if (command == kCommandWriteOutputPort) {
    output_port_ = value;
    return (value & kOutputPortResetLine) == 0;
  }
  // Anything else is for the keyboard, and there is none: the controller reports a timeout.
  queue_output(kDeviceTimeout, kStatusTimeout);
  return false;
}

void I8042::queue_output(uint8_t value, uint8_t extra_status) {
  output_ = value;
  output_status_ = extra_status;
}

uint8_t I8042::status() const {
  uint8_t status = kStatusNotInhibited;
  if (output_) status |= kStatusOutputFull | output_status_;
  if (command_byte_ & kCtrSystemFlag) status |= kStatusSystemFlag;
  if (last_write_was_command_) status |= kStatusLastWasCommand;
  return status;
}

uint8_t I8042::read_data() {
  if (output_) {
    last_output_ = *output_;
    output_.reset();
    output_status_ = 0;
  }
  return last_output_;
}

}  // namespace ember
