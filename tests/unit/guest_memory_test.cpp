#include "vmm/guest_memory.hpp"

#include <gtest/gtest.h>

#include <array>

#include "vmm/error.hpp"

namespace ember {
namespace {

constexpr uint64_t kPage = 4096;

GuestMemory two_regions() {
  // [0, 16 KiB) and [1 MiB, 1 MiB + 8 KiB): a gap between them.
  return GuestMemory({{0, 4 * kPage}, {0x100000, 2 * kPage}});
}

TEST(GuestMemory, SliceInsideRegion) {
  auto memory = two_regions();
  auto view = memory.slice(0x10, 0x20);
  ASSERT_TRUE(view.has_value());
  EXPECT_EQ(view->size(), 0x20u);
  EXPECT_TRUE(memory.slice(0x100000, 2 * kPage).has_value());
  EXPECT_TRUE(memory.slice(4 * kPage, 0).has_value());  // Empty slice at the end is fine.
}

TEST(GuestMemory, RejectsGapsStraddlingAndOverflow) {
  auto memory = two_regions();
  EXPECT_FALSE(memory.slice(4 * kPage, 1).has_value());            // In the gap.
  EXPECT_FALSE(memory.slice(4 * kPage - 1, 2).has_value());        // Straddles region end.
  EXPECT_FALSE(memory.slice(0x100000 - 1, 2).has_value());         // Straddles into region.
  EXPECT_FALSE(memory.slice(0x100000 + 2 * kPage, 1).has_value()); // Past the last region.
  EXPECT_FALSE(memory.slice(0x10, UINT64_MAX).has_value());        // Length overflow.
  EXPECT_FALSE(memory.slice(UINT64_MAX, 2).has_value());           // Address overflow.
  EXPECT_FALSE(memory.slice(UINT64_MAX - 1, UINT64_MAX).has_value());
}

TEST(GuestMemory, AdjacentRegions) {
  GuestMemory memory({{0, 4 * kPage}, {4 * kPage, 4 * kPage}});
  EXPECT_TRUE(memory.slice(4 * kPage, 16).has_value());     // Start of the second region.
  EXPECT_TRUE(memory.slice(4 * kPage, 0).has_value());
  EXPECT_FALSE(memory.slice(4 * kPage - 8, 16).has_value()); // Still may not straddle.
}

TEST(GuestMemory, ReadWriteRoundTrip) {
  auto memory = two_regions();
  ASSERT_TRUE(memory.write_value<uint32_t>(0x100010, 0xdeadbeef));
  EXPECT_EQ(memory.read_value<uint32_t>(0x100010), 0xdeadbeefu);
  EXPECT_FALSE(memory.write_value<uint64_t>(4 * kPage - 4, 1));  // Would straddle.
  EXPECT_FALSE(memory.read_value<uint64_t>(0x100000 + 2 * kPage - 4).has_value());
}

TEST(GuestMemory, RegionsShareOneMemfd) {
  auto memory = two_regions();
  EXPECT_GE(memory.fd(), 0);
  EXPECT_EQ(memory.total_size(), 6 * kPage);
  ASSERT_EQ(memory.regions().size(), 2u);
  EXPECT_EQ(memory.regions()[1].host, memory.regions()[0].host + 4 * kPage);
}

TEST(GuestMemory, ResidentBytesCountTouchedPages) {
  auto memory = two_regions();
  EXPECT_EQ(memory.resident_bytes(), 0u);
  ASSERT_TRUE(memory.write_value<uint8_t>(0x100000 + 10, 1));
  EXPECT_EQ(memory.resident_bytes(), kPage);
}

TEST(GuestMemory, RejectsBadRegionSpecs) {
  EXPECT_THROW(GuestMemory({}), Error);
  EXPECT_THROW(GuestMemory({{0, 100}}), Error);                      // Not page sized.
  EXPECT_THROW(GuestMemory({{0, 2 * kPage}, {kPage, kPage}}), Error); // Overlap.
  auto memory = two_regions();
  EXPECT_THROW(memory.slice_or_throw(4 * kPage, 1), Error);
}

}  // namespace
}  // namespace ember
