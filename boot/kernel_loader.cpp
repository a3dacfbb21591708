#include "boot/kernel_loader.hpp"

#include <algorithm>
#include <sstream>
#include <vector>

#include "boot/boot_params.hpp"
#include "boot/bzimage.hpp"
#include "boot/e820.hpp"
#include "boot/elf_loader.hpp"
#include "boot/layout.hpp"
#include "boot/pvh_start_info.hpp"
#include "boot/x86_setup.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

constexpr uint64_t kPageSize = 4096;
constexpr uint64_t kMiB = 1 << 20;
// boot.rst: kernels before protocol 2.03 (and ember's ELF/PVH path) keep the initrd below 2 GiB.
constexpr uint32_t kDefaultInitrdAddrMax = 0x7fffffff;

std::string hex(uint64_t value) {
  return (std::ostringstream() << "0x" << std::hex << value).str();
}

// What the format-specific loaders found, in the terms the rest of the boot needs.
struct LoadedKernel {
  EntryMode mode;
  uint64_t entry;
  uint64_t end;
  uint32_t initrd_addr_max;
  uint64_t cmdline_max;                     // Longest command line without the NUL.
  std::span<const std::byte> setup_header;  // bzImage only.
};

LoadedKernel load_any(const GuestMemory& memory, const BootSpec& spec) {
  constexpr uint64_t kCmdlineMaxLength = layout::kCmdlineMax - 1;
  if (is_elf(spec.kernel)) {
    const ElfLoad elf = load_elf(memory, spec.kernel_path, spec.kernel);
    return LoadedKernel{
        .mode = elf.pvh_entry ? EntryMode::kPvh32 : EntryMode::kLong64,
        .entry = elf.pvh_entry.value_or(elf.entry),
        .end = elf.end,
        .initrd_addr_max = kDefaultInitrdAddrMax,
        .cmdline_max = kCmdlineMaxLength,
        .setup_header = {},
    };
  }
  if (is_bzimage(spec.kernel)) {
    const BzImageLoad bz = load_bzimage(memory, spec.kernel_path, spec.kernel);
    return LoadedKernel{
        .mode = EntryMode::kLong64,
        .entry = bz.entry,
        .end = bz.end,
        .initrd_addr_max = bz.initrd_addr_max,
        .cmdline_max = std::min<uint64_t>(bz.cmdline_size, kCmdlineMaxLength),
        .setup_header = bz.setup_header,
    };
  }
  throw Error("kernel " + spec.kernel_path +
              ": not a Linux kernel (no bzImage header, no ELF magic)");
}

void write_cmdline(const GuestMemory& memory, const BootSpec& spec, uint64_t cmdline_max) {
  if (spec.cmdline.find('\0') != std::string::npos) throw Error("command line contains a NUL byte");
  if (spec.cmdline.size() > cmdline_max)
    throw Error("command line of " + std::to_string(spec.cmdline.size()) +
                " bytes is longer than the " + std::to_string(cmdline_max) + " bytes kernel " +
                spec.kernel_path + " accepts");
  std::vector<std::byte> bytes(spec.cmdline.size() + 1);  // Ends in the NUL.
  std::transform(spec.cmdline.begin(), spec.cmdline.end(), bytes.begin(),
                 [](char c) { return static_cast<std::byte>(c); });
  memory.write_or_throw(layout::kCmdline, bytes);
}

// The end of the RAM region the kernel was loaded into (the low region: below the MMIO hole).
uint64_t low_ram_end(const GuestMemory& memory) {
  for (const auto& region : memory.regions())
    if (region.guest_address <= layout::kHighRamStart &&
        layout::kHighRamStart < region.guest_address + region.size)
      return region.guest_address + region.size;
  throw Error("guest memory: no RAM at 1 MiB");
}

// Highest page-aligned address below min(initrd_addr_max + 1, low RAM end) that stays above the
// kernel.
uint64_t place_initrd(const GuestMemory& memory, const BootSpec& spec, const LoadedKernel& kernel) {
  const uint64_t size = spec.initrd.size();
  const uint64_t limit = std::min(low_ram_end(memory), uint64_t{kernel.initrd_addr_max} + 1);
  const uint64_t address = size <= limit ? (limit - size) / kPageSize * kPageSize : 0;
  if (size > limit || address < kernel.end)
    throw Error("initrd " + spec.initrd_path + " (" + std::to_string((size + kMiB - 1) / kMiB) +
                " MiB) does not fit in guest memory below " + hex(limit) +
                " above the kernel (ends at " + hex(kernel.end) + "); raise --memory");
  memory.write_or_throw(address, spec.initrd);
  return address;
}

}  // namespace

LoadedImage load_kernel_image(const GuestMemory& memory, const BootSpec& spec) {
  const LoadedKernel kernel = load_any(memory, spec);
  LoadedImage image{.mode = kernel.mode,
                    .entry = kernel.entry,
                    .end = kernel.end,
                    .cmdline_max = kernel.cmdline_max,
                    .setup_header = {kernel.setup_header.begin(), kernel.setup_header.end()},
                    .initrd_address = 0,
                    .initrd_size = spec.initrd.size()};
  if (!spec.initrd.empty()) image.initrd_address = place_initrd(memory, spec, kernel);
  return image;
}

BootInfo write_boot_structures(const GuestMemory& memory, const BootSpec& spec,
                               const LoadedImage& image) {
  const std::vector<E820Entry> e820 = build_e820(memory.regions());
  write_cmdline(memory, spec, image.cmdline_max);
  BootInfo info{.mode = image.mode,
                .entry = image.entry,
                .boot_struct = 0,
                .kernel_end = image.end,
                .initrd_address = image.initrd_address,
                .initrd_size = image.initrd_size};

  if (image.mode == EntryMode::kPvh32) {
    const auto block = build_pvh_start_info({.address = layout::kPvhStartInfo,
                                             .cmdline_address = layout::kCmdline,
                                             .rsdp_address = spec.rsdp_address,
                                             .initrd_address = info.initrd_address,
                                             .initrd_size = info.initrd_size,
                                             .memmap = e820});
    if (layout::kPvhStartInfo + block.size() > layout::kBootParams)
      throw Error("PVH start info with " + std::to_string(e820.size()) +
                  " memory map entries overflows " + hex(layout::kBootParams));
    memory.write_or_throw(layout::kPvhStartInfo, block);
    info.boot_struct = layout::kPvhStartInfo;
  } else {
    const auto page = build_boot_params({.setup_header = image.setup_header,
                                         .cmdline_address = layout::kCmdline,
                                         .initrd_address = info.initrd_address,
                                         .initrd_size = info.initrd_size,
                                         .e820 = e820,
                                         .rsdp_address = spec.rsdp_address});
    memory.write_or_throw(layout::kBootParams, page);
    info.boot_struct = layout::kBootParams;
  }
  return info;
}

BootInfo load_kernel(const GuestMemory& memory, const BootSpec& spec) {
  return write_boot_structures(memory, spec, load_kernel_image(memory, spec));
}

void setup_boot_cpu(const GuestMemory& memory, const BootInfo& info, kvm_regs& regs,
                    kvm_sregs& sregs) {
  if (info.mode == EntryMode::kPvh32)
    setup_pvh(memory, info.entry, info.boot_struct, regs, sregs);
  else
    setup_long_mode(memory, info.entry, info.boot_struct, regs, sregs);
}

}  // namespace ember::boot
