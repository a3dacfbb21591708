#include "boot/pvh_start_info.hpp"

#include "boot/little_endian.hpp"

namespace ember::boot {

std::vector<std::byte> build_pvh_start_info(const PvhSpec& spec) {
  using namespace pvh;
  std::vector<std::byte> block(kPvhMemmapOffset + spec.memmap.size() * kMemmapEntrySize);
  store_le<uint32_t>(block, kMagicOffset, kMagic);
  store_le<uint32_t>(block, kVersionOffset, kVersion);
  store_le<uint32_t>(block, kFlagsOffset, 0);
  store_le<uint64_t>(block, kCmdlinePaddrOffset, spec.cmdline_address);
  store_le<uint64_t>(block, kRsdpPaddrOffset, spec.rsdp_address);
  if (spec.initrd_size != 0) {
    store_le<uint32_t>(block, kNrModulesOffset, 1);
    store_le<uint64_t>(block, kModlistPaddrOffset, spec.address + kPvhModlistOffset);
    store_le<uint64_t>(block, kPvhModlistOffset, spec.initrd_address);
    store_le<uint64_t>(block, kPvhModlistOffset + 8, spec.initrd_size);
    // cmdline_paddr and reserved of the module stay 0.
  }
  store_le<uint64_t>(block, kMemmapPaddrOffset, spec.address + kPvhMemmapOffset);
  store_le<uint32_t>(block, kMemmapEntriesOffset, static_cast<uint32_t>(spec.memmap.size()));
  for (size_t i = 0; i < spec.memmap.size(); ++i) {
    const size_t offset = kPvhMemmapOffset + i * kMemmapEntrySize;
    store_le<uint64_t>(block, offset, spec.memmap[i].addr);
    store_le<uint64_t>(block, offset + 8, spec.memmap[i].size);
    store_le<uint32_t>(block, offset + 16, spec.memmap[i].type);
  }
  return block;
}

}  // namespace ember::boot
