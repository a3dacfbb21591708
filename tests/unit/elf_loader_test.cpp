#include "boot/elf_loader.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "boot_images.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

using test::ElfOptions;
using test::make_elf;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;

std::string load_error(const GuestMemory& memory, const test::Bytes& image) {
  try {
    load_elf(memory, "/k/vmlinux", image);
  } catch (const Error& error) {
    return error.what();
  }
  return "no error";
}

TEST(ElfLoader, LoadsSegmentsAtPhysicalAddressesAndZeroesBss) {
  GuestMemory memory({{0, 64 * kMiB}});
  ElfOptions options;
  options.segments = {{0x1000000, test::pattern(0x2000, 1), 0x3000},
                      {0x1400000, test::pattern(0x100, 9), 0x100}};
  // Dirty the bss first: the loader must zero it, not rely on fresh memory.
  ASSERT_TRUE(memory.write_value<uint64_t>(0x1002ff8, ~uint64_t{0}));
  const auto load = load_elf(memory, "/k/vmlinux", make_elf(options));
  EXPECT_EQ(load.entry, 0x1000000u);
  EXPECT_FALSE(load.pvh_entry);
  EXPECT_EQ(load.start, 0x1000000u);
  EXPECT_EQ(load.end, 0x1400100u);
  const auto text = memory.slice(0x1000000, 0x2000);
  EXPECT_TRUE(std::equal(text->begin(), text->end(), options.segments[0].data.begin()));
  EXPECT_EQ(memory.read_value<uint64_t>(0x1002ff8), 0u);
  EXPECT_EQ(memory.read_value<uint8_t>(0x1400001),
            static_cast<uint8_t>(options.segments[1].data[1]));
}

TEST(ElfLoader, FindsThePvhNoteWith64And32BitAddresses) {
  GuestMemory memory({{0, 64 * kMiB}});
  ElfOptions options;
  options.pvh_entry = 0x1000040;
  EXPECT_EQ(load_elf(memory, "k", make_elf(options)).pvh_entry, 0x1000040u);
  options.pvh_entry_size = 4;
  EXPECT_EQ(load_elf(memory, "k", make_elf(options)).pvh_entry, 0x1000040u);
}

TEST(ElfLoader, FindsThePvhNoteInSectionsWithoutPtNote) {
  GuestMemory memory({{0, 64 * kMiB}});
  ElfOptions options;
  options.pvh_entry = 0x1000080;
  options.note_in_section = true;
  EXPECT_EQ(load_elf(memory, "k", make_elf(options)).pvh_entry, 0x1000080u);
}

TEST(ElfLoader, RejectsOtherClassesMachinesAndTypes) {
  GuestMemory memory({{0, 64 * kMiB}});
  ElfOptions options;
  options.elf_class = 1;
  EXPECT_EQ(load_error(memory, make_elf(options)),
            "kernel /k/vmlinux: 32-bit ELF; ember boots 64-bit x86-64 kernels");
  options = {};
  options.machine = 183;
  EXPECT_EQ(load_error(memory, make_elf(options)),
            "kernel /k/vmlinux: ELF for machine 183 (AArch64), not x86-64");
  options = {};
  options.type = 3;  // ET_DYN
  EXPECT_THAT(load_error(memory, make_elf(options)), HasSubstr("not an executable"));
}

TEST(ElfLoader, RejectsTruncatedFiles) {
  GuestMemory memory({{0, 64 * kMiB}});
  auto image = make_elf();
  image.resize(40);
  EXPECT_THAT(load_error(memory, image),
              HasSubstr("truncated ELF: header needs 64 bytes, file has 40"));
  image = make_elf();
  image.resize(100);  // Cuts the program header table.
  EXPECT_THAT(load_error(memory, image),
              HasSubstr("truncated ELF: program header table ends at byte 120"));
  image = make_elf();
  image.resize(image.size() - 1);  // Cuts the segment data.
  EXPECT_THAT(load_error(memory, image), HasSubstr("truncated ELF: segment at 0x1000000"));
  ElfOptions options;
  options.pvh_entry = 0x1000000;
  image = make_elf(options);
  image.resize(image.size() - 4);  // Cuts the PVH note's address.
  EXPECT_THAT(load_error(memory, image), HasSubstr("truncated ELF"));
}

TEST(ElfLoader, RejectsSegmentsOutsideGuestMemory) {
  GuestMemory memory({{0, 16 * kMiB}});
  ElfOptions options;
  options.segments = {{0x1000000, test::pattern(0x100, 1), 0x1000}};
  EXPECT_EQ(load_error(memory, make_elf(options)),
            "kernel /k/vmlinux: segment at 0x1000000 of 4096 bytes lies outside guest memory (RAM "
            "ends at 0x1000000)");
  options.segments = {{0xffffffff81000000, test::pattern(0x100, 1), 0x100}};
  EXPECT_THAT(load_error(memory, make_elf(options)), HasSubstr("lies outside guest memory"));
  options.segments = {{0x8000, test::pattern(0x100, 1), 0x100}};
  EXPECT_THAT(load_error(memory, make_elf(options)), HasSubstr("below 1 MiB"));
  options.segments = {{0x100000, test::pattern(0x100, 1), 0x10}};
  EXPECT_THAT(load_error(memory, make_elf(options)), HasSubstr("more file bytes"));
}

TEST(ElfLoader, RejectsEntryPointsOutsideMemory) {
  GuestMemory memory({{0, 64 * kMiB}});
  ElfOptions options;
  options.entry = 0xffffffff81000000;
  EXPECT_THAT(load_error(memory, make_elf(options)),
              HasSubstr("entry point 0xffffffff81000000 is not a physical address"));
  options.pvh_entry = 0x1'0000'0000;
  EXPECT_THAT(load_error(memory, make_elf(options)), HasSubstr("PVH entry point 0x100000000"));
}

}  // namespace
}  // namespace ember::boot
