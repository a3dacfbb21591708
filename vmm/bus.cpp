#include "vmm/bus.hpp"

#include <algorithm>
#include <sstream>

#include "vmm/error.hpp"

namespace ember {

namespace {
std::string hex(uint64_t value) {
  std::ostringstream out;
  out << "0x" << std::hex << value;
  return out.str();
}
}  // namespace

void Bus::insert(uint64_t base, uint64_t length, std::shared_ptr<BusDevice> device) {
  if (length == 0 || base + length < base)
    throw Error(name_ + " bus: invalid range at " + hex(base));
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < base + length)
    throw Error(name_ + " bus: range at " + hex(base) + " overlaps " + hex(next->first));
  if (next != ranges_.begin()) {
    auto previous = std::prev(next);
    if (previous->first + previous->second.length > base)
      throw Error(name_ + " bus: range at " + hex(base) + " overlaps " + hex(previous->first));
  }
  ranges_.emplace(base, Range{length, std::move(device)});
}

const Bus::Range* Bus::find(uint64_t address, uint64_t size, uint64_t& offset) const {
  auto it = ranges_.upper_bound(address);
  if (it == ranges_.begin()) return nullptr;
  --it;
  const uint64_t relative = address - it->first;
  if (relative >= it->second.length || size > it->second.length - relative) return nullptr;
  offset = relative;
  return &it->second;
}

bool Bus::read(uint64_t address, std::span<uint8_t> data) const {
  uint64_t offset = 0;
  if (const Range* range = find(address, data.size(), offset)) {
    range->device->read(offset, data);
    return true;
  }
  std::fill(data.begin(), data.end(), uint8_t{0xff});
  return false;
}

bool Bus::write(uint64_t address, std::span<const uint8_t> data) const {
  uint64_t offset = 0;
  if (const Range* range = find(address, data.size(), offset)) {
    range->device->write(offset, data);
    return true;
  }
  return false;
}

}  // namespace ember
