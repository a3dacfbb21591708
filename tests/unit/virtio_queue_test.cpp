#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "devices/virtio/queue.hpp"
#include "tests/unit/virtio_test_ring.hpp"

namespace ember::virtio {
namespace {

using test::Buffer;
using test::kHighRegionSize;
using test::kHighRegionStart;
using test::kLowRegionSize;
using test::TestRing;
using test::UsedElement;
using ::testing::HasSubstr;

std::vector<std::byte> bytes_of(std::string_view text) {
  auto view = std::as_bytes(std::span(text));
  return {view.begin(), view.end()};
}

class QueueTest : public ::testing::Test {
 protected:
  // Pops, expecting the queue to break with an error mentioning `fragment`, and to stay broken.
  void expect_broken(std::string_view fragment) {
    EXPECT_FALSE(queue_.pop().has_value());
    ASSERT_TRUE(queue_.broken());
    EXPECT_THAT(queue_.error(), HasSubstr(std::string(fragment)));
    EXPECT_EQ(queue_.error().find('\n'), std::string::npos);
    EXPECT_FALSE(queue_.pop().has_value());
  }

  std::unique_ptr<GuestMemory> memory_ = test::make_test_memory();
  TestRing ring_{*memory_, 16};
  Queue queue_{256};
};

// --- Normal operation ---

TEST_F(QueueTest, PopsReadableThenWritableChain) {
  ASSERT_TRUE(ring_.activate(queue_));
  const uint16_t head = ring_.push(
      {ring_.readable("hello "), ring_.readable("world"), ring_.writable(4), ring_.writable(8)});
  auto chain = queue_.pop();
  ASSERT_TRUE(chain.has_value()) << queue_.error();
  EXPECT_EQ(chain->head, head);
  ASSERT_EQ(chain->descriptors.size(), 4u);
  EXPECT_EQ(chain->readable_bytes, 11u);
  EXPECT_EQ(chain->writable_bytes, 12u);
  EXPECT_FALSE(chain->descriptors[1].device_writable);
  EXPECT_TRUE(chain->descriptors[2].device_writable);
  EXPECT_EQ(chain->descriptors[3].address, ring_.buffer(3).address);
  EXPECT_FALSE(queue_.pop().has_value());
  EXPECT_FALSE(queue_.broken());
}

TEST_F(QueueTest, ReadAcrossDescriptorBoundariesAndShortAtEnd) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.push({ring_.readable("hello "), ring_.readable("world"), ring_.writable(4)});
  auto chain = queue_.pop();
  ASSERT_TRUE(chain.has_value());

  std::string text(5, '\0');
  auto out = std::as_writable_bytes(std::span(text));
  EXPECT_EQ(chain->read(*memory_, 3, out), 5u);
  EXPECT_EQ(text, "lo wo");

  std::string all(32, '\0');
  EXPECT_EQ(chain->read(*memory_, 0, std::as_writable_bytes(std::span(all))), 11u);
  EXPECT_EQ(all.substr(0, 11), "hello world");
  EXPECT_EQ(chain->read(*memory_, 9, out), 2u);  // Short: only "ld" is left.
  EXPECT_EQ(text.substr(0, 2), "ld");
  EXPECT_EQ(chain->read(*memory_, 11, out), 0u);
  EXPECT_EQ(chain->read(*memory_, 1000, out), 0u);
}

TEST_F(QueueTest, WriteAcrossDescriptorBoundariesOnlyIntoWritablePart) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.push({ring_.readable("keep"), ring_.writable(4), ring_.writable(8)});
  auto chain = queue_.pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_EQ(chain->write(*memory_, 2, bytes_of("ABCDEFGH")), 8u);
  EXPECT_EQ(ring_.read_string(ring_.buffer(0).address, 4), "keep");
  EXPECT_EQ(ring_.read_string(ring_.buffer(1).address, 4), std::string("\0\0AB", 4));
  EXPECT_EQ(ring_.read_string(ring_.buffer(2).address, 8), std::string("CDEFGH\0\0", 8));
  EXPECT_EQ(chain->write(*memory_, 10, bytes_of("xyz")), 2u);  // Short at the end.
  EXPECT_EQ(ring_.read_string(ring_.buffer(2).address + 6, 2), "xy");
  EXPECT_EQ(chain->write(*memory_, 12, bytes_of("z")), 0u);
}

TEST_F(QueueTest, ZeroLengthDescriptorsAreAcceptedAndDropped) {
  ASSERT_TRUE(ring_.activate(queue_));
  // Zero-length buffers carry nothing, wherever they point and in whichever direction.
  ring_.push({Buffer{0xdead'0000'0000, 0, true}, ring_.readable("x"), Buffer{~0ull, 0, false}});
  auto chain = queue_.pop();
  ASSERT_TRUE(chain.has_value()) << queue_.error();
  ASSERT_EQ(chain->descriptors.size(), 1u);
  EXPECT_EQ(chain->readable_bytes, 1u);
  EXPECT_EQ(chain->writable_bytes, 0u);

  ring_.push({Buffer{0, 0, false}});  // A chain of 0 bytes in all: the device decides.
  chain = queue_.pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_TRUE(chain->descriptors.empty());
  EXPECT_EQ(chain->readable_bytes + chain->writable_bytes, 0u);
}

TEST_F(QueueTest, BufferInHighRegionAndAtRegionEnd) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.push({Buffer{kHighRegionStart, 16, false}, Buffer{kLowRegionSize - 8, 8, true},
              Buffer{kHighRegionStart + kHighRegionSize - 1, 1, true}});
  auto chain = queue_.pop();
  ASSERT_TRUE(chain.has_value()) << queue_.error();
  EXPECT_EQ(chain->writable_bytes, 9u);
}

TEST_F(QueueTest, FullLengthChainIsAccepted) {
  ASSERT_TRUE(ring_.activate(queue_));
  std::vector<Buffer> buffers;
  for (int i = 0; i < 16; ++i) buffers.push_back(ring_.writable(1));
  ring_.push(buffers);
  auto chain = queue_.pop();
  ASSERT_TRUE(chain.has_value()) << queue_.error();
  EXPECT_EQ(chain->descriptors.size(), 16u);
}

TEST_F(QueueTest, PopOnInactiveQueueReturnsNothing) {
  ring_.configure(queue_);
  ring_.push({ring_.readable("x")});
  EXPECT_FALSE(queue_.active());
  EXPECT_FALSE(queue_.pop().has_value());
  EXPECT_FALSE(queue_.broken());
  queue_.push_used(0, 1);  // Ignored.
  EXPECT_EQ(ring_.used_index(), 0);
  EXPECT_FALSE(queue_.should_notify());
}

TEST_F(QueueTest, PushUsedWritesElementsThenIndex) {
  ASSERT_TRUE(ring_.activate(queue_));
  const uint16_t first = ring_.push({ring_.readable("a"), ring_.writable(8)});
  const uint16_t second = ring_.push({ring_.writable(16)});
  ASSERT_TRUE(queue_.pop().has_value());
  ASSERT_TRUE(queue_.pop().has_value());
  queue_.push_used(second, 7);  // Out of order completion is allowed.
  EXPECT_EQ(ring_.used_index(), 1);
  queue_.push_used(first, 8);
  EXPECT_EQ(ring_.used_index(), 2);
  EXPECT_EQ(ring_.pop_used(), (UsedElement{second, 7}));
  EXPECT_EQ(ring_.pop_used(), (UsedElement{first, 8}));
  EXPECT_FALSE(ring_.pop_used().has_value());
  EXPECT_EQ(ring_.used_flags(), 0);  // We never suppress notifications.
}

TEST_F(QueueTest, RingIndicesWrapAround16Bits) {
  TestRing ring(*memory_, 2);
  ASSERT_TRUE(ring.activate(queue_));
  for (uint32_t round = 0; round < 70000; ++round) {
    const uint16_t head = ring.push({Buffer{0x200000 - 64, 4, round % 2 == 0}});
    auto chain = queue_.pop();
    ASSERT_TRUE(chain.has_value()) << round << ": " << queue_.error();
    ASSERT_EQ(chain->head, head);
    queue_.push_used(chain->head, round);
    ASSERT_EQ(ring.pop_used(), (UsedElement{head, round}));
  }
  EXPECT_EQ(ring.used_index(), static_cast<uint16_t>(70000));
}

TEST_F(QueueTest, BatchOfFullRingThenEmpty) {
  ASSERT_TRUE(ring_.activate(queue_));
  for (int i = 0; i < 16; ++i) ring_.push({ring_.writable(1)});
  for (int i = 0; i < 16; ++i) ASSERT_TRUE(queue_.pop().has_value()) << i << queue_.error();
  EXPECT_FALSE(queue_.pop().has_value());
  EXPECT_FALSE(queue_.broken());
}

// --- Indirect descriptors ---

TEST_F(QueueTest, IndirectChain) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  const uint16_t head = ring_.push_indirect({ring_.readable("abc"), ring_.writable(16)});
  auto chain = queue_.pop();
  ASSERT_TRUE(chain.has_value()) << queue_.error();
  EXPECT_EQ(chain->head, head);
  ASSERT_EQ(chain->descriptors.size(), 2u);
  EXPECT_EQ(chain->readable_bytes, 3u);
  EXPECT_EQ(chain->writable_bytes, 16u);
  EXPECT_EQ(chain->write(*memory_, 0, bytes_of("reply")), 5u);
  EXPECT_EQ(ring_.read_string(ring_.buffer(1).address, 5), "reply");
}

TEST_F(QueueTest, DirectDescriptorsFollowedByIndirectTable) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  const Buffer header = ring_.readable("hdr");
  const uint64_t table = ring_.add_indirect_table({ring_.readable("body"), ring_.writable(2)});
  ring_.set_descriptor(0, header.address, header.length, kDescriptorNext, 1);
  // §2.7.5.3.2: the WRITE flag on the descriptor naming the table is ignored.
  ring_.set_descriptor(1, table, 32, kDescriptorIndirect | kDescriptorWrite, 0);
  ring_.publish(0);
  auto chain = queue_.pop();
  ASSERT_TRUE(chain.has_value()) << queue_.error();
  EXPECT_EQ(chain->descriptors.size(), 3u);
  EXPECT_EQ(chain->readable_bytes, 7u);
  EXPECT_EQ(chain->writable_bytes, 2u);
}

TEST_F(QueueTest, IndirectWithoutFeatureBreaks) {
  ASSERT_TRUE(ring_.activate(queue_, false, false));
  ring_.push_indirect({ring_.readable("abc")});
  expect_broken("VIRTIO_F_INDIRECT_DESC");
}

TEST_F(QueueTest, NestedIndirectBreaks) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  const uint64_t inner = ring_.add_indirect_table({ring_.readable("abc")});
  const uint64_t outer = ring_.allocate(16);
  ring_.write_descriptor(outer, 0, inner, 16, kDescriptorIndirect, 0);
  ring_.set_descriptor(0, outer, 16, kDescriptorIndirect, 0);
  ring_.publish(0);
  expect_broken("nested");
}

TEST_F(QueueTest, IndirectWithNextBreaks) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  const uint64_t table = ring_.add_indirect_table({ring_.readable("abc")});
  ring_.set_descriptor(0, table, 16, kDescriptorIndirect | kDescriptorNext, 1);
  ring_.set_descriptor(1, ring_.readable("x").address, 1, 0, 0);
  ring_.publish(0);
  expect_broken("INDIRECT and NEXT");
}

TEST_F(QueueTest, IndirectTableLengthZeroBreaks) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  ring_.set_descriptor(0, ring_.allocate(16), 0, kDescriptorIndirect, 0);
  ring_.publish(0);
  expect_broken("multiple of 16");
}

TEST_F(QueueTest, IndirectTableLengthNotMultipleOf16Breaks) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  const uint64_t table = ring_.add_indirect_table({ring_.readable("a"), ring_.readable("b")});
  ring_.set_descriptor(0, table, 17, kDescriptorIndirect, 0);
  ring_.publish(0);
  expect_broken("multiple of 16");
}

TEST_F(QueueTest, IndirectTableOutsideMemoryBreaks) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  ring_.set_descriptor(0, kLowRegionSize - 16, 32, kDescriptorIndirect, 0);  // Into the gap.
  ring_.publish(0);
  expect_broken("not in guest memory");
}

TEST_F(QueueTest, IndirectTableTooLargeBreaks) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  ring_.set_descriptor(0, kHighRegionStart, (kMaxIndirectDescriptors + 1) * 16, kDescriptorIndirect,
                       0);
  ring_.publish(0);
  expect_broken("more than");
}

TEST_F(QueueTest, IndirectLoopBreaks) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  const uint64_t table = ring_.allocate(48);
  const Buffer data = ring_.readable("loop");
  ring_.write_descriptor(table, 0, data.address, data.length, kDescriptorNext, 1);
  ring_.write_descriptor(table, 1, data.address, data.length, kDescriptorNext, 2);
  ring_.write_descriptor(table, 2, data.address, data.length, kDescriptorNext, 1);
  ring_.set_descriptor(0, table, 48, kDescriptorIndirect, 0);
  ring_.publish(0);
  expect_broken("loop");
}

TEST_F(QueueTest, IndirectNextOutsideTableBreaks) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  const uint64_t table = ring_.allocate(32);
  const Buffer data = ring_.readable("x");
  ring_.write_descriptor(table, 0, data.address, data.length, kDescriptorNext, 2);
  ring_.write_descriptor(table, 1, data.address, data.length, 0, 0);
  ring_.set_descriptor(0, table, 32, kDescriptorIndirect, 0);
  ring_.publish(0);
  expect_broken("table size 2");
}

TEST_F(QueueTest, IndirectBufferOutsideMemoryBreaks) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  ring_.push_indirect({ring_.readable("ok"), Buffer{kLowRegionSize + 4096, 8, true}});
  expect_broken("indirect descriptor 1");
}

TEST_F(QueueTest, ChainOver4GiBBreaks) {
  // The same 2 MiB buffer named 2049 times: more than 4 GiB writable in total.
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  std::vector<Buffer> buffers(2049, Buffer{kHighRegionStart, static_cast<uint32_t>(2 << 20), true});
  ring_.push_indirect(buffers);
  expect_broken("writable part larger than 4 GiB");
}

TEST_F(QueueTest, ReadableOver4GiBBreaks) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  std::vector<Buffer> buffers(2049,
                              Buffer{kHighRegionStart, static_cast<uint32_t>(2 << 20), false});
  ring_.push_indirect(buffers);
  expect_broken("readable part larger than 4 GiB");
}

TEST_F(QueueTest, Exactly4GiBIsAccepted) {
  ASSERT_TRUE(ring_.activate(queue_, false, true));
  std::vector<Buffer> buffers(2048, Buffer{kHighRegionStart, static_cast<uint32_t>(2 << 20), true});
  ring_.push_indirect(buffers);
  auto chain = queue_.pop();
  ASSERT_TRUE(chain.has_value()) << queue_.error();
  EXPECT_EQ(chain->writable_bytes, kMaxChainBytes);
}

// --- Hostile direct chains ---

TEST_F(QueueTest, DescriptorLoopBreaks) {
  ASSERT_TRUE(ring_.activate(queue_));
  const Buffer data = ring_.readable("x");
  ring_.set_descriptor(0, data.address, 1, kDescriptorNext, 1);
  ring_.set_descriptor(1, data.address, 1, kDescriptorNext, 0);
  ring_.publish(0);
  expect_broken("longer than the queue size 16");
}

TEST_F(QueueTest, SelfLoopOfZeroLengthDescriptorsBreaks) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.set_descriptor(5, 0, 0, kDescriptorNext, 5);
  ring_.publish(5);
  expect_broken("loop");
}

TEST_F(QueueTest, NextIndexOutOfRangeBreaks) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.set_descriptor(0, ring_.readable("x").address, 1, kDescriptorNext, 16);
  ring_.publish(0);
  expect_broken("next index 16 >= queue size 16");
}

TEST_F(QueueTest, HeadIndexOutOfRangeBreaks) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.publish(16);
  expect_broken("head 16 >= queue size 16");
}

TEST_F(QueueTest, AvailableIndexTooFarAheadBreaks) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.set_available_index(17);
  expect_broken("17 ahead");
}

TEST_F(QueueTest, AvailableIndexBackwardsBreaks) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.push({ring_.readable("x")});
  ASSERT_TRUE(queue_.pop().has_value());
  ring_.set_available_index(0);  // 65535 ahead, modulo 2^16.
  expect_broken("ahead of consumed index 1");
}

TEST_F(QueueTest, BufferInGapBreaks) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.push({Buffer{kLowRegionSize + 0x1000, 16, false}});
  expect_broken("not inside one guest memory region");
}

TEST_F(QueueTest, BufferStraddlingRegionEndIntoGapBreaks) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.push({ring_.readable("ok"), Buffer{kLowRegionSize - 8, 16, true}});
  expect_broken("descriptor 1");
}

TEST_F(QueueTest, BufferStraddlingTwoAdjacentRegionsBreaks) {
  GuestMemory adjacent({{0, 1 << 20}, {1 << 20, 1 << 20}});
  TestRing ring(adjacent, 8, 0x1000, 0x10000);
  ASSERT_TRUE(ring.activate(queue_));
  ring.push({Buffer{(1 << 20) - 8, 16, false}});
  EXPECT_FALSE(queue_.pop().has_value());
  EXPECT_THAT(queue_.error(), HasSubstr("not inside one guest memory region"));
}

TEST_F(QueueTest, BufferBeyondMemoryBreaks) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.push({Buffer{kHighRegionStart + kHighRegionSize, 1, true}});
  expect_broken("not inside");
}

TEST_F(QueueTest, AddressPlusLengthOverflowBreaks) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.push({Buffer{std::numeric_limits<uint64_t>::max() - 15, 0x100, false}});
  expect_broken("overflows");
}

TEST_F(QueueTest, ReadableAfterWritableBreaks) {
  ASSERT_TRUE(ring_.activate(queue_));
  ring_.push({ring_.readable("a"), ring_.writable(4), ring_.readable("b")});
  expect_broken("descriptor 2: buffer");
  EXPECT_THAT(queue_.error(), HasSubstr("is readable but follows a writable one"));
}

TEST_F(QueueTest, BrokenQueueStillCompletesEarlierChains) {
  ASSERT_TRUE(ring_.activate(queue_));
  const uint16_t good = ring_.push({ring_.writable(4)});
  ring_.publish(99);
  auto chain = queue_.pop();
  ASSERT_TRUE(chain.has_value());
  expect_broken("head 99");
  queue_.push_used(good, 4);
  EXPECT_EQ(ring_.pop_used(), (UsedElement{good, 4}));
}

// --- Activation ---

TEST_F(QueueTest, ActivateRejectsBadSizes) {
  for (uint16_t size : {0, 3, 12, 512}) {
    queue_.reset();
    ring_.configure(queue_);
    queue_.set_size(size);
    EXPECT_FALSE(queue_.activate(*memory_, false, false)) << size;
    EXPECT_FALSE(queue_.active());
    EXPECT_THAT(queue_.error(), HasSubstr("not a power of two in 1..256")) << size;
  }
  queue_.reset();
  ring_.configure(queue_);
  queue_.set_size(1);
  EXPECT_TRUE(queue_.activate(*memory_, false, false)) << queue_.error();
}

TEST_F(QueueTest, ActivateRejectsMisalignedRings) {
  struct Case {
    uint64_t descriptors, available, used;
    const char* message;
  };
  const uint64_t d = ring_.descriptor_table(), a = ring_.available_ring(), u = ring_.used_ring();
  for (const Case& bad : {Case{d + 8, a, u, "descriptor table at 0x1008 is not 16-byte aligned"},
                          Case{d, a + 1, u, "available ring"}, Case{d, a, u + 2, "4-byte"}}) {
    ring_.configure(queue_);
    queue_.set_descriptor_table(bad.descriptors);
    queue_.set_available_ring(bad.available);
    queue_.set_used_ring(bad.used);
    EXPECT_FALSE(queue_.activate(*memory_, false, false));
    EXPECT_THAT(queue_.error(), HasSubstr(bad.message));
  }
}

TEST_F(QueueTest, ActivateRejectsRingsOutsideMemory) {
  for (int part = 0; part < 3; ++part) {
    ring_.configure(queue_);
    const uint64_t straddling = kLowRegionSize - 64;  // Crosses into the gap.
    if (part == 0) queue_.set_descriptor_table(straddling);
    if (part == 1) queue_.set_available_ring(kLowRegionSize + 0x1000);
    if (part == 2) queue_.set_used_ring(std::numeric_limits<uint64_t>::max() - 3);
    EXPECT_FALSE(queue_.activate(*memory_, false, false)) << part;
    EXPECT_THAT(queue_.error(), HasSubstr("is not inside guest memory")) << part;
    EXPECT_FALSE(queue_.pop().has_value());
  }
}

TEST_F(QueueTest, ResetReturnsToFreshState) {
  ASSERT_TRUE(ring_.activate(queue_, true, true));
  queue_.set_msix_vector(3);
  ring_.publish(77);
  EXPECT_FALSE(queue_.pop().has_value());
  ASSERT_TRUE(queue_.broken());

  queue_.reset();
  EXPECT_FALSE(queue_.active());
  EXPECT_FALSE(queue_.broken());
  EXPECT_EQ(queue_.size(), 256);
  EXPECT_EQ(queue_.max_size(), 256);
  EXPECT_EQ(queue_.descriptor_table(), 0u);
  EXPECT_EQ(queue_.available_ring(), 0u);
  EXPECT_EQ(queue_.used_ring(), 0u);
  EXPECT_FALSE(queue_.enabled());
  EXPECT_EQ(queue_.msix_vector(), 0xffff);
  EXPECT_FALSE(queue_.pop().has_value());

  // Usable again from index 0 with a fresh ring.
  TestRing ring(*memory_, 16, 0x8000, 0x180000);
  ASSERT_TRUE(ring.activate(queue_));
  ring.push({ring.readable("again")});
  EXPECT_TRUE(queue_.pop().has_value()) << queue_.error();
}

// --- Notification suppression ---

TEST_F(QueueTest, EventIndexShouldNotify) {
  ASSERT_TRUE(ring_.activate(queue_, true, false));
  queue_.push_used(0, 0);
  ring_.set_used_event(0);
  EXPECT_TRUE(queue_.should_notify());   // used idx 0 -> 1 passes used_event 0.
  EXPECT_FALSE(queue_.should_notify());  // Nothing new.

  ring_.set_used_event(1);
  queue_.push_used(0, 0);
  EXPECT_TRUE(queue_.should_notify());  // 1 -> 2 passes 1.

  ring_.set_used_event(5);
  queue_.push_used(0, 0);
  EXPECT_FALSE(queue_.should_notify());  // 2 -> 3: not yet.
  queue_.push_used(0, 0);
  queue_.push_used(0, 0);
  EXPECT_FALSE(queue_.should_notify());  // 3 -> 5: entry 5 not used yet.
  queue_.push_used(0, 0);
  EXPECT_TRUE(queue_.should_notify());  // 5 -> 6 uses entry 5.

  ring_.set_used_event(6);
  queue_.push_used(0, 0);
  queue_.push_used(0, 0);
  queue_.push_used(0, 0);
  EXPECT_TRUE(queue_.should_notify());  // 6 -> 9 crosses 6 in one batch.
}

TEST_F(QueueTest, EventIndexIgnoresNoInterruptFlag) {
  ASSERT_TRUE(ring_.activate(queue_, true, false));
  ring_.set_available_flags(kAvailableNoInterrupt);
  queue_.push_used(0, 0);
  ring_.set_used_event(0);
  EXPECT_TRUE(queue_.should_notify());
}

TEST_F(QueueTest, EventIndexWrapsAround16Bits) {
  ASSERT_TRUE(ring_.activate(queue_, true, false));
  for (int i = 0; i < 0xfffd; ++i) queue_.push_used(0, 0);
  EXPECT_EQ(ring_.used_index(), 0xfffd);
  queue_.should_notify();  // Decision point at 0xfffd.

  ring_.set_used_event(0xfffe);
  for (int i = 0; i < 4; ++i) queue_.push_used(0, 0);
  EXPECT_EQ(ring_.used_index(), 0x0001);
  EXPECT_TRUE(queue_.should_notify());  // 0xfffd -> 0x0001 crosses 0xfffe.

  ring_.set_used_event(0x0005);
  for (int i = 0; i < 4; ++i) queue_.push_used(0, 0);
  EXPECT_FALSE(queue_.should_notify());  // 0x0001 -> 0x0005 does not use entry 5.
  ring_.set_used_event(0xffff);
  queue_.push_used(0, 0);
  EXPECT_FALSE(queue_.should_notify());  // 0x0005 -> 0x0006: 0xffff is behind us.
}

TEST_F(QueueTest, NoInterruptFlagWithoutEventIndex) {
  ASSERT_TRUE(ring_.activate(queue_, false, false));
  ring_.set_used_event(0x1234);  // Ignored without EVENT_IDX.
  queue_.push_used(0, 0);
  EXPECT_TRUE(queue_.should_notify());
  EXPECT_FALSE(queue_.should_notify());  // Nothing new since.
  ring_.set_available_flags(kAvailableNoInterrupt);
  queue_.push_used(0, 0);
  EXPECT_FALSE(queue_.should_notify());
  ring_.set_available_flags(0);
  queue_.push_used(0, 0);
  EXPECT_TRUE(queue_.should_notify());
}

TEST_F(QueueTest, EnableNotificationsWritesAvailEvent) {
  ASSERT_TRUE(ring_.activate(queue_, true, false));
  for (int i = 0; i < 3; ++i) ring_.push({ring_.writable(1)});
  ASSERT_TRUE(queue_.pop().has_value());
  ASSERT_TRUE(queue_.pop().has_value());
  EXPECT_EQ(ring_.avail_event(), 0);  // Not touched mid-batch.
  queue_.enable_notifications();
  EXPECT_EQ(ring_.avail_event(), 2);
  ASSERT_TRUE(queue_.pop().has_value());
  EXPECT_FALSE(queue_.pop().has_value());  // Empty: publishes avail_event itself.
  EXPECT_EQ(ring_.avail_event(), 3);
}

TEST_F(QueueTest, NoAvailEventWithoutEventIndex) {
  ASSERT_TRUE(ring_.activate(queue_, false, false));
  ring_.push({ring_.writable(1)});
  ASSERT_TRUE(queue_.pop().has_value());
  queue_.enable_notifications();
  EXPECT_FALSE(queue_.pop().has_value());
  EXPECT_EQ(ring_.avail_event(), 0);
}

// --- Fuzz-ish: random rings from a seeded PRNG ---

class ChainFuzz : public ::testing::Test {
 protected:
  uint64_t random_address(std::mt19937_64& random) {
    switch (random() % 8) {
      case 0:
        return random();  // Anywhere.
      case 1:
        return kLowRegionSize - random() % 64;  // Low region end.
      case 2:
        return kHighRegionStart + kHighRegionSize - random() % 64;  // High region end.
      case 3:
        return kLowRegionSize + random() % (kHighRegionStart - kLowRegionSize);  // Gap.
      case 4:
        return kHighRegionStart + random() % kHighRegionSize;
      case 5:
        return std::numeric_limits<uint64_t>::max() - random() % 4096;
      default:
        return 0x100000 + random() % 0x100000;  // The low data area.
    }
  }
  uint32_t random_length(std::mt19937_64& random) {
    switch (random() % 6) {
      case 0:
        return 0;
      case 1:
        return static_cast<uint32_t>(random());
      case 2:
        return static_cast<uint32_t>(random() % 0x10000);
      default:
        return static_cast<uint32_t>(random() % 256);
    }
  }
  uint16_t random_flags(std::mt19937_64& random) {
    uint16_t flags = static_cast<uint16_t>(random() % 8);
    if (random() % 4 == 0) flags |= static_cast<uint16_t>(random());  // Unknown bits too.
    return flags;
  }
  // A random table of `entries` descriptors at `table`, sometimes mostly well formed.
  void write_random_table(TestRing& ring, std::mt19937_64& random, uint64_t table, uint32_t entries,
                          uint64_t indirect_area) {
    const bool tidy = random() % 2 == 0;
    for (uint32_t i = 0; i < entries; ++i) {
      uint64_t address = random_address(random);
      uint32_t length = random_length(random);
      uint16_t flags = random_flags(random);
      uint16_t next = static_cast<uint16_t>(random() % (entries + entries / 4 + 1));
      if (tidy) {
        address = 0x100000 + random() % 0xf0000;
        length = static_cast<uint32_t>(random() % 4096);
        flags &= kDescriptorNext | kDescriptorWrite;
        next = static_cast<uint16_t>((i + 1) % entries);
      }
      if ((flags & kDescriptorIndirect) && random() % 2 == 0) {
        address = indirect_area + 16 * (random() % 16);
        length = static_cast<uint32_t>(16 * (random() % 20));
      }
      ring.write_descriptor(table, i, address, length, flags, next);
    }
  }

  std::unique_ptr<GuestMemory> memory_ = test::make_test_memory();
};

TEST_F(ChainFuzz, RandomRingsNeverEscapeGuestMemory) {
  std::mt19937_64 random(20240611);
  constexpr uint64_t kIndirectArea = kHighRegionStart + 0x1000;
  size_t chains = 0, broken = 0;
  for (int iteration = 0; iteration < 2000; ++iteration) {
    const uint16_t size = static_cast<uint16_t>(1u << (random() % 9));  // 1..256
    TestRing ring(*memory_, size);
    Queue queue(256);
    ASSERT_TRUE(ring.activate(queue, random() % 2, random() % 2)) << queue.error();

    write_random_table(ring, random, ring.descriptor_table(), size, kIndirectArea);
    // A few indirect tables for INDIRECT descriptors to land on.
    write_random_table(ring, random, kIndirectArea, 32, kIndirectArea);
    for (uint16_t slot = 0; slot < size; ++slot) {
      ring.set_available_entry(slot, static_cast<uint16_t>(random() % (size + size / 8 + 1)));
    }
    ring.set_available_index(random() % 16 == 0 ? static_cast<uint16_t>(random())
                                                : static_cast<uint16_t>(random() % (size + 2)));

    for (int pops = 0; pops < size + 4; ++pops) {
      auto chain = queue.pop();
      if (!chain) break;
      ++chains;
      ASSERT_LT(chain->head, size);
      uint64_t readable = 0, writable = 0;
      bool seen_writable = false;
      for (const Descriptor& descriptor : chain->descriptors) {
        ASSERT_GT(descriptor.length, 0u);
        ASSERT_TRUE(memory_->slice(descriptor.address, descriptor.length).has_value())
            << std::hex << descriptor.address << "+" << descriptor.length;
        if (descriptor.device_writable) {
          writable += descriptor.length;
          seen_writable = true;
        } else {
          ASSERT_FALSE(seen_writable);
          readable += descriptor.length;
        }
      }
      ASSERT_EQ(readable, chain->readable_bytes);
      ASSERT_EQ(writable, chain->writable_bytes);
      ASSERT_LE(readable, kMaxChainBytes);
      ASSERT_LE(writable, kMaxChainBytes);
      std::vector<std::byte> scratch(64);
      chain->read(*memory_, random() % 128, scratch);
      chain->write(*memory_, random() % 128, scratch);
      queue.push_used(chain->head, static_cast<uint32_t>(random()));
      queue.should_notify();
    }
    if (queue.broken()) {
      ++broken;
      ASSERT_FALSE(queue.error().empty());
      ASSERT_EQ(queue.error().find('\n'), std::string::npos);
    }
  }
  // Both outcomes must actually have been exercised.
  EXPECT_GT(chains, 100u);
  EXPECT_GT(broken, 100u);
}

}  // namespace
}  // namespace ember::virtio
