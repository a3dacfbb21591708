#include "devices/legacy/serial.hpp"

#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "vmm/error.hpp"

namespace ember {
namespace {

using namespace uart;

// Records every level the UART drives and counts rising edges (what an edge-triggered IOAPIC pin
// would deliver).
class FakeInterruptLine : public InterruptLine {
 public:
  void set_level(bool asserted) override {
    std::lock_guard lock(mutex_);
    if (asserted && !level_) ++rising_edges_;
    level_ = asserted;
    levels_.push_back(asserted);
  }
  bool level() const {
    std::lock_guard lock(mutex_);
    return level_;
  }
  int rising_edges() const {
    std::lock_guard lock(mutex_);
    return rising_edges_;
  }
  std::vector<bool> levels() const {
    std::lock_guard lock(mutex_);
    return levels_;
  }

 private:
  mutable std::mutex mutex_;
  bool level_ = false;
  int rising_edges_ = 0;
  std::vector<bool> levels_;
};

class SerialTest : public ::testing::Test {
 protected:
  SerialTest()
      : irq(std::make_shared<FakeInterruptLine>()),
        serial(irq, [this](std::span<const uint8_t> bytes) {
          std::lock_guard lock(output_mutex);
          output.append(bytes.begin(), bytes.end());
        }) {}

  uint8_t read_byte(uint64_t offset) {
    std::array<uint8_t, 1> data{0xaa};
    serial.read(offset, data);
    return data[0];
  }
  void write_byte(uint64_t offset, uint8_t value) {
    const std::array<uint8_t, 1> data{value};
    serial.write(offset, data);
  }
  size_t enqueue(const std::string& text) {
    return serial.enqueue_input(
        std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  }

  std::shared_ptr<FakeInterruptLine> irq;
  std::mutex output_mutex;
  std::string output;
  Serial serial;
};

TEST_F(SerialTest, RejectsMissingCollaborators) {
  EXPECT_THROW(Serial(nullptr, [](std::span<const uint8_t>) {}), Error);
  EXPECT_THROW(Serial(irq, nullptr), Error);
}

TEST_F(SerialTest, TransmittedBytesReachOutput) {
  write_byte(kTransmitHolding, 'h');
  write_byte(kTransmitHolding, 'i');
  EXPECT_EQ(output, "hi");
  EXPECT_EQ(read_byte(kLineStatus), kLsrTransmitterHoldingEmpty | kLsrTransmitterEmpty);
  EXPECT_EQ(read_byte(kInterruptIdent), kIirNoInterrupt);
  EXPECT_TRUE(irq->levels().empty());  // Nothing enabled, the line never moved.
}

TEST_F(SerialTest, EnablingTransmitInterruptWithEmptyThrFires) {
  write_byte(kInterruptEnable, kIerTransmitterEmpty);
  EXPECT_TRUE(irq->level());
  EXPECT_EQ(irq->rising_edges(), 1);
  EXPECT_EQ(read_byte(kInterruptIdent), kIirTransmitterEmpty);
  EXPECT_FALSE(irq->level());  // Reading IIR cleared the THRE source.
  EXPECT_EQ(read_byte(kInterruptIdent), kIirNoInterrupt);

  // Linux's startup test: toggling ETBEI off and on re-raises THRE.
  write_byte(kInterruptEnable, 0);
  write_byte(kInterruptEnable, kIerTransmitterEmpty);
  EXPECT_EQ(irq->rising_edges(), 2);
  EXPECT_EQ(read_byte(kInterruptIdent), kIirTransmitterEmpty);

  // Disabling ETBEI drops a pending THRE.
  write_byte(kTransmitHolding, 'x');
  EXPECT_TRUE(irq->level());
  write_byte(kInterruptEnable, 0);
  EXPECT_FALSE(irq->level());
  EXPECT_EQ(read_byte(kInterruptIdent), kIirNoInterrupt);
}

TEST_F(SerialTest, EachThrWriteRaisesThreAgain) {
  write_byte(kInterruptEnable, kIerTransmitterEmpty);
  for (int round = 1; round <= 3; ++round) {
    EXPECT_EQ(read_byte(kInterruptIdent), kIirTransmitterEmpty);
    EXPECT_FALSE(irq->level());
    write_byte(kTransmitHolding, static_cast<uint8_t>('0' + round));
    EXPECT_TRUE(irq->level());
    EXPECT_EQ(irq->rising_edges(), round + 1);
  }
  EXPECT_EQ(output, "123");
}

TEST_F(SerialTest, ReceivedDataTakesPriorityOverThre) {
  write_byte(kInterruptEnable, kIerReceivedData | kIerTransmitterEmpty);
  EXPECT_EQ(enqueue("ab"), 2u);
  EXPECT_TRUE(irq->level());
  EXPECT_EQ(read_byte(kInterruptIdent), kIirReceivedData);
  EXPECT_EQ(read_byte(kLineStatus) & kLsrDataReady, kLsrDataReady);
  EXPECT_EQ(read_byte(kReceiveBuffer), 'a');
  EXPECT_EQ(read_byte(kInterruptIdent), kIirReceivedData);  // Reading IIR does not clear RDA.
  EXPECT_EQ(read_byte(kReceiveBuffer), 'b');
  EXPECT_EQ(read_byte(kLineStatus) & kLsrDataReady, 0);
  EXPECT_TRUE(irq->level());  // THRE is still pending underneath.
  EXPECT_EQ(read_byte(kInterruptIdent), kIirTransmitterEmpty);
  EXPECT_FALSE(irq->level());
}

TEST_F(SerialTest, ReadingRbrDrainsAndLowersLine) {
  write_byte(kInterruptEnable, kIerReceivedData);
  EXPECT_FALSE(irq->level());
  EXPECT_EQ(enqueue("xyz"), 3u);
  EXPECT_TRUE(irq->level());
  EXPECT_EQ(irq->rising_edges(), 1);
  EXPECT_EQ(read_byte(kReceiveBuffer), 'x');
  EXPECT_EQ(read_byte(kReceiveBuffer), 'y');
  EXPECT_TRUE(irq->level());
  EXPECT_EQ(read_byte(kReceiveBuffer), 'z');
  EXPECT_FALSE(irq->level());
  EXPECT_EQ(read_byte(kInterruptIdent), kIirNoInterrupt);
  EXPECT_EQ(read_byte(kReceiveBuffer), 0);  // Empty reads are harmless.
}

TEST_F(SerialTest, DivisorLatchDoesNotTouchThrOrIer) {
  write_byte(kLineControl, kLcrDivisorLatchAccess | 0x03);
  write_byte(kDivisorLatchLow, 0x01);
  write_byte(kDivisorLatchHigh, 0x02);
  EXPECT_EQ(read_byte(kDivisorLatchLow), 0x01);
  EXPECT_EQ(read_byte(kDivisorLatchHigh), 0x02);
  write_byte(kLineControl, 0x03);
  EXPECT_EQ(output, "");
  EXPECT_EQ(read_byte(kInterruptEnable), 0);
  EXPECT_FALSE(irq->level());
  EXPECT_EQ(read_byte(kLineControl), 0x03);
  write_byte(kInterruptEnable, 0xff);
  EXPECT_EQ(read_byte(kInterruptEnable), kIerMask);  // A 16550A has four enable bits.
  write_byte(kLineControl, kLcrDivisorLatchAccess);
  EXPECT_EQ(read_byte(kDivisorLatchLow), 0x01);  // Still there.
}

TEST_F(SerialTest, LoopbackReflectsModemControlAndLoopsBytes) {
  write_byte(kModemControl, kMcrLoopback | kMcrOut2 | kMcrRts);  // 0x1A, Linux's autoconfig test.
  EXPECT_EQ(read_byte(kModemStatus) & 0xf0, kMsrDcd | kMsrCts);  // 0x90.
  write_byte(kModemControl, kMcrLoopback | kMcrOut1 | kMcrDtr);
  EXPECT_EQ(read_byte(kModemStatus) & 0xf0, kMsrRi | kMsrDsr);
  write_byte(kTransmitHolding, 'z');
  EXPECT_EQ(output, "");
  EXPECT_EQ(read_byte(kLineStatus) & kLsrDataReady, kLsrDataReady);
  EXPECT_EQ(read_byte(kReceiveBuffer), 'z');
  write_byte(kModemControl, kMcrOut2);
  EXPECT_EQ(read_byte(kModemStatus) & 0xf0, kMsrDcd | kMsrDsr | kMsrCts);
  write_byte(kTransmitHolding, 'q');
  EXPECT_EQ(output, "q");
  EXPECT_EQ(read_byte(kLineStatus) & kLsrDataReady, 0);
}

TEST_F(SerialTest, ModemStatusDeltasInterrupt) {
  EXPECT_EQ(read_byte(kModemStatus), kMsrDcd | kMsrDsr | kMsrCts);  // No deltas yet.
  write_byte(kInterruptEnable, kIerModemStatus);
  write_byte(kModemControl, kMcrLoopback);  // All inputs drop.
  EXPECT_TRUE(irq->level());
  EXPECT_EQ(read_byte(kInterruptIdent), kIirModemStatus);
  EXPECT_EQ(read_byte(kModemStatus), kMsrDeltaDcd | kMsrDeltaDsr | kMsrDeltaCts);
  EXPECT_FALSE(irq->level());
  EXPECT_EQ(read_byte(kModemStatus), 0);
  write_byte(kModemControl, kMcrLoopback | kMcrOut1);  // RI rises: no trailing edge yet.
  EXPECT_EQ(read_byte(kModemStatus), kMsrRi);
  write_byte(kModemControl, kMcrLoopback);
  EXPECT_EQ(read_byte(kModemStatus), kMsrTrailingEdgeRi);
}

TEST_F(SerialTest, FifoBitsAndClears) {
  EXPECT_EQ(read_byte(kInterruptIdent), kIirNoInterrupt);
  write_byte(kFifoControl, kFcrEnableFifos);
  EXPECT_EQ(read_byte(kInterruptIdent), kIirFifosEnabled | kIirNoInterrupt);
  write_byte(kInterruptEnable, kIerTransmitterEmpty);
  EXPECT_EQ(read_byte(kInterruptIdent), kIirFifosEnabled | kIirTransmitterEmpty);

  EXPECT_EQ(enqueue("abc"), 3u);
  write_byte(kFifoControl, kFcrEnableFifos | kFcrClearReceive | kFcrClearTransmit);
  EXPECT_EQ(read_byte(kLineStatus) & kLsrDataReady, 0);
  EXPECT_EQ(read_byte(kInterruptIdent), kIirFifosEnabled | kIirNoInterrupt);

  // A clear discards what a 16-byte FIFO holds; the rest of the host's input arrives next.
  const std::string long_input(kFifoDepth + 2, 'r');
  EXPECT_EQ(enqueue(long_input), long_input.size());
  write_byte(kFifoControl, kFcrEnableFifos | kFcrClearReceive);
  EXPECT_EQ(read_byte(kReceiveBuffer), 'r');
  EXPECT_EQ(read_byte(kReceiveBuffer), 'r');
  EXPECT_EQ(read_byte(kLineStatus) & kLsrDataReady, 0);

  write_byte(kFifoControl, 0);
  EXPECT_EQ(read_byte(kInterruptIdent) & kIirFifosEnabled, 0);
}

TEST_F(SerialTest, ScratchRegister) {
  write_byte(kScratch, 0x5a);
  EXPECT_EQ(read_byte(kScratch), 0x5a);
  write_byte(kScratch, 0xa5);
  EXPECT_EQ(read_byte(kScratch), 0xa5);
}

TEST_F(SerialTest, EnqueueRespectsCapacity) {
  int room_callbacks = 0;
  serial.set_input_room_callback([&] { ++room_callbacks; });
  EXPECT_TRUE(serial.input_has_room());
  const std::vector<uint8_t> big(Serial::kInputCapacity + 10, 'b');
  EXPECT_EQ(serial.enqueue_input(big), Serial::kInputCapacity);
  EXPECT_FALSE(serial.input_has_room());
  EXPECT_EQ(enqueue("more"), 0u);
  EXPECT_EQ(read_byte(kReceiveBuffer), 'b');
  EXPECT_EQ(room_callbacks, 1);
  EXPECT_TRUE(serial.input_has_room());
  EXPECT_EQ(enqueue("cd"), 1u);
  EXPECT_EQ(read_byte(kReceiveBuffer), 'b');
  EXPECT_EQ(room_callbacks, 2);
}

TEST_F(SerialTest, LoopbackOverrunRaisesLineStatus) {
  write_byte(kInterruptEnable, kIerReceiverLineStatus);
  const std::vector<uint8_t> big(Serial::kInputCapacity, 'f');
  EXPECT_EQ(serial.enqueue_input(big), Serial::kInputCapacity);
  write_byte(kModemControl, kMcrLoopback);
  write_byte(kTransmitHolding, 'o');  // No room: overrun.
  EXPECT_TRUE(irq->level());
  EXPECT_EQ(read_byte(kInterruptIdent), kIirReceiverLineStatus);
  EXPECT_EQ(read_byte(kLineStatus) & kLsrOverrunError, kLsrOverrunError);
  EXPECT_FALSE(irq->level());
  EXPECT_EQ(read_byte(kLineStatus) & kLsrOverrunError, 0);
}

TEST_F(SerialTest, OddAccessesNeverFault) {
  std::array<uint8_t, 4> wide{};
  serial.read(kLineStatus, wide);
  EXPECT_EQ(wide,
            (std::array<uint8_t, 4>{kLsrTransmitterHoldingEmpty | kLsrTransmitterEmpty, 0, 0, 0}));
  const std::array<uint8_t, 2> two{'w', 'x'};
  serial.write(kTransmitHolding, two);
  EXPECT_EQ(output, "w");
  serial.write(kTransmitHolding, std::span<const uint8_t>());
  serial.read(kTransmitHolding, std::span<uint8_t>());
  std::array<uint8_t, 8> eight{};
  serial.read(kRegisterCount + 1, eight);
  EXPECT_EQ(eight[0], 0xff);
  EXPECT_EQ(eight[7], 0);
  serial.write(~0ull, two);
  EXPECT_EQ(output, "w");
}

// Run under the sanitizer build: the I/O thread queues input while a vCPU drains it.
TEST_F(SerialTest, ConcurrentInputAndReads) {
  constexpr size_t kTotal = 300000;  // More than the buffer holds, so the producer must wait.
  write_byte(kInterruptEnable, kIerReceivedData | kIerTransmitterEmpty);
  std::thread producer([this] {
    std::vector<uint8_t> chunk(1000);
    size_t sent = 0;
    while (sent < kTotal) {
      const size_t length = std::min(chunk.size(), kTotal - sent);
      for (size_t index = 0; index < length; ++index) {
        chunk[index] = static_cast<uint8_t>((sent + index) * 7);
      }
      sent += serial.enqueue_input(std::span(chunk).first(length));
      if (!serial.input_has_room()) std::this_thread::yield();
    }
  });
  std::thread writer([this] {
    for (int index = 0; index < 1000; ++index) write_byte(kTransmitHolding, '.');
  });
  size_t received = 0;
  size_t mismatches = 0;
  while (received < kTotal) {
    if (read_byte(kLineStatus) & kLsrDataReady) {
      read_byte(kInterruptIdent);
      if (read_byte(kReceiveBuffer) != static_cast<uint8_t>(received * 7)) ++mismatches;
      ++received;
    }
  }
  producer.join();
  writer.join();
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(read_byte(kLineStatus) & kLsrDataReady, 0);
  std::lock_guard lock(output_mutex);
  EXPECT_EQ(output, std::string(1000, '.'));
}

}  // namespace
}  // namespace ember
