#include "boot/e820.hpp"

#include <gtest/gtest.h>

#include "boot/layout.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;

std::vector<MemoryRegion> as_regions(const std::vector<GuestMemory::RegionSpec>& specs) {
  std::vector<MemoryRegion> regions;
  for (const auto& spec : specs) regions.push_back({spec.guest_address, spec.size, nullptr});
  return regions;
}

TEST(RamRegions, SmallGuestIsOneRegionFromZero) {
  const auto regions = ram_regions(256 * kMiB);
  ASSERT_EQ(regions.size(), 1u);
  EXPECT_EQ(regions[0].guest_address, 0u);
  EXPECT_EQ(regions[0].size, 256 * kMiB);
}

TEST(RamRegions, ExactlyThreeGiBHasNoHighRegion) {
  EXPECT_EQ(ram_regions(3 * kGiB).size(), 1u);
}

TEST(RamRegions, LargeGuestSkipsTheMmioHole) {
  const auto regions = ram_regions(5 * kGiB);
  ASSERT_EQ(regions.size(), 2u);
  EXPECT_EQ(regions[0].guest_address, 0u);
  EXPECT_EQ(regions[0].size, 3 * kGiB);
  EXPECT_EQ(regions[1].guest_address, 4 * kGiB);
  EXPECT_EQ(regions[1].size, 2 * kGiB);
}

TEST(RamRegions, RejectsUnalignedAndTinySizes) {
  EXPECT_THROW(ram_regions(256 * kMiB + 1), Error);
  EXPECT_THROW(ram_regions(0), Error);
  EXPECT_THROW(ram_regions(kMiB), Error);
}

TEST(E820, MapFor256MiB) {
  const auto map = build_e820(as_regions(ram_regions(256 * kMiB)));
  const std::vector<E820Entry> expected{
      {0, 0x9fc00, kE820Ram},
      {0x9fc00, 0x400, kE820Reserved},
      {0xe0000, 0x20000, kE820Reserved},
      {0x100000, 255 * kMiB, kE820Ram},
  };
  EXPECT_EQ(map, expected);
}

TEST(E820, MapFor5GiBLeavesTheHoleOut) {
  const auto map = build_e820(as_regions(ram_regions(5 * kGiB)));
  ASSERT_EQ(map.size(), 5u);
  EXPECT_EQ(map[3], (E820Entry{0x100000, 3 * kGiB - kMiB, kE820Ram}));
  EXPECT_EQ(map[4], (E820Entry{4 * kGiB, 2 * kGiB, kE820Ram}));
  for (const auto& entry : map) {
    const bool in_hole =
        entry.addr < layout::kMmioHoleEnd && entry.addr + entry.size > layout::kMmioHoleStart;
    EXPECT_FALSE(in_hole) << std::hex << entry.addr;
  }
}

TEST(E820, RejectsAFirstRegionThatIsNotLowMemory) {
  EXPECT_THROW(build_e820({}), Error);
  EXPECT_THROW(build_e820({{0x100000, 16 * kMiB, nullptr}}), Error);
  EXPECT_THROW(build_e820({{0, kMiB, nullptr}}), Error);
}

}  // namespace
}  // namespace ember::boot
