#include "boot/boot_params.hpp"

#include <algorithm>
#include <string>

#include "boot/little_endian.hpp"
#include "vmm/error.hpp"

namespace ember::boot {
namespace {

void write_minimal_header(std::span<std::byte> page) {
  using namespace setup_header;
  store_le<uint16_t>(page, kBootFlag, kBootFlagMagic);
  store_le<uint32_t>(page, kHeader, kHeaderMagic);
  store_le<uint16_t>(page, kVersion, kProtocolForElf);
  store_le<uint16_t>(page, kVidMode, kVidModeNormal);
  store_le<uint32_t>(page, kInitrdAddrMax, 0x7fffffff);
}

void write_e820(std::span<std::byte> page, std::span<const E820Entry> e820) {
  if (e820.size() > zero_page::kE820MaxEntries)
    throw Error("boot_params: " + std::to_string(e820.size()) +
                " e820 entries, the zero page holds at most 128");
  page[zero_page::kE820Entries] = static_cast<std::byte>(e820.size());
  for (size_t i = 0; i < e820.size(); ++i) {
    const size_t offset = zero_page::kE820Table + i * zero_page::kE820EntrySize;
    store_le<uint64_t>(page, offset, e820[i].addr);
    store_le<uint64_t>(page, offset + 8, e820[i].size);
    store_le<uint32_t>(page, offset + 16, e820[i].type);
  }
}

}  // namespace

std::array<std::byte, kBootParamsSize> build_boot_params(const BootParamsSpec& spec) {
  using namespace setup_header;
  std::array<std::byte, kBootParamsSize> page{};
  if (spec.setup_header.empty()) {
    write_minimal_header(page);
  } else {
    if (spec.setup_header.size() > zero_page::kSetupHeaderLimit - zero_page::kSetupHeader)
      throw Error("boot_params: setup header of " + std::to_string(spec.setup_header.size()) +
                  " bytes does not fit the zero page");
    std::copy(spec.setup_header.begin(), spec.setup_header.end(),
              page.begin() + zero_page::kSetupHeader);
  }
  page[kTypeOfLoader] = static_cast<std::byte>(kLoaderUndefined);
  // Only LOADED_HIGH matters for the 64-bit entry; the real-mode heap is never used (no setup code
  // runs).
  page[kLoadFlags] = (page[kLoadFlags] | std::byte{kLoadedHigh}) & ~std::byte{kCanUseHeap};
  store_le<uint32_t>(page, kCmdLinePtr, static_cast<uint32_t>(spec.cmdline_address));
  store_le<uint32_t>(page, zero_page::kExtCmdLinePtr,
                     static_cast<uint32_t>(spec.cmdline_address >> 32));
  store_le<uint32_t>(page, kRamdiskImage, static_cast<uint32_t>(spec.initrd_address));
  store_le<uint32_t>(page, zero_page::kExtRamdiskImage,
                     static_cast<uint32_t>(spec.initrd_address >> 32));
  store_le<uint32_t>(page, kRamdiskSize, static_cast<uint32_t>(spec.initrd_size));
  store_le<uint32_t>(page, zero_page::kExtRamdiskSize,
                     static_cast<uint32_t>(spec.initrd_size >> 32));
  store_le<uint64_t>(page, kSetupData, 0);  // No setup_data chain.
  store_le<uint64_t>(page, zero_page::kAcpiRsdpAddr, spec.rsdp_address);
  write_e820(page, spec.e820);
  return page;
}

}  // namespace ember::boot
