#include "boot/pvh_start_info.hpp"

#include <gtest/gtest.h>

#include "boot/little_endian.hpp"

namespace ember::boot {
namespace {

const std::vector<E820Entry> kMap{{0, 0x9fc00, kE820Ram}, {0xe0000, 0x20000, kE820Reserved}};

TEST(PvhStartInfo, WritesHeaderModuleAndMemmap) {
  const auto block = build_pvh_start_info({.address = 0x6000,
                                           .cmdline_address = 0x20000,
                                           .rsdp_address = 0xe0000,
                                           .initrd_address = 0x7f00000,
                                           .initrd_size = 0x12345,
                                           .memmap = kMap});
  ASSERT_EQ(block.size(), 56u + 32 + 2 * 24);
  EXPECT_EQ(load_le<uint32_t>(block, 0), 0x336ec578u);
  EXPECT_EQ(load_le<uint32_t>(block, 4), 1u);
  EXPECT_EQ(load_le<uint32_t>(block, 8), 0u);
  EXPECT_EQ(load_le<uint32_t>(block, 12), 1u);
  EXPECT_EQ(load_le<uint64_t>(block, 16), 0x6000u + 56);
  EXPECT_EQ(load_le<uint64_t>(block, 24), 0x20000u);
  EXPECT_EQ(load_le<uint64_t>(block, 32), 0xe0000u);
  EXPECT_EQ(load_le<uint64_t>(block, 40), 0x6000u + 88);
  EXPECT_EQ(load_le<uint32_t>(block, 48), 2u);
  EXPECT_EQ(load_le<uint64_t>(block, 56), 0x7f00000u);  // Module paddr, size, cmdline.
  EXPECT_EQ(load_le<uint64_t>(block, 64), 0x12345u);
  EXPECT_EQ(load_le<uint64_t>(block, 72), 0u);
  EXPECT_EQ(load_le<uint64_t>(block, 88 + 24), 0xe0000u);  // Second memmap entry.
  EXPECT_EQ(load_le<uint64_t>(block, 88 + 24 + 8), 0x20000u);
  EXPECT_EQ(load_le<uint32_t>(block, 88 + 24 + 16), kE820Reserved);
  EXPECT_EQ(load_le<uint32_t>(block, 88 + 24 + 20), 0u);
}

TEST(PvhStartInfo, NoInitrdMeansNoModules) {
  const auto block = build_pvh_start_info({.address = 0x6000,
                                           .cmdline_address = 0x20000,
                                           .rsdp_address = 0,
                                           .initrd_address = 0,
                                           .initrd_size = 0,
                                           .memmap = kMap});
  EXPECT_EQ(load_le<uint32_t>(block, 12), 0u);
  EXPECT_EQ(load_le<uint64_t>(block, 16), 0u);
  EXPECT_EQ(load_le<uint32_t>(block, 48), 2u);
}

}  // namespace
}  // namespace ember::boot
