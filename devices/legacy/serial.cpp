#include "devices/legacy/serial.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "devices/legacy/byte_register.hpp"
#include "vmm/error.hpp"

namespace ember {

using namespace uart;

Serial::Serial(std::shared_ptr<InterruptLine> irq, Output output)
    : irq_(std::move(irq)), output_(std::move(output)), receive_buffer_(kInputCapacity) {
  if (!irq_) throw Error("serial: no interrupt line");
  if (!output_) throw Error("serial: no output");
}

void Serial::read(uint64_t offset, std::span<uint8_t> data) {
  bool room_freed = false;
  std::function<void()> callback;
  {
    std::lock_guard lock(mutex_);
    fill_byte_read(data, read_register(offset, room_freed));
    update_interrupt();
    if (room_freed) callback = room_callback_;
  }
  if (callback) callback();
}

void Serial::write(uint64_t offset, std::span<const uint8_t> data) {
  const auto value = written_byte(data);
  if (!value) return;
  WriteEffects effects;
  {
    std::lock_guard lock(mutex_);
    effects = write_register(offset, *value);
    update_interrupt();
  }
  // Outside the lock: the host side may be slow, and the I/O thread must still be able to queue
  // input. Guests serialise THR writes themselves, so byte order is kept.
  if (effects.transmitted) output_(std::span<const uint8_t>(&*effects.transmitted, 1));
}

size_t Serial::enqueue_input(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mutex_);
  const size_t taken = std::min(bytes.size(), kInputCapacity - receive_count_);
  for (size_t index = 0; index < taken; ++index) push_receive(bytes[index]);
  update_interrupt();
  return taken;
}

bool Serial::input_has_room() const {
  std::lock_guard lock(mutex_);
  return receive_count_ < kInputCapacity;
}

void Serial::set_input_room_callback(std::function<void()> callback) {
  std::lock_guard lock(mutex_);
  room_callback_ = std::move(callback);
}

uint8_t Serial::read_register(uint64_t offset, bool& room_freed) {
  const bool divisor_latch = (line_control_ & kLcrDivisorLatchAccess) != 0;
  switch (offset) {
    case kReceiveBuffer:
      return divisor_latch ? divisor_low_ : pop_receive(room_freed);
    case kInterruptEnable:
      return divisor_latch ? divisor_high_ : interrupt_enable_;
    case kInterruptIdent: {
      const uint8_t ident = interrupt_identification();
      // §8.6: reading IIR while THRE is the reported source clears it.
      if (ident == kIirTransmitterEmpty) transmit_interrupt_pending_ = false;
      return ident | ((fifo_control_ & kFcrEnableFifos) ? kIirFifosEnabled : 0);
    }
    case kLineControl:
      return line_control_;
    case kModemControl:
      return modem_control_;
    case kLineStatus: {
      const uint8_t status = line_status();
      line_errors_ = 0;  // §8.4: error bits reset when LSR is read.
      return status;
    }
    case kModemStatus: {
      const uint8_t status = modem_inputs() | modem_deltas_;
      modem_deltas_ = 0;  // §8.11: delta bits reset when MSR is read.
      return status;
    }
    case kScratch:
      return scratch_;
    default:
      spdlog::debug("serial: read of unknown offset {:#x}", offset);
      return 0xff;
  }
}

Serial::WriteEffects Serial::write_register(uint64_t offset, uint8_t value) {
  const bool divisor_latch = (line_control_ & kLcrDivisorLatchAccess) != 0;
  WriteEffects effects;
  switch (offset) {
    case kTransmitHolding:
      if (divisor_latch) {
        divisor_low_ = value;
      } else {
        effects.transmitted = transmit(value);
      }
      break;
    case kInterruptEnable:
      if (divisor_latch) {
        divisor_high_ = value;
      } else {
        write_interrupt_enable(value);
      }
      break;
    case kFifoControl:
      write_fifo_control(value);
      break;
    case kLineControl:
      line_control_ = value;
      break;
    case kModemControl:
      write_modem_control(value);
      break;
    case kLineStatus:
    case kModemStatus:
      break;  // Read-only in normal operation (writing them is a factory test mode).
    case kScratch:
      scratch_ = value;
      break;
    default:
      spdlog::debug("serial: write of {:#x} to unknown offset {:#x}", value, offset);
      break;
  }
  return effects;
}

void Serial::write_interrupt_enable(uint8_t value) {
  const uint8_t changed = (interrupt_enable_ ^ value) & kIerMask;
  interrupt_enable_ = value & kIerMask;
  // Enabling ETBEI while the transmitter is empty raises THRE at once (Linux's 8250 startup test
  // and its console write path rely on this edge); disabling it drops the pending source.
  if (changed & kIerTransmitterEmpty) {
    transmit_interrupt_pending_ = (interrupt_enable_ & kIerTransmitterEmpty) != 0;
  }
}

void Serial::write_fifo_control(uint8_t value) {
  const bool enable = (value & kFcrEnableFifos) != 0;
  // §8.5: changing FCR0 clears both FIFOs; the other bits are written only while FCR0 is set.
  const bool toggled = enable != ((fifo_control_ & kFcrEnableFifos) != 0);
  fifo_control_ = enable ? (value & (kFcrEnableFifos | kFcrDmaMode | kFcrTriggerMask)) : 0;
  // Clearing the receive FIFO discards what the hardware FIFO would hold; the rest of the host
  // buffer is still "on the wire" and arrives next, as with a real UART fed by a busy sender.
  if (toggled || (value & kFcrClearReceive)) discard_receive(kFifoDepth);
  // Clearing the transmit FIFO changes nothing: transmission is immediate, the FIFO is always
  // empty.
}

void Serial::write_modem_control(uint8_t value) {
  const uint8_t before = modem_inputs();
  modem_control_ = value & kMcrMask;
  const uint8_t after = modem_inputs();
  const uint8_t changed = before ^ after;
  if (changed & kMsrCts) modem_deltas_ |= kMsrDeltaCts;
  if (changed & kMsrDsr) modem_deltas_ |= kMsrDeltaDsr;
  if (changed & kMsrDcd) modem_deltas_ |= kMsrDeltaDcd;
  if ((before & kMsrRi) && !(after & kMsrRi)) modem_deltas_ |= kMsrTrailingEdgeRi;
}

std::optional<uint8_t> Serial::transmit(uint8_t value) {
  // Writing THR clears the THRE source; the byte leaves at once, so THR is empty again and the
  // source is pending again (if enabled) by the time the guest can look.
  transmit_interrupt_pending_ = (interrupt_enable_ & kIerTransmitterEmpty) != 0;
  if (modem_control_ & kMcrLoopback) {
    // §8.10: in loopback the transmitter output is wired to the receiver input.
    if (!push_receive(value)) line_errors_ |= kLsrOverrunError;
    return std::nullopt;
  }
  return value;
}

uint8_t Serial::pop_receive(bool& room_freed) {
  if (receive_count_ == 0) return 0;
  const uint8_t value = receive_buffer_[receive_head_];
  room_freed = receive_count_ == kInputCapacity;
  receive_head_ = (receive_head_ + 1) % kInputCapacity;
  --receive_count_;
  return value;
}

bool Serial::push_receive(uint8_t value) {
  if (receive_count_ == kInputCapacity) return false;
  receive_buffer_[(receive_head_ + receive_count_) % kInputCapacity] = value;
  ++receive_count_;
  return true;
}

void Serial::discard_receive(size_t count) {
  const size_t discarded = std::min(count, receive_count_);
  receive_head_ = (receive_head_ + discarded) % kInputCapacity;
  receive_count_ -= discarded;
}

uint8_t Serial::modem_inputs() const {
  if (modem_control_ & kMcrLoopback) {
    // §8.10: in loopback the modem control outputs drive the modem status inputs.
    uint8_t inputs = 0;
    if (modem_control_ & kMcrRts) inputs |= kMsrCts;
    if (modem_control_ & kMcrDtr) inputs |= kMsrDsr;
    if (modem_control_ & kMcrOut1) inputs |= kMsrRi;
    if (modem_control_ & kMcrOut2) inputs |= kMsrDcd;
    return inputs;
  }
  return kMsrDcd | kMsrDsr | kMsrCts;  // A terminal is connected and ready.
}

uint8_t Serial::line_status() const {
  uint8_t status = kLsrTransmitterHoldingEmpty | kLsrTransmitterEmpty | line_errors_;
  if (receive_count_ > 0) status |= kLsrDataReady;
  return status;
}

uint8_t Serial::interrupt_identification() const {
  // Table IV priorities: line status, received data, THR empty, modem status.
  if ((interrupt_enable_ & kIerReceiverLineStatus) && line_errors_ != 0) {
    return kIirReceiverLineStatus;
  }
  if ((interrupt_enable_ & kIerReceivedData) && receive_count_ > 0) return kIirReceivedData;
  if ((interrupt_enable_ & kIerTransmitterEmpty) && transmit_interrupt_pending_) {
    return kIirTransmitterEmpty;
  }
  if ((interrupt_enable_ & kIerModemStatus) && modem_deltas_ != 0) return kIirModemStatus;
  return kIirNoInterrupt;
}

void Serial::update_interrupt() {
  // Not gated on MCR OUT2 (QEMU does not gate either, and Linux sets OUT2 anyway). Only changes go
  // to the line: it is edge-triggered, and each set_level may be an ioctl.
  const bool level = interrupt_identification() != kIirNoInterrupt;
  if (level == line_level_) return;
  line_level_ = level;
  irq_->set_level(level);
}

}  // namespace ember
