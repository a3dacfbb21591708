// The Linux zero page (struct boot_params) for the 64-bit boot protocol, written byte by byte at
// fixed offsets. Offsets: Documentation/arch/x86/zero-page.rst and boot.rst ("THE REAL-MODE KERNEL
// HEADER"); the setup header sits at the same offsets in a bzImage file and in the zero page.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "boot/e820.hpp"

namespace ember::boot {

inline constexpr size_t kBootParamsSize = 4096;

// struct boot_params fields outside the setup header (zero-page.rst).
namespace zero_page {
inline constexpr size_t kAcpiRsdpAddr = 0x070;      // u64, protocol 2.14+.
inline constexpr size_t kExtRamdiskImage = 0x0c0;   // u32, high half of ramdisk_image.
inline constexpr size_t kExtRamdiskSize = 0x0c4;    // u32, high half of ramdisk_size.
inline constexpr size_t kExtCmdLinePtr = 0x0c8;     // u32, high half of cmd_line_ptr.
inline constexpr size_t kE820Entries = 0x1e8;       // u8.
inline constexpr size_t kSentinel = 0x1ef;          // u8, must stay 0 from a careful loader.
inline constexpr size_t kSetupHeader = 0x1f1;       // struct setup_header starts here.
inline constexpr size_t kSetupHeaderLimit = 0x290;  // edd_mbr_sig_buffer follows the header area.
inline constexpr size_t kE820Table = 0x2d0;         // struct boot_e820_entry[128], 20 bytes each.
inline constexpr size_t kE820EntrySize = 20;
inline constexpr size_t kE820MaxEntries = 128;
inline constexpr size_t kE820TableEnd = 0xcd0;
}  // namespace zero_page

// struct setup_header fields, as offsets from the start of the zero page / bzImage (boot.rst).
namespace setup_header {
inline constexpr size_t kSetupSects = 0x1f1;  // u8, 0 means 4.
inline constexpr size_t kSysSize = 0x1f4;     // u32, protected-mode size in 16-byte units.
inline constexpr size_t kVidMode = 0x1fa;     // u16.
inline constexpr size_t kBootFlag = 0x1fe;    // u16, 0xAA55.
inline constexpr size_t kJump = 0x200;  // u16, short jump; its second byte + 0x202 ends the header.
inline constexpr size_t kHeader = 0x202;         // u32, "HdrS".
inline constexpr size_t kVersion = 0x206;        // u16, protocol version.
inline constexpr size_t kTypeOfLoader = 0x210;   // u8.
inline constexpr size_t kLoadFlags = 0x211;      // u8.
inline constexpr size_t kCode32Start = 0x214;    // u32.
inline constexpr size_t kRamdiskImage = 0x218;   // u32.
inline constexpr size_t kRamdiskSize = 0x21c;    // u32.
inline constexpr size_t kHeapEndPtr = 0x224;     // u16.
inline constexpr size_t kCmdLinePtr = 0x228;     // u32, 2.02+.
inline constexpr size_t kInitrdAddrMax = 0x22c;  // u32, 2.03+; highest address the initrd may use.
inline constexpr size_t kKernelAlignment = 0x230;    // u32, 2.05+.
inline constexpr size_t kRelocatableKernel = 0x234;  // u8, 2.05+.
inline constexpr size_t kXLoadFlags = 0x236;         // u16, 2.12+.
inline constexpr size_t kCmdlineSize = 0x238;        // u32, 2.06+; maximum length without the NUL.
inline constexpr size_t kHardwareSubarch = 0x23c;    // u32, 2.07+.
inline constexpr size_t kSetupData = 0x250;          // u64, 2.09+.
inline constexpr size_t kPrefAddress = 0x258;        // u64, 2.10+.
inline constexpr size_t kInitSize = 0x260;           // u32, 2.10+.
inline constexpr size_t kEnd = 0x26c;  // End of the 2.15 header (after kernel_info_offset).

inline constexpr uint16_t kBootFlagMagic = 0xaa55;
inline constexpr uint32_t kHeaderMagic = 0x53726448;  // "HdrS" little-endian.
inline constexpr uint8_t kLoaderUndefined = 0xff;     // type_of_loader for loaders without an id.
inline constexpr uint16_t kVidModeNormal = 0xffff;
inline constexpr uint8_t kLoadedHigh = 1 << 0;  // loadflags: protected-mode code at 1 MiB.
inline constexpr uint8_t kCanUseHeap = 1 << 7;
inline constexpr uint16_t kXlfKernel64 = 1 << 0;     // xloadflags: 64-bit entry at +0x200.
inline constexpr uint16_t kProtocolForElf = 0x020f;  // What ember claims when it writes the header.
}  // namespace setup_header

static_assert(setup_header::kSetupSects == zero_page::kSetupHeader);
static_assert(setup_header::kEnd <= zero_page::kSetupHeaderLimit);
static_assert(zero_page::kE820Table + zero_page::kE820MaxEntries * zero_page::kE820EntrySize ==
              zero_page::kE820TableEnd);
static_assert(zero_page::kE820TableEnd <= kBootParamsSize);

struct BootParamsSpec {
  // The setup header bytes of a bzImage, from offset 0x1f1 to its end. Empty for an ELF vmlinux:
  // then ember writes a minimal header (boot flag, "HdrS", protocol 2.15).
  std::span<const std::byte> setup_header;
  uint64_t cmdline_address = 0;
  uint64_t initrd_address = 0;
  uint64_t initrd_size = 0;
  std::span<const E820Entry> e820;
  uint64_t rsdp_address = 0;  // 0: the kernel scans the BIOS area itself.
};

// The zero page. Throws Error when the e820 map has more than 128 entries or the header does not
// fit.
std::array<std::byte, kBootParamsSize> build_boot_params(const BootParamsSpec& spec);

}  // namespace ember::boot
