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

TEST(Cli, ParsesDisks) {
  std::string error;
  auto disk = parse_disk("/images/a.raw", error);
  ASSERT_TRUE(disk);
  EXPECT_EQ(disk->path, "/images/a.raw");
  EXPECT_FALSE(disk->read_only);
  disk = parse_disk("b.img,ro,id=data-disk,direct", error);
  ASSERT_TRUE(disk);
  EXPECT_TRUE(disk->read_only);
  EXPECT_TRUE(disk->direct);
  EXPECT_EQ(disk->id, "data-disk");
}

TEST(Cli, RejectsBadDisks) {
  std::string error;
  EXPECT_FALSE(parse_disk("", error));
  EXPECT_FALSE(parse_disk("a.img,rw", error));
  EXPECT_NE(error.find("unknown option 'rw'"), std::string::npos);
  EXPECT_FALSE(parse_disk("a.img,id=", error));
  EXPECT_FALSE(parse_disk("a.img,id=123456789012345678901", error));
}

TEST(Cli, ParsesNets) {
  std::string error;
  auto net = parse_net("tap=tap0,mac=52:54:00:ab:cd:ef", error);
  ASSERT_TRUE(net);
  EXPECT_EQ(net->tap, "tap0");
  ASSERT_TRUE(net->mac);
  EXPECT_EQ((*net->mac)[5], 0xef);
  EXPECT_FALSE(parse_net("mac=52:54:00:ab:cd:ef", error));   // No tap.
  EXPECT_FALSE(parse_net("tap=t,mac=01:00:00:00:00:01", error));  // Multicast.
  EXPECT_FALSE(parse_net("tap=t,mac=52:54:00:ab:cd", error));
  EXPECT_FALSE(parse_net("tap=a-very-long-tap-name", error));
  EXPECT_FALSE(parse_net("tap=t,speed=10", error));
}

}  // namespace
}  // namespace ember
