#include "boot/bzimage.hpp"

#include <algorithm>
#include <sstream>

#include "boot/boot_params.hpp"
#include "boot/layout.hpp"
#include "boot/little_endian.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

using namespace setup_header;

constexpr uint64_t kSectorSize = 512;
constexpr uint64_t kEntry64Offset = 0x200;  // boot.rst, "64-bit BOOT PROTOCOL".
constexpr uint16_t kMinimumProtocol = 0x0206;
constexpr uint16_t kXLoadFlagsProtocol = 0x020c;
constexpr uint16_t kInitSizeProtocol = 0x020a;
constexpr uint64_t kMiB = 1 << 20;

std::string hex(uint64_t value) {
  return (std::ostringstream() << "0x" << std::hex << value).str();
}

std::string protocol_name(uint16_t version) {
  return (std::ostringstream() << (version >> 8) << "." << std::hex << (version >> 4 & 0xf)
                               << (version & 0xf))
      .str();
}

Error image_error(const std::string& path, const std::string& reason) {
  return Error("kernel " + path + ": " + reason);
}

uint64_t memory_end(const GuestMemory& memory) {
  const auto& last = memory.regions().back();
  return last.guest_address + last.size;
}

// The address the decompressor runs at, from the "64-bit BOOT PROTOCOL" rules: a relocatable
// kernel moves up to kernel_alignment but never below pref_address (LOAD_PHYSICAL_ADDR).
uint64_t runtime_start(std::span<const std::byte> image, uint64_t load_address) {
  const uint64_t preferred = load_le<uint64_t>(image, kPrefAddress);
  if (static_cast<uint8_t>(image[kRelocatableKernel]) == 0) return preferred;
  const uint64_t alignment = std::max<uint64_t>(load_le<uint32_t>(image, kKernelAlignment), 1);
  const uint64_t aligned = (load_address + alignment - 1) / alignment * alignment;
  return std::max(aligned, preferred);
}

}  // namespace

bool is_bzimage(std::span<const std::byte> image) {
  return image.size() >= kHeader + 4 && load_le<uint16_t>(image, kBootFlag) == kBootFlagMagic &&
         load_le<uint32_t>(image, kHeader) == kHeaderMagic;
}

BzImageLoad load_bzimage(const GuestMemory& memory, const std::string& path,
                         std::span<const std::byte> image) {
  if (!is_bzimage(image)) throw image_error(path, "not a bzImage (no setup header)");
  if (image.size() < kEnd)
    throw image_error(path, "truncated bzImage: setup header claims " + std::to_string(kEnd) +
                                " bytes, file has " + std::to_string(image.size()));
  const uint16_t version = load_le<uint16_t>(image, kVersion);
  if (version < kMinimumProtocol)
    throw image_error(path, "bzImage boot protocol " + protocol_name(version) +
                                " is older than 2.06, which ember needs");
  const uint16_t xloadflags =
      version >= kXLoadFlagsProtocol ? load_le<uint16_t>(image, kXLoadFlags) : 0;
  if ((xloadflags & kXlfKernel64) == 0)
    throw image_error(path, "bzImage has no 64-bit entry point (protocol " +
                                protocol_name(version) + ", xloadflags " + hex(xloadflags) + ")");
  if ((static_cast<uint8_t>(image[kLoadFlags]) & kLoadedHigh) == 0)
    throw image_error(path, "zImage (protected-mode code not loaded high) is not supported");

  const uint8_t setup_sects = static_cast<uint8_t>(image[kSetupSects]);
  const uint64_t setup_size = ((setup_sects == 0 ? 4 : setup_sects) + 1) * kSectorSize;
  const uint64_t claimed = setup_size + uint64_t{load_le<uint32_t>(image, kSysSize)} * 16;
  if (image.size() < claimed || image.size() <= setup_size)
    throw image_error(path, "truncated bzImage: setup header claims " + std::to_string(claimed) +
                                " bytes, file has " + std::to_string(image.size()));

  const std::span<const std::byte> protected_mode = image.subspan(setup_size);
  const uint64_t load_address = layout::kHighRamStart;
  auto target = memory.slice(load_address, protected_mode.size());
  if (!target)
    throw image_error(path, "kernel of " + std::to_string(protected_mode.size() / kMiB) +
                                " MiB does not fit in guest memory at " + hex(load_address) +
                                " (memory ends at " + hex(memory_end(memory)) +
                                "); raise --memory");
  std::copy(protected_mode.begin(), protected_mode.end(), target->begin());

  uint64_t end = load_address + protected_mode.size();
  if (version >= kInitSizeProtocol) {
    const uint64_t start = runtime_start(image, load_address);
    const uint64_t init_size = load_le<uint32_t>(image, kInitSize);
    if (!memory.slice(start, init_size))
      throw image_error(path, "kernel needs " + std::to_string((init_size + kMiB - 1) / kMiB) +
                                  " MiB at " + hex(start) +
                                  " to decompress (init_size), guest memory ends at " +
                                  hex(memory_end(memory)) + "; raise --memory");
    end = std::max(end, start + init_size);
  }

  const size_t header_end = std::min<size_t>(kJump + 2 + static_cast<uint8_t>(image[kJump + 1]),
                                             zero_page::kSetupHeaderLimit);
  return BzImageLoad{
      .load_address = load_address,
      .entry = load_address + kEntry64Offset,
      .end = end,
      .setup_header = image.subspan(kSetupSects, header_end - kSetupSects),
      .initrd_addr_max = load_le<uint32_t>(image, kInitrdAddrMax),
      .cmdline_size = load_le<uint32_t>(image, kCmdlineSize),
  };
}

}  // namespace ember::boot
