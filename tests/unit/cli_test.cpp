#include "vmm/cli.hpp"

#include <gtest/gtest.h>

#include "vmm/machine.hpp"

namespace ember {
namespace {

TEST(Cli, ParsesMemorySizes) {
  EXPECT_EQ(parse_memory_size("256"), 256 * kMiB);
  EXPECT_EQ(parse_memory_size("512M"), 512 * kMiB);
  EXPECT_EQ(parse_memory_size("512MiB"), 512 * kMiB);
  EXPECT_EQ(parse_memory_size("2G"), 2048 * kMiB);
  EXPECT_EQ(parse_memory_size("65536K"), 64 * kMiB);
  EXPECT_EQ(parse_memory_size("4096B"), 4096u);
}

TEST(Cli, RejectsNonSizes) {
  EXPECT_FALSE(parse_memory_size(""));
  EXPECT_FALSE(parse_memory_size("M"));
  EXPECT_FALSE(parse_memory_size("12X"));
  EXPECT_FALSE(parse_memory_size("-1G"));
  EXPECT_FALSE(parse_memory_size("99999999999999999999"));
}

}  // namespace
}  // namespace ember
