#include "boot/kernel_loader.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "boot/boot_params.hpp"
#include "boot/e820.hpp"
#include "boot/layout.hpp"
#include "boot/little_endian.hpp"
#include "boot_images.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr uint64_t kMiB = 1 << 20;

std::string load_error(const GuestMemory& memory, const BootSpec& spec) {
  try {
    load_kernel(memory, spec);
  } catch (const Error& error) {
    return error.what();
  }
  return "no error";
}

// The zero page as written into guest memory.
std::vector<std::byte> boot_params_of(const GuestMemory& memory) {
  const auto view = memory.slice(layout::kBootParams, kBootParamsSize);
  return {view->begin(), view->end()};
}

std::string cmdline_of(const GuestMemory& memory) {
  std::string text;
  for (uint64_t address = layout::kCmdline;; ++address) {
    const auto c = memory.read_value<char>(address);
    if (!c || *c == '\0') return text;
    text += *c;
  }
}

TEST(KernelLoader, RejectsThingsThatAreNotKernels) {
  GuestMemory memory(ram_regions(64 * kMiB));
  test::Bytes noise(64 * 1024);
  std::mt19937 random(7);
  for (auto& byte : noise) byte = static_cast<std::byte>(random());
  EXPECT_EQ(load_error(memory, {.kernel_path = "/tmp/noise", .kernel = noise}),
            "kernel /tmp/noise: not a Linux kernel (no bzImage header, no ELF magic)");
  EXPECT_THAT(load_error(memory, {.kernel_path = "/tmp/empty", .kernel = {}}),
              HasSubstr("not a Linux kernel"));
}

TEST(KernelLoader, BzImageWritesBootParams) {
  GuestMemory memory(ram_regions(256 * kMiB));
  const auto kernel = test::make_bzimage();
  const auto initrd = test::pattern(3 * kMiB + 123, 5);
  const auto info = load_kernel(memory, {.kernel_path = "bz",
                                         .kernel = kernel,
                                         .initrd_path = "initrd",
                                         .initrd = initrd,
                                         .cmdline = "console=ttyS0 panic=-1",
                                         .rsdp_address = 0xe0000});
  EXPECT_EQ(info.mode, EntryMode::kLong64);
  EXPECT_EQ(info.entry, 0x100200u);
  EXPECT_EQ(info.boot_struct, layout::kBootParams);
  EXPECT_EQ(info.kernel_end, 0x1000000u + 0x400000u);  // pref_address + init_size.
  // The initrd tops out at the end of RAM (below initrd_addr_max), page aligned.
  EXPECT_EQ(info.initrd_address % 4096, 0u);
  EXPECT_LE(info.initrd_address + initrd.size(), 256 * kMiB);
  EXPECT_GT(info.initrd_address + initrd.size(), 256 * kMiB - 4096);
  EXPECT_EQ(info.initrd_size, initrd.size());
  EXPECT_EQ(memory.read_value<uint8_t>(info.initrd_address + 77), static_cast<uint8_t>(initrd[77]));

  const auto page = boot_params_of(memory);
  EXPECT_EQ(load_le<uint16_t>(page, setup_header::kBootFlag), 0xaa55);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kHeader), 0x53726448u);
  EXPECT_EQ(load_le<uint16_t>(page, setup_header::kVersion), 0x020f);
  EXPECT_EQ(static_cast<uint8_t>(page[setup_header::kTypeOfLoader]), 0xff);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kCmdLinePtr), layout::kCmdline);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kRamdiskImage), info.initrd_address);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kRamdiskSize), initrd.size());
  EXPECT_EQ(load_le<uint32_t>(page, zero_page::kExtRamdiskImage), 0u);
  EXPECT_EQ(load_le<uint64_t>(page, zero_page::kAcpiRsdpAddr), 0xe0000u);
  ASSERT_EQ(static_cast<uint8_t>(page[zero_page::kE820Entries]), 4);
  const size_t last = zero_page::kE820Table + 3 * zero_page::kE820EntrySize;
  EXPECT_EQ(load_le<uint64_t>(page, last), 0x100000u);
  EXPECT_EQ(load_le<uint64_t>(page, last + 8), 255 * kMiB);
  EXPECT_EQ(load_le<uint32_t>(page, last + 16), kE820Ram);
  EXPECT_EQ(cmdline_of(memory), "console=ttyS0 panic=-1");
}

TEST(KernelLoader, InitrdStaysBelowInitrdAddrMax) {
  GuestMemory memory(ram_regions(256 * kMiB));
  test::BzImageOptions options;
  options.initrd_addr_max = 0x5ffffff;  // Last usable byte below 96 MiB.
  const auto kernel = test::make_bzimage(options);
  const auto initrd = test::pattern(5000, 1);
  const auto info = load_kernel(
      memory, {.kernel_path = "bz", .kernel = kernel, .initrd_path = "i", .initrd = initrd});
  EXPECT_EQ(info.initrd_address, 0x6000000u - 8192);
  const auto page = boot_params_of(memory);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kRamdiskImage), 0x6000000u - 8192);
}

TEST(KernelLoader, InitrdThatDoesNotFitIsAnError) {
  GuestMemory memory(ram_regions(64 * kMiB));
  const auto kernel = test::make_bzimage();  // Claims [1 MiB, 20 MiB).
  const auto initrd = test::Bytes(45 * kMiB);
  EXPECT_EQ(load_error(
                memory,
                {.kernel_path = "bz", .kernel = kernel, .initrd_path = "/i.img", .initrd = initrd}),
            "initrd /i.img (45 MiB) does not fit in guest memory below 0x4000000 above the kernel "
            "(ends at 0x1400000); raise --memory");
  const auto fits = test::Bytes(44 * kMiB);
  EXPECT_NO_THROW(load_kernel(memory, {.kernel_path = "bz", .kernel = kernel, .initrd = fits}));
}

TEST(KernelLoader, CommandLineLimits) {
  GuestMemory memory(ram_regions(64 * kMiB));
  test::BzImageOptions options;
  options.cmdline_size = 16;
  const auto kernel = test::make_bzimage(options);
  EXPECT_NO_THROW(load_kernel(
      memory, {.kernel_path = "bz", .kernel = kernel, .cmdline = std::string(16, 'a')}));
  EXPECT_EQ(cmdline_of(memory), std::string(16, 'a'));
  EXPECT_EQ(
      load_error(memory, {.kernel_path = "/bz", .kernel = kernel, .cmdline = std::string(17, 'a')}),
      "command line of 17 bytes is longer than the 16 bytes kernel /bz accepts");
  const auto elf = test::make_elf();
  EXPECT_NO_THROW(load_kernel(
      memory,
      {.kernel_path = "vm", .kernel = elf, .cmdline = std::string(layout::kCmdlineMax - 1, 'b')}));
  EXPECT_THAT(load_error(memory, {.kernel_path = "vm",
                                  .kernel = elf,
                                  .cmdline = std::string(layout::kCmdlineMax, 'b')}),
              HasSubstr("longer than the 65535 bytes"));
  EXPECT_THAT(
      load_error(memory, {.kernel_path = "vm", .kernel = elf, .cmdline = std::string("a\0b", 3)}),
      HasSubstr("NUL"));
}

TEST(KernelLoader, ElfWithoutPvhNoteEntersLongModeWithBootParams) {
  GuestMemory memory(ram_regions(64 * kMiB));
  const auto kernel = test::make_elf();
  const auto info = load_kernel(memory, {.kernel_path = "vm", .kernel = kernel, .cmdline = "x"});
  EXPECT_EQ(info.mode, EntryMode::kLong64);
  EXPECT_EQ(info.entry, 0x1000000u);
  EXPECT_EQ(info.boot_struct, layout::kBootParams);
  EXPECT_EQ(info.kernel_end, 0x1003000u);
  const auto page = boot_params_of(memory);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kHeader), 0x53726448u);
  EXPECT_EQ(load_le<uint16_t>(page, setup_header::kVersion), 0x020f);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kCmdLinePtr), layout::kCmdline);
  EXPECT_EQ(static_cast<uint8_t>(page[zero_page::kE820Entries]), 4);

  kvm_regs regs{};
  kvm_sregs sregs{};
  setup_boot_cpu(memory, info, regs, sregs);
  EXPECT_EQ(regs.rip, 0x1000000u);
  EXPECT_EQ(regs.rsi, layout::kBootParams);
  EXPECT_EQ(sregs.cs.l, 1);
}

TEST(KernelLoader, ElfWithPvhNoteWritesStartInfo) {
  GuestMemory memory(ram_regions(5ull << 30));
  test::ElfOptions options;
  options.pvh_entry = 0x1000040;
  const auto kernel = test::make_elf(options);
  const auto initrd = test::pattern(8192, 3);
  const auto info = load_kernel(memory, {.kernel_path = "vm",
                                         .kernel = kernel,
                                         .initrd_path = "i",
                                         .initrd = initrd,
                                         .cmdline = "quiet",
                                         .rsdp_address = 0xe0000});
  EXPECT_EQ(info.mode, EntryMode::kPvh32);
  EXPECT_EQ(info.entry, 0x1000040u);
  EXPECT_EQ(info.boot_struct, layout::kPvhStartInfo);
  // Below 2 GiB (initrd_addr_max default), not at the top of the 3 GiB low region.
  EXPECT_EQ(info.initrd_address, 0x80000000u - 8192);
  const auto start = layout::kPvhStartInfo;
  EXPECT_EQ(memory.read_value<uint32_t>(start), 0x336ec578u);
  EXPECT_EQ(memory.read_value<uint32_t>(start + 12), 1u);
  EXPECT_EQ(memory.read_value<uint64_t>(start + 24), layout::kCmdline);
  EXPECT_EQ(memory.read_value<uint64_t>(start + 32), 0xe0000u);
  const auto modlist = *memory.read_value<uint64_t>(start + 16);
  EXPECT_EQ(memory.read_value<uint64_t>(modlist), info.initrd_address);
  EXPECT_EQ(memory.read_value<uint64_t>(modlist + 8), 8192u);
  const auto memmap = *memory.read_value<uint64_t>(start + 40);
  ASSERT_EQ(memory.read_value<uint32_t>(start + 48), 5u);
  EXPECT_EQ(memory.read_value<uint64_t>(memmap + 4 * 24), 4ull << 30);
  EXPECT_EQ(memory.read_value<uint64_t>(memmap + 4 * 24 + 8), 2ull << 30);
  EXPECT_EQ(memory.read_value<uint32_t>(memmap + 4 * 24 + 16), kE820Ram);
  EXPECT_EQ(cmdline_of(memory), "quiet");

  kvm_regs regs{};
  kvm_sregs sregs{};
  setup_boot_cpu(memory, info, regs, sregs);
  EXPECT_EQ(regs.rip, 0x1000040u);
  EXPECT_EQ(regs.rbx, layout::kPvhStartInfo);
  EXPECT_EQ(sregs.cr0 & 0x80000000u, 0u);
}

TEST(KernelLoader, KernelTooLargeForMemory) {
  GuestMemory memory(ram_regions(16 * kMiB));
  const auto kernel = test::make_bzimage();  // Needs [16 MiB, 20 MiB) to decompress.
  EXPECT_THAT(load_error(memory, {.kernel_path = "/bz", .kernel = kernel}),
              StartsWith("kernel /bz: kernel needs 4 MiB at 0x1000000 to decompress"));
}

// The shared fixtures (../shared/guest, see HOSTS.md). CI has them; a missing one is a failure.
std::filesystem::path fixture(const std::string& name) {
  const char* directory = std::getenv("EMBER_GUEST_FIXTURES");
  return std::filesystem::path(directory ? directory : EMBER_SOURCE_ROOT "/../shared/guest") / name;
}

std::optional<test::Bytes> read_fixture(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return std::nullopt;
  std::vector<char> chars((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  test::Bytes bytes(chars.size());
  std::transform(chars.begin(), chars.end(), bytes.begin(),
                 [](char c) { return static_cast<std::byte>(c); });
  return bytes;
}

TEST(KernelLoaderFixture, Vmlinux612HasAPvhEntry) {
  const auto path = fixture("vmlinux-6.12-microvm");
  const auto kernel = read_fixture(path);
  ASSERT_TRUE(kernel) << "missing shared fixture " << path
                      << " (set EMBER_GUEST_FIXTURES to the directory holding it)";
  GuestMemory memory(ram_regions(256 * kMiB));
  const auto info = load_kernel(memory, {.kernel_path = path.string(),
                                         .kernel = *kernel,
                                         .cmdline = "console=ttyS0",
                                         .rsdp_address = 0xe0000});
  EXPECT_EQ(info.mode, EntryMode::kPvh32);
  EXPECT_EQ(info.entry, 0x1000000u);
  EXPECT_EQ(info.boot_struct, layout::kPvhStartInfo);
  EXPECT_GT(info.kernel_end, 0x1000000u);
  EXPECT_LT(info.kernel_end, 64 * kMiB);
  EXPECT_EQ(memory.read_value<uint32_t>(layout::kPvhStartInfo), 0x336ec578u);
}

TEST(KernelLoaderFixture, BzImage612EntersAt0x100200) {
  const auto path = fixture("bzImage-6.12-microvm");
  const auto kernel = read_fixture(path);
  ASSERT_TRUE(kernel) << "missing shared fixture " << path
                      << " (set EMBER_GUEST_FIXTURES to the directory holding it)";
  GuestMemory memory(ram_regions(256 * kMiB));
  const auto initrd = test::pattern(kMiB, 1);
  const auto info = load_kernel(memory, {.kernel_path = path.string(),
                                         .kernel = *kernel,
                                         .initrd_path = "i",
                                         .initrd = initrd,
                                         .cmdline = "console=ttyS0",
                                         .rsdp_address = 0xe0000});
  EXPECT_EQ(info.mode, EntryMode::kLong64);
  EXPECT_EQ(info.entry, 0x100200u);
  EXPECT_EQ(info.boot_struct, layout::kBootParams);
  EXPECT_EQ(info.initrd_address, 255 * kMiB);
  const auto page = boot_params_of(memory);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kHeader), 0x53726448u);
  EXPECT_GE(load_le<uint16_t>(page, setup_header::kVersion), 0x020c);
  EXPECT_EQ(load_le<uint32_t>(page, setup_header::kCmdLinePtr), layout::kCmdline);
  EXPECT_EQ(load_le<uint64_t>(page, zero_page::kAcpiRsdpAddr), 0xe0000u);
  EXPECT_EQ(static_cast<uint8_t>(page[zero_page::kE820Entries]), 4);
}

}  // namespace
}  // namespace ember::boot
