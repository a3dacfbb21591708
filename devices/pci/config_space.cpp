#include "devices/pci/config_space.hpp"

#include <algorithm>
#include <bit>
#include <string>

#include "vmm/error.hpp"

namespace ember {

using namespace pci;

namespace {
// Command bits a driver may set: no I/O BARs here, so I/O space stays hardwired to 0 (§6.2.2).
constexpr uint16_t kWritableCommand =
    kCommandMemorySpace | kCommandBusMaster | kCommandInterruptDisable;
}  // namespace

PciConfigSpace::PciConfigSpace(const PciIdentity& identity) {
  store(kVendorId, 2, identity.vendor_id);
  store(kDeviceId, 2, identity.device_id);
  store(kRevisionId, 1, identity.revision);
  store(kClassCode, 1, identity.class_code & 0xff);
  store(kClassCode + 1, 2, (identity.class_code >> 8) & 0xffff);
  store(kSubsystemVendorId, 2, identity.subsystem_vendor_id);
  store(kSubsystemId, 2, identity.subsystem_id);
  store(kHeaderType, 1, 0);  // Type 0, single function.
  set_mask(kCommand, 2, kWritableCommand);
  set_mask(kCacheLineSize, 1, 0xff);  // Read/write scratch for software (§6.2.4).
  set_mask(kInterruptLine, 1, 0xff);  // Ditto; the interrupt pin stays 0 (no INTx).
}

void PciConfigSpace::set_mask(uint16_t offset, unsigned size, uint32_t mask) {
  for (unsigned i = 0; i < size; ++i) writable_[offset + i] = static_cast<uint8_t>(mask >> (8 * i));
}

uint32_t PciConfigSpace::load(uint16_t offset, unsigned size) const {
  uint32_t value = 0;
  for (unsigned i = 0; i < size && offset + i < kConfigSpaceSize; ++i)
    value |= static_cast<uint32_t>(bytes_[offset + i]) << (8 * i);
  return value;
}

void PciConfigSpace::store(uint16_t offset, unsigned size, uint32_t value) {
  for (unsigned i = 0; i < size && offset + i < kConfigSpaceSize; ++i)
    bytes_[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

void PciConfigSpace::add_memory_bar(const PciBarDefinition& bar) {
  const unsigned slots = bar.is_64bit ? 2 : 1;
  if (bar.index + slots > kBarCount) throw Error("pci: BAR index out of range");
  if (bar.size < 16 || !std::has_single_bit(bar.size) || (!bar.is_64bit && bar.size > (1ull << 31)))
    throw Error("pci: BAR size must be a power of two of at least 16 bytes");
  for (const PciBarDefinition& other : bars_) {
    const unsigned other_slots = other.is_64bit ? 2 : 1;
    if (bar.index < other.index + other_slots && other.index < bar.index + slots)
      throw Error("pci: BAR " + std::to_string(bar.index) + " defined twice");
  }
  bars_.push_back(bar);
  const uint16_t offset = static_cast<uint16_t>(kBar0 + 4 * bar.index);
  uint32_t type = bar.is_64bit ? kBarMemory64 : 0;
  if (bar.prefetchable) type |= kBarPrefetchable;
  store(offset, 4, type);
  // Address bits at and above the size are writable; those below read as zero.
  const uint64_t address_mask = ~(bar.size - 1);
  set_mask(offset, 4, static_cast<uint32_t>(address_mask) & ~kBarTypeMask);
  if (bar.is_64bit) set_mask(offset + 4, 4, static_cast<uint32_t>(address_mask >> 32));
}

const PciBarDefinition* PciConfigSpace::find_bar(uint8_t index) const {
  for (const PciBarDefinition& bar : bars_)
    if (bar.index == index) return &bar;
  return nullptr;
}

void PciConfigSpace::set_bar_address(uint8_t index, uint64_t address) {
  const PciBarDefinition* bar = find_bar(index);
  if (bar == nullptr) throw Error("pci: no BAR " + std::to_string(index));
  if (address % bar->size != 0 || (!bar->is_64bit && address + bar->size > (1ull << 32)))
    throw Error("pci: BAR " + std::to_string(index) + " address not aligned or out of reach");
  const uint16_t offset = static_cast<uint16_t>(kBar0 + 4 * index);
  const uint32_t type = load(offset, 4) & kBarTypeMask;
  store(offset, 4, static_cast<uint32_t>(address) | type);
  if (bar->is_64bit) store(offset + 4, 4, static_cast<uint32_t>(address >> 32));
}

std::optional<uint64_t> PciConfigSpace::bar_address(uint8_t index) const {
  const PciBarDefinition* bar = find_bar(index);
  if (bar == nullptr) return std::nullopt;
  const uint16_t offset = static_cast<uint16_t>(kBar0 + 4 * index);
  uint64_t address = load(offset, 4) & ~kBarTypeMask;
  if (bar->is_64bit) address |= static_cast<uint64_t>(load(offset + 4, 4)) << 32;
  return address & ~(bar->size - 1);
}

std::vector<PciBarRegion> PciConfigSpace::decoded_bars() const {
  std::vector<PciBarRegion> regions;
  if (!memory_enabled()) return regions;
  for (const PciBarDefinition& bar : bars_) {
    const uint64_t address = *bar_address(bar.index);
    if (address + bar.size < address) continue;  // Mid-sizing values near 2^64 decode nothing.
    regions.push_back({bar.index, address, bar.size});
  }
  return regions;
}

uint16_t PciConfigSpace::add_capability(uint8_t id, std::span<const uint8_t> body,
                                        std::span<const uint8_t> writable) {
  if (!writable.empty() && writable.size() != body.size())
    throw Error("pci: capability write mask does not match its body");
  const size_t length = 2 + body.size();
  const uint16_t offset = next_capability_;
  if (offset + length > kLegacyConfigSpaceSize) throw Error("pci: capabilities do not fit");
  bytes_[offset] = id;
  bytes_[offset + 1] = 0;  // End of list until another is appended.
  std::copy(body.begin(), body.end(), bytes_.begin() + offset + 2);
  std::copy(writable.begin(), writable.end(), writable_.begin() + offset + 2);
  if (last_capability_ == 0) {
    store(kCapabilitiesPointer, 1, offset);
    store(kStatus, 2, load(kStatus, 2) | kStatusCapabilitiesList);
  } else {
    bytes_[last_capability_ + 1] = static_cast<uint8_t>(offset);
  }
  last_capability_ = offset;
  next_capability_ = static_cast<uint16_t>((offset + length + 3) & ~3u);
  return offset;
}

void PciConfigSpace::read(uint16_t offset, std::span<uint8_t> data) const {
  for (size_t i = 0; i < data.size(); ++i) {
    const size_t at = offset + i;
    data[i] = at < kConfigSpaceSize ? bytes_[at] : uint8_t{0xff};
  }
}

void PciConfigSpace::write(uint16_t offset, std::span<const uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    const size_t at = offset + i;
    if (at >= kConfigSpaceSize) break;
    bytes_[at] = static_cast<uint8_t>((bytes_[at] & ~writable_[at]) | (data[i] & writable_[at]));
  }
}

}  // namespace ember
