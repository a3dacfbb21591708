#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <string>
#include <vector>

#include "devices/virtio/console.hpp"
#include "tests/unit/log_capture.hpp"
#include "tests/unit/virtio_test_ring.hpp"
#include "vmm/error.hpp"

namespace ember::virtio {
namespace {

using test::kHighRegionStart;
using test::TestRing;
using test::UsedElement;

constexpr uint16_t kReceive = 0;
constexpr uint16_t kTransmit = 1;

class RecordingInterrupts : public Interrupts {
 public:
  void queue_used(uint16_t queue) override { ++used[queue]; }
  void config_changed() override { ++config; }
  std::atomic<int> used[2] = {0, 0};
  std::atomic<int> config = 0;
};

std::span<const uint8_t> bytes_of(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

class VirtioConsoleTest : public ::testing::Test {
 protected:
  void start() {
    ASSERT_TRUE(receive_.activate(queues_[kReceive], true, true));
    ASSERT_TRUE(transmit_.activate(queues_[kTransmit], true, true));
    std::lock_guard lock(console_.mutex());
    ASSERT_TRUE(console_.activate(*memory_, queues_, console_.features(), interrupts_, loop_));
  }
  void notify(uint16_t queue) {
    std::lock_guard lock(console_.mutex());
    console_.process_queue(queue);
  }

  std::unique_ptr<GuestMemory> memory_ = test::make_test_memory();
  TestRing receive_{*memory_, 16, 0x1000, 0x100000};
  TestRing transmit_{*memory_, 64, 0x4000, kHighRegionStart};
  std::vector<Queue> queues_{Queue(256), Queue(256)};
  RecordingInterrupts interrupts_;
  EventLoop loop_;
  std::vector<uint8_t> output_;
  VirtioConsole console_{[this](std::span<const uint8_t> bytes) {
    output_.insert(output_.end(), bytes.begin(), bytes.end());
  }};
};

TEST_F(VirtioConsoleTest, IsAConsoleWithoutOptionalFeatures) {
  EXPECT_EQ(console_.type(), DeviceType::kConsole);
  EXPECT_EQ(console_.queue_count(), 2);
  EXPECT_EQ(console_.features() & 0xffffffull, 0u) << "no F_SIZE, MULTIPORT or EMERG_WRITE";
  EXPECT_TRUE(console_.features() & (1ull << 32));
  std::array<uint8_t, 12> config;
  config.fill(0xff);
  console_.read_config(0, config);
  EXPECT_EQ(config, (std::array<uint8_t, 12>{}));
}

TEST_F(VirtioConsoleTest, AMegabyteOfOutputArrivesCompleteAndInOrder) {
  start();
  constexpr size_t kTotal = 1 << 20;
  constexpr uint32_t kSlotBytes = 8192;
  std::mt19937 random(42);
  std::vector<uint8_t> expected(kTotal);
  for (auto& byte : expected) byte = static_cast<uint8_t>(random());

  // 32 slots of two buffers each, reused every round, the way a driver recycles its buffers.
  std::vector<uint64_t> slots;
  for (int i = 0; i < 64; ++i) slots.push_back(transmit_.allocate(kSlotBytes));
  size_t sent = 0;
  int chains = 0;
  while (sent < kTotal) {
    int pushed = 0;
    for (int slot = 0; slot < 32 && sent < kTotal; ++slot, ++pushed) {
      std::vector<test::Buffer> buffers;
      for (int part = 0; part < 2 && sent < kTotal; ++part) {
        const auto length =
            static_cast<uint32_t>(std::min<size_t>(1 + random() % kSlotBytes, kTotal - sent));
        const uint64_t address = slots[2 * slot + part];
        memory_->write_or_throw(address, std::as_bytes(std::span(expected).subspan(sent, length)));
        buffers.push_back(TestRing::at(address, length, false));
        sent += length;
      }
      transmit_.push(buffers);
    }
    notify(kTransmit);
    for (int i = 0; i < pushed; ++i) {
      auto used = transmit_.pop_used();
      ASSERT_TRUE(used.has_value());
      EXPECT_EQ(used->length, 0u);
    }
    chains += pushed;
  }
  EXPECT_GT(chains, 100);
  ASSERT_EQ(output_.size(), kTotal);
  EXPECT_TRUE(output_ == expected);
  EXPECT_FALSE(console_.needs_reset());
}

TEST_F(VirtioConsoleTest, InputFillsReceiveBuffers) {
  EXPECT_EQ(console_.enqueue_input(bytes_of("early")), 0u) << "not active yet";
  start();
  EXPECT_EQ(console_.enqueue_input(bytes_of("no buffers")), 0u);

  const uint16_t first = receive_.push({receive_.writable(8)});
  const uint64_t first_address = receive_.buffer(0).address;
  const uint16_t second = receive_.push({receive_.writable(4), receive_.writable(4)});
  const uint64_t second_address = receive_.buffer(0).address;
  notify(kReceive);
  const std::string text = "hello, console world";
  EXPECT_EQ(console_.enqueue_input(bytes_of(text)), 16u);
  EXPECT_EQ(receive_.pop_used(), (UsedElement{first, 8}));
  EXPECT_EQ(receive_.pop_used(), (UsedElement{second, 8}));
  EXPECT_EQ(receive_.read_string(first_address, 8), "hello, c");
  EXPECT_EQ(receive_.read_string(second_address, 4), "onso");
  EXPECT_GE(interrupts_.used[kReceive], 1);

  const uint16_t third = receive_.push({receive_.writable(64)});
  const uint64_t third_address = receive_.buffer(0).address;
  EXPECT_EQ(console_.enqueue_input(bytes_of(text).subspan(16)), 4u);
  EXPECT_EQ(receive_.pop_used(), (UsedElement{third, 4}));
  EXPECT_EQ(receive_.read_string(third_address, 4), "orld");
}

TEST_F(VirtioConsoleTest, MalformedChainsAreDropped) {
  start();
  const uint16_t readable_receive = receive_.push({receive_.readable("wrong way")});
  const uint16_t good_receive = receive_.push({receive_.writable(16)});
  EXPECT_EQ(console_.enqueue_input(bytes_of("abc")), 3u);
  EXPECT_EQ(receive_.pop_used(), (UsedElement{readable_receive, 0}));
  EXPECT_EQ(receive_.pop_used(), (UsedElement{good_receive, 3}));

  const uint16_t writable_transmit =
      transmit_.push({transmit_.readable("x"), transmit_.writable(8)});
  const uint16_t empty_transmit = transmit_.push({TestRing::at(0x100000, 0, false)});
  const uint16_t too_big = transmit_.push({TestRing::at(kHighRegionStart, 1u << 21, false)});
  const uint16_t good_transmit = transmit_.push({transmit_.readable("ok")});
  notify(kTransmit);
  for (uint16_t head : {writable_transmit, empty_transmit, too_big, good_transmit})
    EXPECT_EQ(transmit_.pop_used(), (UsedElement{head, 0}));
  EXPECT_EQ(std::string(output_.begin(), output_.end()), "ok");
  EXPECT_FALSE(console_.needs_reset());
}

TEST_F(VirtioConsoleTest, ABrokenQueueNeedsReset) {
  start();
  transmit_.set_available_index(1000);
  notify(kTransmit);
  EXPECT_TRUE(console_.needs_reset());
  EXPECT_EQ(interrupts_.config, 1);
  receive_.push({receive_.writable(16)});
  EXPECT_EQ(console_.enqueue_input(bytes_of("abc")), 0u);
  std::lock_guard lock(console_.mutex());
  console_.reset();
  EXPECT_FALSE(console_.needs_reset());
}

TEST_F(VirtioConsoleTest, BreakingTheQueueOverAndOverIsLoggedOnceASecond) {
  ::ember::test::LogCapture captured;
  for (int round = 0; round < 50; ++round) {
    start();
    transmit_.set_available_index(static_cast<uint16_t>(1000 + round));
    notify(kTransmit);
    ASSERT_TRUE(console_.needs_reset());
    std::lock_guard lock(console_.mutex());
    console_.reset();
    for (Queue& queue : queues_) queue.reset();
  }
  EXPECT_EQ(captured.lines_with("broken"), 1) << captured.text();
}

TEST(VirtioConsole, NeedsAnOutput) {
  EXPECT_THROW(VirtioConsole(nullptr), Error);
}

}  // namespace
}  // namespace ember::virtio
