#include "devices/pci/msix.hpp"
#include "devices/register_bytes.hpp"

#include <algorithm>
#include <array>

#include "vmm/error.hpp"

namespace ember {

using namespace pci;

namespace {

// DWORD or QWORD, naturally aligned (§6.8.2: other accesses are undefined; we ignore them).
bool valid_access(uint64_t offset, size_t size) {
  return (size == 4 || size == 8) && offset % size == 0;
}

}  // namespace

MsixTable::MsixTable(uint16_t vector_count, std::shared_ptr<MsiSink> sink)
    : sink_(std::move(sink)), entries_(vector_count) {
  if (vector_count == 0 || vector_count > kMsixMaxVectors)
    throw Error("msi-x: vector count must be 1 to 2048");
  if (!sink_) throw Error("msi-x: no MSI sink");
}

uint16_t MsixTable::add_capability(PciConfigSpace& config, uint8_t bar, uint32_t table_offset,
                                   uint32_t pba_offset) {
  if (bar >= kBarCount || table_offset % 8 != 0 || pba_offset % 8 != 0)
    throw Error("msi-x: table or PBA misplaced");
  const uint16_t control = static_cast<uint16_t>(entries_.size() - 1);
  const uint32_t table = table_offset | bar;
  const uint32_t pba = pba_offset | bar;
  const std::array<uint8_t, 10> body{
      static_cast<uint8_t>(control),     static_cast<uint8_t>(control >> 8),
      static_cast<uint8_t>(table),       static_cast<uint8_t>(table >> 8),
      static_cast<uint8_t>(table >> 16), static_cast<uint8_t>(table >> 24),
      static_cast<uint8_t>(pba),         static_cast<uint8_t>(pba >> 8),
      static_cast<uint8_t>(pba >> 16),   static_cast<uint8_t>(pba >> 24)};
  // Only MSI-X Enable and Function Mask are writable.
  const std::array<uint8_t, 10> writable{0, (kMsixControlEnable | kMsixControlFunctionMask) >> 8};
  capability_ = config.add_capability(kCapabilityMsix, body, writable);
  return capability_;
}

void MsixTable::update_from_config(const PciConfigSpace& config) {
  if (capability_ == 0) return;
  const uint32_t control = config.load(capability_ + kMsixMessageControl, 2);
  std::lock_guard lock(mutex_);
  const bool enabled = (control & kMsixControlEnable) != 0;
  const bool function_masked = (control & kMsixControlFunctionMask) != 0;
  if (enabled == enabled_ && function_masked == function_masked_) return;
  enabled_ = enabled;
  function_masked_ = function_masked;
  for (uint16_t vector = 0; vector < entries_.size(); ++vector) sync(vector);
}

void MsixTable::set_requester_id(uint16_t requester_id) {
  std::lock_guard lock(mutex_);
  requester_id_ = requester_id;
}

bool MsixTable::enabled() const {
  std::lock_guard lock(mutex_);
  return enabled_;
}

void MsixTable::sync(uint16_t vector) {
  Entry& entry = entries_[vector];
  const Message message{entry.address, entry.data,
                        !enabled_ || function_masked_ || (entry.control & kMsixVectorMasked) != 0};
  if (entry.reported != message) {
    sink_->configure(requester_id_, vector, message.address, message.data, message.masked);
    entry.reported = message;
  }
  if (!message.masked && entry.pending) {
    entry.pending = false;
    sink_->trigger(requester_id_, vector);
  }
}

bool MsixTable::signal(uint16_t vector) {
  std::lock_guard lock(mutex_);
  if (!enabled_ || vector >= entries_.size()) return false;
  Entry& entry = entries_[vector];
  if (function_masked_ || (entry.control & kMsixVectorMasked) != 0) {
    entry.pending = true;
    return true;
  }
  sync(vector);  // Normally a no-op: the sink already has this message.
  sink_->trigger(requester_id_, vector);
  return true;
}

uint32_t MsixTable::read_dword(uint64_t offset) const {
  const Entry& entry = entries_[offset / kMsixEntrySize];
  switch (offset % kMsixEntrySize) {
    case kMsixEntryAddressLow:
      return static_cast<uint32_t>(entry.address);
    case kMsixEntryAddressHigh:
      return static_cast<uint32_t>(entry.address >> 32);
    case kMsixEntryData:
      return entry.data;
    default:
      return entry.control;
  }
}

void MsixTable::write_dword(uint64_t offset, uint32_t value) {
  const uint16_t vector = static_cast<uint16_t>(offset / kMsixEntrySize);
  Entry& entry = entries_[vector];
  switch (offset % kMsixEntrySize) {
    case kMsixEntryAddressLow:  // Message addresses are DWORD aligned: bits 1:0 read as zero.
      entry.address = (entry.address & ~0xffffffffull) | (value & ~3u);
      break;
    case kMsixEntryAddressHigh:
      entry.address = (entry.address & 0xffffffffull) | static_cast<uint64_t>(value) << 32;
      break;
    case kMsixEntryData:
      entry.data = value;
      break;
    default:
      entry.control = value & kMsixVectorMasked;
      break;  // Other bits are reserved.
  }
  sync(vector);
}

void MsixTable::table_read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  if (!valid_access(offset, data.size()) || offset >= table_size()) {
    fill_access(data, 0);
    return;
  }
  uint64_t value = read_dword(offset);
  if (data.size() == 8) value |= static_cast<uint64_t>(read_dword(offset + 4)) << 32;
  fill_access(data, value);
}

void MsixTable::table_write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mutex_);
  if (!valid_access(offset, data.size()) || offset >= table_size()) return;
  const uint64_t value = access_value(data);
  write_dword(offset, static_cast<uint32_t>(value));
  if (data.size() == 8) write_dword(offset + 4, static_cast<uint32_t>(value >> 32));
}

void MsixTable::pba_read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  if (!valid_access(offset, data.size()) || offset >= pba_size()) {
    fill_access(data, 0);
    return;
  }
  uint64_t value = 0;
  for (size_t bit = 0; bit < 8 * data.size(); ++bit) {
    const size_t vector = offset * 8 + bit;
    if (vector < entries_.size() && entries_[vector].pending) value |= 1ull << bit;
  }
  fill_access(data, value);
}

}  // namespace ember
