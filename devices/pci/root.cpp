#include "devices/pci/root.hpp"
#include "devices/register_bytes.hpp"

#include <algorithm>

#include "devices/pci/host_bridge.hpp"
#include "vmm/error.hpp"

namespace ember {

using namespace pci;

namespace {

void fill_ones(std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), uint8_t{0xff});
}

bool touches(uint16_t offset, size_t size, uint16_t begin, uint16_t end) {
  return offset < end && offset + size > begin;
}

}  // namespace

PciRoot::PciRoot(uint64_t mmio_base, uint64_t mmio_size)
    : mmio_base_(mmio_base), mmio_size_(mmio_size), next_bar_address_(mmio_base) {
  if (mmio_size == 0 || mmio_base + mmio_size < mmio_base) throw Error("pci: invalid BAR window");
  functions_[0] = std::make_shared<PciHostBridge>();
}

uint8_t PciRoot::add(std::shared_ptr<PciFunction> function) {
  if (!function) throw Error("pci: null function");
  const auto free = std::find(functions_.begin() + 1, functions_.end(), nullptr);
  if (free == functions_.end()) throw Error("pci: bus 0 is full (31 devices)");
  const auto device = static_cast<uint8_t>(free - functions_.begin());

  uint64_t next = next_bar_address_;
  const uint64_t window_end = mmio_base_ + mmio_size_;
  std::vector<std::pair<uint8_t, uint64_t>> placements;
  for (const PciBarDefinition& bar : function->bar_definitions()) {
    const uint64_t address = (next + bar.size - 1) & ~(bar.size - 1);
    if (address < next || address > window_end || window_end - address < bar.size)
      throw Error("pci: BAR window full placing device " + std::to_string(device));
    placements.emplace_back(bar.index, address);
    next = address + bar.size;
  }
  for (const auto& [index, address] : placements) function->assign_bar(index, address);
  function->enable_memory_decoding();
  function->set_requester_id(requester_id(device));
  next_bar_address_ = next;

  std::lock_guard lock(config_mutex_);
  *free = std::move(function);
  rebuild_routes();
  return device;
}

std::shared_ptr<PciFunction> PciRoot::function(uint8_t device) const {
  return device < kDevicesPerBus ? functions_[device] : nullptr;
}

PciFunction* PciRoot::config_target(uint8_t bus, uint8_t device, uint8_t function, uint16_t offset,
                                    size_t size) const {
  if (bus != 0 || device >= kDevicesPerBus || function != 0) return nullptr;
  if (size == 0 || size > 4 || offset + size > kConfigSpaceSize) return nullptr;
  return functions_[device].get();
}

void PciRoot::config_read(uint8_t bus, uint8_t device, uint8_t function, uint16_t offset,
                          std::span<uint8_t> data) {
  PciFunction* target = config_target(bus, device, function, offset, data.size());
  if (target == nullptr) {
    fill_ones(data);
    return;
  }
  target->config_read(offset, data);
}

void PciRoot::config_write(uint8_t bus, uint8_t device, uint8_t function, uint16_t offset,
                           std::span<const uint8_t> data) {
  PciFunction* target = config_target(bus, device, function, offset, data.size());
  if (target == nullptr) return;
  std::lock_guard lock(config_mutex_);
  target->config_write(offset, data);
  // Command (memory space enable) and the BARs decide where the function decodes.
  const uint16_t bars_end = kBar0 + 4 * kBarCount;
  if (touches(offset, data.size(), kCommand, kCommand + 2) ||
      touches(offset, data.size(), kBar0, bars_end))
    rebuild_routes();
}

void PciRoot::rebuild_routes() {
  std::vector<Route> routes;
  const uint64_t window_end = mmio_base_ + mmio_size_;
  for (const auto& function : functions_) {
    if (!function) continue;
    for (const PciBarRegion& region : function->decoded_bars()) {
      // Only the window reaches us; a BAR moved (partly) outside it decodes nothing.
      if (region.address < mmio_base_ || region.address > window_end ||
          window_end - region.address < region.size)
        continue;
      routes.push_back({region.address, region.size, function.get(), region.index});
    }
  }
  std::unique_lock lock(routes_mutex_);
  routes_ = std::move(routes);
}

bool PciRoot::find_route(uint64_t address, size_t size, Route& route) const {
  std::shared_lock lock(routes_mutex_);
  for (const Route& candidate : routes_) {
    if (address >= candidate.address && address - candidate.address < candidate.size &&
        size <= candidate.size - (address - candidate.address)) {
      route = candidate;
      return true;
    }
  }
  return false;
}

void PciRoot::mmio_read(uint64_t offset, std::span<uint8_t> data) {
  Route route{};
  const uint64_t address = mmio_base_ + offset;
  if (!find_route(address, data.size(), route)) {
    fill_ones(data);
    return;
  }
  route.function->bar_read(route.bar, address - route.address, data);
}

void PciRoot::mmio_write(uint64_t offset, std::span<const uint8_t> data) {
  Route route{};
  const uint64_t address = mmio_base_ + offset;
  if (!find_route(address, data.size(), route)) return;
  route.function->bar_write(route.bar, address - route.address, data);
}

PciConfigIo::PciConfigIo(std::shared_ptr<PciRoot> root) : root_(std::move(root)) {
  if (!root_) throw Error("pci: config I/O without a root");
}

namespace {
struct ConfigAddress {
  uint8_t bus;
  uint8_t device;
  uint8_t function;
  uint16_t offset;
};
ConfigAddress decode_config_address(uint32_t address) {
  return {static_cast<uint8_t>(address >> 16), static_cast<uint8_t>((address >> 11) & 0x1f),
          static_cast<uint8_t>((address >> 8) & 0x7), static_cast<uint16_t>(address & 0xfc)};
}
}  // namespace

void PciConfigIo::read(uint64_t offset, std::span<uint8_t> data) {
  if (offset < kConfigDataOffset) {
    // CONFIG_ADDRESS answers DWORD accesses only; other sizes at 0xcf8-0xcfb are not ours.
    if (offset == 0 && data.size() == 4) {
      const uint32_t value = address_.load();
      for (size_t i = 0; i < 4; ++i) data[i] = static_cast<uint8_t>(value >> (8 * i));
    } else {
      fill_ones(data);
    }
    return;
  }
  const uint32_t address = address_.load();
  const uint64_t byte = offset - kConfigDataOffset;
  if ((address & kConfigAddressEnable) == 0 || byte + data.size() > 4) {
    fill_ones(data);
    return;
  }
  const ConfigAddress target = decode_config_address(address);
  root_->config_read(target.bus, target.device, target.function,
                     static_cast<uint16_t>(target.offset + byte), data);
}

void PciConfigIo::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset < kConfigDataOffset) {
    if (offset == 0 && data.size() == 4) address_.store(static_cast<uint32_t>(access_value(data) & kConfigAddressMask));
    return;
  }
  const uint32_t address = address_.load();
  const uint64_t byte = offset - kConfigDataOffset;
  if ((address & kConfigAddressEnable) == 0 || byte + data.size() > 4) return;
  const ConfigAddress target = decode_config_address(address);
  root_->config_write(target.bus, target.device, target.function,
                      static_cast<uint16_t>(target.offset + byte), data);
}

PciEcam::PciEcam(std::shared_ptr<PciRoot> root) : root_(std::move(root)) {
  if (!root_) throw Error("pci: ECAM without a root");
}

namespace {
ConfigAddress decode_ecam(uint64_t offset) {
  const uint64_t bus = offset >> kEcamBusShift;
  return {static_cast<uint8_t>(bus > 0xff ? 0xff : bus),
          static_cast<uint8_t>((offset >> kEcamDeviceShift) & 0x1f),
          static_cast<uint8_t>((offset >> kEcamFunctionShift) & 0x7),
          static_cast<uint16_t>(offset & 0xfff)};
}
}  // namespace

// A QWORD access (which a 64-bit guest may make) is two DWORD configuration accesses.
void PciEcam::read(uint64_t offset, std::span<uint8_t> data) {
  for (size_t done = 0; done < data.size(); done += 4) {
    const auto chunk = data.subspan(done, std::min<size_t>(4, data.size() - done));
    const ConfigAddress target = decode_ecam(offset + done);
    root_->config_read(target.bus, target.device, target.function, target.offset, chunk);
  }
}

void PciEcam::write(uint64_t offset, std::span<const uint8_t> data) {
  for (size_t done = 0; done < data.size(); done += 4) {
    const auto chunk = data.subspan(done, std::min<size_t>(4, data.size() - done));
    const ConfigAddress target = decode_ecam(offset + done);
    root_->config_write(target.bus, target.device, target.function, target.offset, chunk);
  }
}

PciMmioWindow::PciMmioWindow(std::shared_ptr<PciRoot> root) : root_(std::move(root)) {
  if (!root_) throw Error("pci: BAR window without a root");
}

}  // namespace ember
