#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "devices/virtio/rng.hpp"
#include "tests/unit/log_capture.hpp"
#include "tests/unit/virtio_test_ring.hpp"

namespace ember::virtio {
namespace {

using test::kHighRegionStart;
using test::TestRing;
using test::UsedElement;

class RecordingInterrupts : public Interrupts {
 public:
  void queue_used(uint16_t) override { ++used; }
  void config_changed() override { ++config; }
  std::atomic<int> used = 0;
  std::atomic<int> config = 0;
};

class VirtioRngTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ring_.activate(queues_[0], true, true));
    std::lock_guard lock(rng_.mutex());
    ASSERT_TRUE(rng_.activate(*memory_, queues_, rng_.features(), interrupts_, loop_));
  }
  void notify() {
    std::lock_guard lock(rng_.mutex());
    rng_.process_queue(0);
  }

  std::unique_ptr<GuestMemory> memory_ = test::make_test_memory();
  TestRing ring_{*memory_, 16, 0x1000, kHighRegionStart};
  std::vector<Queue> queues_{Queue(256)};
  RecordingInterrupts interrupts_;
  EventLoop loop_;
  VirtioRng rng_;
};

TEST_F(VirtioRngTest, IsAnEntropyDevice) {
  EXPECT_EQ(rng_.type(), DeviceType::kEntropy);
  EXPECT_EQ(rng_.queue_count(), 1);
  EXPECT_TRUE(rng_.features() & (1ull << 32));
}

TEST_F(VirtioRngTest, FillsRequestsWithDifferentRandomBytes) {
  const uint16_t first = ring_.push({ring_.writable(64)});
  const uint64_t first_address = ring_.buffer(0).address;
  const uint16_t second = ring_.push({ring_.writable(32), ring_.writable(32)});
  const uint64_t second_address = ring_.buffer(0).address;
  notify();
  EXPECT_EQ(ring_.pop_used(), (UsedElement{first, 64}));
  EXPECT_EQ(ring_.pop_used(), (UsedElement{second, 64}));
  EXPECT_EQ(interrupts_.used, 1);
  const auto one = ring_.read_bytes(first_address, 64);
  const auto two = ring_.read_bytes(second_address, 64);  // Both buffers: contiguous allocation.
  EXPECT_NE(one, two);
  EXPECT_NE(one, std::vector<std::byte>(64)) << "not all zeros";
}

TEST_F(VirtioRngTest, LargeRequestsAreCapped) {
  const uint16_t head = ring_.push({ring_.writable(100 * 1024)});
  notify();
  EXPECT_EQ(ring_.pop_used(), (UsedElement{head, 64 * 1024}));
}

TEST_F(VirtioRngTest, ChainsWithoutWritableBytesAreDropped) {
  const uint16_t readable = ring_.push({ring_.readable("wrong")});
  const uint16_t mixed = ring_.push({ring_.readable("x"), ring_.writable(16)});
  const uint16_t empty = ring_.push({TestRing::at(kHighRegionStart, 0, true)});
  const uint16_t indirect = ring_.push_indirect({ring_.writable(16)});
  notify();
  EXPECT_EQ(ring_.pop_used(), (UsedElement{readable, 0}));
  EXPECT_EQ(ring_.pop_used(), (UsedElement{mixed, 0}));
  EXPECT_EQ(ring_.pop_used(), (UsedElement{empty, 0}));
  EXPECT_EQ(ring_.pop_used(), (UsedElement{indirect, 16}));
  EXPECT_FALSE(rng_.needs_reset());
}

TEST_F(VirtioRngTest, ABrokenQueueNeedsReset) {
  ring_.set_available_index(17);
  notify();
  EXPECT_TRUE(rng_.needs_reset());
  EXPECT_EQ(interrupts_.config, 1);
  std::lock_guard lock(rng_.mutex());
  rng_.reset();
  EXPECT_FALSE(rng_.needs_reset());
}

TEST_F(VirtioRngTest, BreakingTheQueueOverAndOverIsLoggedOnceASecond) {
  ::ember::test::LogCapture captured;
  for (int round = 0; round < 50; ++round) {
    ring_.set_available_index(static_cast<uint16_t>(17 + round));
    notify();
    ASSERT_TRUE(rng_.needs_reset());
    std::lock_guard lock(rng_.mutex());
    rng_.reset();
    queues_[0].reset();
    ASSERT_TRUE(ring_.activate(queues_[0], true, true));
    ASSERT_TRUE(rng_.activate(*memory_, queues_, rng_.features(), interrupts_, loop_));
  }
  EXPECT_EQ(interrupts_.config, 50);
  EXPECT_EQ(captured.lines_with("broken"), 1) << captured.text();
}

}  // namespace
}  // namespace ember::virtio
