#include "boot/bzimage.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "boot_images.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

using test::BzImageOptions;
using test::make_bzimage;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;

std::string load_error(const GuestMemory& memory, const test::Bytes& image) {
  try {
    load_bzimage(memory, "/k/bzImage", image);
  } catch (const Error& error) {
    return error.what();
  }
  return "no error";
}

TEST(BzImage, DetectsTheSetupHeader) {
  EXPECT_TRUE(is_bzimage(make_bzimage()));
  auto image = make_bzimage();
  image[0x202] = std::byte{'X'};
  EXPECT_FALSE(is_bzimage(image));
  image = make_bzimage();
  image[0x1fe] = std::byte{0};
  EXPECT_FALSE(is_bzimage(image));
  EXPECT_FALSE(is_bzimage(test::Bytes(0x205)));
}

TEST(BzImage, LoadsProtectedModePartAtOneMiB) {
  GuestMemory memory({{0, 64 * kMiB}});
  const auto image = make_bzimage();
  const auto load = load_bzimage(memory, "/k/bzImage", image);
  EXPECT_EQ(load.load_address, 0x100000u);
  EXPECT_EQ(load.entry, 0x100200u);
  const auto loaded = memory.slice(0x100000, image.size() - 5 * 512);
  ASSERT_TRUE(loaded);
  EXPECT_TRUE(std::equal(loaded->begin(), loaded->end(), image.begin() + 5 * 512));
  EXPECT_EQ(load.initrd_addr_max, 0x7fffffffu);
  EXPECT_EQ(load.cmdline_size, 2047u);
  EXPECT_EQ(load.setup_header.size(), 0x26cu - 0x1f1);
  EXPECT_EQ(load.setup_header.data(), image.data() + 0x1f1);
}

TEST(BzImage, SetupSectsZeroMeansFour) {
  GuestMemory memory({{0, 64 * kMiB}});
  BzImageOptions options;
  options.setup_sects = 0;
  const auto image = make_bzimage(options);
  ASSERT_EQ(image.size(), 5 * 512 + options.payload_size);
  load_bzimage(memory, "/k/bzImage", image);
  EXPECT_EQ(memory.read_value<uint8_t>(0x100000), static_cast<uint8_t>(image[5 * 512]));
}

TEST(BzImage, KernelEndCoversInitSizeAtTheRuntimeAddress) {
  GuestMemory memory({{0, 64 * kMiB}});
  // Not relocatable: decompresses at pref_address.
  BzImageOptions options;
  options.relocatable = 0;
  options.pref_address = 0x1000000;
  options.init_size = 0x800000;
  EXPECT_EQ(load_bzimage(memory, "k", make_bzimage(options)).end, 0x1800000u);
  // Relocatable, load address aligned up to 2 MiB is below pref_address: pref_address wins.
  options.relocatable = 1;
  EXPECT_EQ(load_bzimage(memory, "k", make_bzimage(options)).end, 0x1800000u);
  // Relocatable with a low pref_address: the aligned load address (2 MiB) is used.
  options.pref_address = 0x100000;
  EXPECT_EQ(load_bzimage(memory, "k", make_bzimage(options)).end, 0x200000u + 0x800000u);
}

TEST(BzImage, HeaderLengthFollowsTheJumpByte) {
  GuestMemory memory({{0, 64 * kMiB}});
  BzImageOptions options;
  options.header_length = 0x62;  // A 2.12-sized header, ending at 0x264.
  EXPECT_EQ(load_bzimage(memory, "k", make_bzimage(options)).setup_header.size(), 0x264u - 0x1f1);
  options.header_length = 0xff;  // Claims more than boot_params has room for: clamped.
  EXPECT_EQ(load_bzimage(memory, "k", make_bzimage(options)).setup_header.size(), 0x290u - 0x1f1);
}

TEST(BzImage, RejectsTruncatedImages) {
  GuestMemory memory({{0, 64 * kMiB}});
  auto image = make_bzimage();
  const size_t full = image.size();
  image.resize(full - 16);
  EXPECT_EQ(load_error(memory, image),
            "kernel /k/bzImage: truncated bzImage: setup header claims " + std::to_string(full) +
                " bytes, file has " + std::to_string(full - 16));
  image.resize(0x230);
  EXPECT_THAT(load_error(memory, image), HasSubstr("truncated bzImage"));
}

TEST(BzImage, RejectsOldProtocolsAndMissing64BitEntry) {
  GuestMemory memory({{0, 64 * kMiB}});
  BzImageOptions options;
  options.version = 0x0205;
  EXPECT_THAT(load_error(memory, make_bzimage(options)),
              HasSubstr("boot protocol 2.05 is older than 2.06"));
  options.version = 0x020b;  // Has no xloadflags field yet.
  EXPECT_THAT(load_error(memory, make_bzimage(options)), HasSubstr("no 64-bit entry point"));
  options = {};
  options.xloadflags = 0;
  EXPECT_THAT(load_error(memory, make_bzimage(options)), HasSubstr("no 64-bit entry point"));
  options = {};
  options.loadflags = 0;
  EXPECT_THAT(load_error(memory, make_bzimage(options)), HasSubstr("zImage"));
}

TEST(BzImage, RejectsKernelsTooLargeForMemory) {
  GuestMemory memory({{0, 4 * kMiB}});
  BzImageOptions options;
  options.payload_size = 4 * kMiB;
  EXPECT_THAT(load_error(memory, make_bzimage(options)),
              HasSubstr("does not fit in guest memory at 0x100000"));
  options = {};
  options.init_size = 0x1000000;  // 16 MiB at 16 MiB in a 4 MiB guest.
  EXPECT_THAT(load_error(memory, make_bzimage(options)),
              HasSubstr("kernel needs 16 MiB at 0x1000000 to decompress (init_size), guest memory "
                        "ends at 0x400000"));
}

}  // namespace
}  // namespace ember::boot
