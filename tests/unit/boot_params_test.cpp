#include "boot/boot_params.hpp"

#include <gtest/gtest.h>

#include <cstddef>

#include "boot/little_endian.hpp"
#include "boot_images.hpp"
#include "vmm/error.hpp"

// Where the kernel's uapi header is installed, check ember's offsets against it.
#if __has_include(<asm/bootparam.h>)
#include <asm/bootparam.h>
#define EMBER_HAVE_BOOTPARAM_H 1
#endif

namespace ember::boot {
namespace {

#ifdef EMBER_HAVE_BOOTPARAM_H
#define EXPECT_OFFSET(ours, field) static_assert((ours) == offsetof(struct ::boot_params, field))
EXPECT_OFFSET(zero_page::kAcpiRsdpAddr, acpi_rsdp_addr);
EXPECT_OFFSET(zero_page::kExtRamdiskImage, ext_ramdisk_image);
EXPECT_OFFSET(zero_page::kExtRamdiskSize, ext_ramdisk_size);
EXPECT_OFFSET(zero_page::kExtCmdLinePtr, ext_cmd_line_ptr);
EXPECT_OFFSET(zero_page::kE820Entries, e820_entries);
EXPECT_OFFSET(zero_page::kSentinel, sentinel);
EXPECT_OFFSET(zero_page::kSetupHeader, hdr);
EXPECT_OFFSET(zero_page::kE820Table, e820_table);
EXPECT_OFFSET(setup_header::kSysSize, hdr.syssize);
EXPECT_OFFSET(setup_header::kVidMode, hdr.vid_mode);
EXPECT_OFFSET(setup_header::kBootFlag, hdr.boot_flag);
EXPECT_OFFSET(setup_header::kJump, hdr.jump);
EXPECT_OFFSET(setup_header::kHeader, hdr.header);
EXPECT_OFFSET(setup_header::kVersion, hdr.version);
EXPECT_OFFSET(setup_header::kTypeOfLoader, hdr.type_of_loader);
EXPECT_OFFSET(setup_header::kLoadFlags, hdr.loadflags);
EXPECT_OFFSET(setup_header::kCode32Start, hdr.code32_start);
EXPECT_OFFSET(setup_header::kRamdiskImage, hdr.ramdisk_image);
EXPECT_OFFSET(setup_header::kRamdiskSize, hdr.ramdisk_size);
EXPECT_OFFSET(setup_header::kHeapEndPtr, hdr.heap_end_ptr);
EXPECT_OFFSET(setup_header::kCmdLinePtr, hdr.cmd_line_ptr);
EXPECT_OFFSET(setup_header::kInitrdAddrMax, hdr.initrd_addr_max);
EXPECT_OFFSET(setup_header::kKernelAlignment, hdr.kernel_alignment);
EXPECT_OFFSET(setup_header::kRelocatableKernel, hdr.relocatable_kernel);
EXPECT_OFFSET(setup_header::kXLoadFlags, hdr.xloadflags);
EXPECT_OFFSET(setup_header::kCmdlineSize, hdr.cmdline_size);
EXPECT_OFFSET(setup_header::kHardwareSubarch, hdr.hardware_subarch);
EXPECT_OFFSET(setup_header::kSetupData, hdr.setup_data);
EXPECT_OFFSET(setup_header::kPrefAddress, hdr.pref_address);
EXPECT_OFFSET(setup_header::kInitSize, hdr.init_size);
static_assert(setup_header::kEnd == zero_page::kSetupHeader + sizeof(struct ::setup_header));
static_assert(sizeof(struct ::boot_params) == kBootParamsSize);
static_assert(sizeof(struct ::boot_e820_entry) == zero_page::kE820EntrySize);
#undef EXPECT_OFFSET
#endif

const std::vector<E820Entry> kMap{{0, 0x9fc00, kE820Ram}, {0x100000, 0x1000000, kE820Ram}};

TEST(BootParams, ElfGetsAMinimalHeader) {
  const auto page =
      build_boot_params({.setup_header = {}, .cmdline_address = 0x20000, .e820 = kMap});
  EXPECT_EQ(load_le<uint16_t>(page, setup_header::kBootFlag), 0xaa55);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kHeader), 0x53726448u);
  EXPECT_EQ(load_le<uint16_t>(page, setup_header::kVersion), 0x020f);
  EXPECT_EQ(load_le<uint16_t>(page, setup_header::kVidMode), 0xffff);
  EXPECT_EQ(static_cast<uint8_t>(page[setup_header::kTypeOfLoader]), 0xff);
  EXPECT_EQ(static_cast<uint8_t>(page[setup_header::kLoadFlags]), setup_header::kLoadedHigh);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kCmdLinePtr), 0x20000u);
  EXPECT_EQ(static_cast<uint8_t>(page[zero_page::kSentinel]), 0);
}

TEST(BootParams, CopiesTheBzImageHeaderAndOverridesLoaderFields) {
  test::BzImageOptions options;
  options.loadflags = setup_header::kLoadedHigh | setup_header::kCanUseHeap;
  const auto image = test::make_bzimage(options);
  const auto header = std::span(image).subspan(0x1f1, 0x26c - 0x1f1);
  const auto page = build_boot_params({.setup_header = header,
                                       .cmdline_address = 0x20000,
                                       .initrd_address = 0x1'2345'6000,
                                       .initrd_size = 0x1'0000'1000,
                                       .e820 = kMap,
                                       .rsdp_address = 0xe0000});
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kInitrdAddrMax), 0x7fffffffu);
  EXPECT_EQ(load_le<uint64_t>(page, setup_header::kPrefAddress), 0x1000000u);
  EXPECT_EQ(static_cast<uint8_t>(page[setup_header::kLoadFlags]), setup_header::kLoadedHigh);
  EXPECT_EQ(static_cast<uint8_t>(page[setup_header::kTypeOfLoader]), 0xff);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kRamdiskImage), 0x23456000u);
  EXPECT_EQ(load_le<uint32_t>(page, zero_page::kExtRamdiskImage), 1u);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kRamdiskSize), 0x1000u);
  EXPECT_EQ(load_le<uint32_t>(page, zero_page::kExtRamdiskSize), 1u);
  EXPECT_EQ(load_le<uint64_t>(page, zero_page::kAcpiRsdpAddr), 0xe0000u);
  // Nothing outside the header and the fields ember owns is copied from the image.
  EXPECT_EQ(static_cast<uint8_t>(page[0x26c]), 0);
}

TEST(BootParams, WritesTheE820Table) {
  const auto page = build_boot_params({.cmdline_address = 0x20000, .e820 = kMap});
  EXPECT_EQ(static_cast<uint8_t>(page[zero_page::kE820Entries]), 2);
  const size_t second = zero_page::kE820Table + zero_page::kE820EntrySize;
  EXPECT_EQ(load_le<uint64_t>(page, zero_page::kE820Table + 8), 0x9fc00u);
  EXPECT_EQ(load_le<uint64_t>(page, second), 0x100000u);
  EXPECT_EQ(load_le<uint64_t>(page, second + 8), 0x1000000u);
  EXPECT_EQ(load_le<uint32_t>(page, second + 16), kE820Ram);
  EXPECT_EQ(load_le<uint64_t>(page, second + zero_page::kE820EntrySize), 0u);
}

TEST(BootParams, RejectsTooManyE820EntriesAndOversizedHeaders) {
  const std::vector<E820Entry> huge(129, E820Entry{0, 0x1000, kE820Ram});
  EXPECT_THROW(build_boot_params({.e820 = huge}), Error);
  const std::vector<E820Entry> full(128, E820Entry{0, 0x1000, kE820Ram});
  EXPECT_NO_THROW(build_boot_params({.e820 = full}));
  const std::vector<std::byte> header(0x290 - 0x1f1 + 1);
  EXPECT_THROW(build_boot_params({.setup_header = header}), Error);
}

}  // namespace
}  // namespace ember::boot
