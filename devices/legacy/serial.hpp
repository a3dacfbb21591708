// 16550A UART (COM1), as Linux's 8250 driver drives it: interrupt-driven transmit and receive, FIFO
// identification bits, loopback, scratch register. Transmission is immediate, so the transmitter is
// always empty (LSR THRE and TEMT set). Received bytes come from the host through a 64 KiB buffer
// that stands in for the 16-byte receive FIFO; the guest sees only DR and the RX interrupt, as with
// a FIFO.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "devices/bus_device.hpp"
#include "devices/interrupt_line.hpp"

namespace ember {

// Register offsets and bits from the PC16550D datasheet (Table II, register summary).
namespace uart {

inline constexpr uint64_t kRegisterCount = 8;

// Offsets (Table II). DLAB (LCR bit 7) switches offsets 0 and 1 to the divisor latch.
inline constexpr uint64_t kReceiveBuffer = 0;     // RBR (read, DLAB=0).
inline constexpr uint64_t kTransmitHolding = 0;   // THR (write, DLAB=0).
inline constexpr uint64_t kDivisorLatchLow = 0;   // DLL (DLAB=1).
inline constexpr uint64_t kInterruptEnable = 1;   // IER (DLAB=0).
inline constexpr uint64_t kDivisorLatchHigh = 1;  // DLM (DLAB=1).
inline constexpr uint64_t kInterruptIdent = 2;    // IIR (read).
inline constexpr uint64_t kFifoControl = 2;       // FCR (write).
inline constexpr uint64_t kLineControl = 3;       // LCR.
inline constexpr uint64_t kModemControl = 4;      // MCR.
inline constexpr uint64_t kLineStatus = 5;        // LSR.
inline constexpr uint64_t kModemStatus = 6;       // MSR.
inline constexpr uint64_t kScratch = 7;           // SCR.

// IER (§8.7): which sources may interrupt. Bits 7:4 are always zero on a 16550A.
inline constexpr uint8_t kIerReceivedData = 0x01;        // ERBFI.
inline constexpr uint8_t kIerTransmitterEmpty = 0x02;    // ETBEI.
inline constexpr uint8_t kIerReceiverLineStatus = 0x04;  // ELSI.
inline constexpr uint8_t kIerModemStatus = 0x08;         // EDSSI.
inline constexpr uint8_t kIerMask = 0x0f;

// IIR (§8.6, Table IV): highest-priority pending source; bits 7:6 set while FIFOs are enabled.
inline constexpr uint8_t kIirNoInterrupt = 0x01;
inline constexpr uint8_t kIirReceiverLineStatus = 0x06;  // Priority 1.
inline constexpr uint8_t kIirReceivedData = 0x04;        // Priority 2.
inline constexpr uint8_t kIirTransmitterEmpty = 0x02;    // Priority 3.
inline constexpr uint8_t kIirModemStatus = 0x00;         // Priority 4.
inline constexpr uint8_t kIirFifosEnabled = 0xc0;

// FCR (§8.5).
inline constexpr uint8_t kFcrEnableFifos = 0x01;
inline constexpr uint8_t kFcrClearReceive = 0x02;
inline constexpr uint8_t kFcrClearTransmit = 0x04;
inline constexpr uint8_t kFcrDmaMode = 0x08;
inline constexpr uint8_t kFcrTriggerMask = 0xc0;

// LCR (§8.1).
inline constexpr uint8_t kLcrDivisorLatchAccess = 0x80;  // DLAB.

// MCR (§8.10).
inline constexpr uint8_t kMcrDtr = 0x01;
inline constexpr uint8_t kMcrRts = 0x02;
inline constexpr uint8_t kMcrOut1 = 0x04;
inline constexpr uint8_t kMcrOut2 = 0x08;
inline constexpr uint8_t kMcrLoopback = 0x10;
inline constexpr uint8_t kMcrMask = 0x1f;

// LSR (§8.4).
inline constexpr uint8_t kLsrDataReady = 0x01;
inline constexpr uint8_t kLsrOverrunError = 0x02;
inline constexpr uint8_t kLsrParityError = 0x04;
inline constexpr uint8_t kLsrFramingError = 0x08;
inline constexpr uint8_t kLsrBreakInterrupt = 0x10;
inline constexpr uint8_t kLsrTransmitterHoldingEmpty = 0x20;  // THRE.
inline constexpr uint8_t kLsrTransmitterEmpty = 0x40;         // TEMT.
inline constexpr uint8_t kLsrErrorBits =
    kLsrOverrunError | kLsrParityError | kLsrFramingError | kLsrBreakInterrupt;

// MSR (§8.11): bits 3:0 are deltas since the last MSR read, bits 7:4 the modem inputs.
inline constexpr uint8_t kMsrDeltaCts = 0x01;
inline constexpr uint8_t kMsrDeltaDsr = 0x02;
inline constexpr uint8_t kMsrTrailingEdgeRi = 0x04;
inline constexpr uint8_t kMsrDeltaDcd = 0x08;
inline constexpr uint8_t kMsrDeltaMask = 0x0f;
inline constexpr uint8_t kMsrCts = 0x10;
inline constexpr uint8_t kMsrDsr = 0x20;
inline constexpr uint8_t kMsrRi = 0x40;
inline constexpr uint8_t kMsrDcd = 0x80;

// Depth of the 16550A's receive FIFO (§1): what an FCR "clear receive FIFO" discards.
inline constexpr size_t kFifoDepth = 16;

}  // namespace uart

class Serial : public BusDevice {
 public:
  using Output = std::function<void(std::span<const uint8_t>)>;

  // Host bytes waiting for the guest, at most.
  static constexpr size_t kInputCapacity = 64 * 1024;

  // irq: the UART's interrupt line, level = any enabled interrupt pending. It is driven while the
  // UART's lock is held, so it must not call back into the UART. output: receives each transmitted
  // byte on the vCPU thread that wrote THR (not called in loopback mode). Throws Error if either is
  // empty.
  Serial(std::shared_ptr<InterruptLine> irq, Output output);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // Host input (from the I/O thread): takes as many bytes as fit in the receive buffer and returns
  // how many it took; raises the RX interrupt if the guest enabled it.
  size_t enqueue_input(std::span<const uint8_t> bytes);
  bool input_has_room() const;

  // Optional: called (on a vCPU thread, without the UART's lock) when the guest drains a byte from
  // a full receive buffer, so an I/O loop that stopped reading its input can start again.
  void set_input_room_callback(std::function<void()> callback);

 private:
  // What a register write asks the caller to do after releasing the lock.
  struct WriteEffects {
    std::optional<uint8_t> transmitted;
  };

  // All of these run with mutex_ held.
  uint8_t read_register(uint64_t offset, bool& room_freed);
  WriteEffects write_register(uint64_t offset, uint8_t value);
  void write_interrupt_enable(uint8_t value);
  void write_fifo_control(uint8_t value);
  void write_modem_control(uint8_t value);
  std::optional<uint8_t> transmit(uint8_t value);
  uint8_t pop_receive(bool& room_freed);
  bool push_receive(uint8_t value);
  void discard_receive(size_t count);
  uint8_t modem_inputs() const;
  uint8_t line_status() const;
  uint8_t interrupt_identification() const;
  void update_interrupt();

  const std::shared_ptr<InterruptLine> irq_;
  const Output output_;

  mutable std::mutex mutex_;
  std::function<void()> room_callback_;
  uint8_t divisor_low_ =
      0x0c;  // Undefined after reset; 9600 baud at 1.8432 MHz, as firmware leaves it.
  uint8_t divisor_high_ = 0;
  uint8_t interrupt_enable_ = 0;
  uint8_t fifo_control_ = 0;
  uint8_t line_control_ = 0;
  uint8_t modem_control_ = 0;
  uint8_t line_errors_ = 0;   // LSR error bits, cleared by reading LSR.
  uint8_t modem_deltas_ = 0;  // MSR bits 3:0, cleared by reading MSR.
  uint8_t scratch_ = 0;
  bool transmit_interrupt_pending_ = false;  // THRE source, cleared by IIR read or THR write.
  bool line_level_ = false;

  // Receive ring buffer.
  std::vector<uint8_t> receive_buffer_;
  size_t receive_head_ = 0;
  size_t receive_count_ = 0;
};

}  // namespace ember
