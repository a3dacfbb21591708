// ember's PCI root complex: one bus (bus 0, segment 0) with the host bridge at device 0 and up to
// 31 single-function devices, reached three ways, each a BusDevice the machine inserts once:
//
//   PciConfigIo   configuration mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2): CONFIG_ADDRESS at
//                 port 0xcf8 (DWORD only), CONFIG_DATA at 0xcfc-0xcff (byte, word, dword).
//   PciEcam       the enhanced configuration access mechanism (PCI Express Base §7.2.2), 4 KiB per
//                 function; buses other than 0 read all ones.
//   PciMmioWindow the whole 32-bit BAR window as one bus range. An access goes to the function
//   whose
//                 BAR, as the guest programmed it and with memory space enabled, contains it, so
//                 the guest may move BARs while the machine's buses stay fixed after set-up.
//
//   auto pci = std::make_shared<PciRoot>(layout::kPciMmioBase, layout::kPciMmioSize);
//   pci->add(transport);
//   pio.insert(layout::kPciConfigPort, layout::kPciConfigPortCount,
//   std::make_shared<PciConfigIo>(pci)); mmio.insert(layout::kPciEcamBase, layout::kPciEcamSize,
//   std::make_shared<PciEcam>(pci)); mmio.insert(layout::kPciMmioBase, layout::kPciMmioSize,
//   std::make_shared<PciMmioWindow>(pci));
//
// Threads: add() at set-up only; everything else from any vCPU thread. Configuration writes are
// serialized (they may move BARs); BAR accesses look their function up under a shared lock and
// call it without any root lock held.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <vector>

#include "devices/bus_device.hpp"
#include "devices/pci/function.hpp"

namespace ember {

namespace pci {
inline constexpr unsigned kDevicesPerBus = 32;
// CONFIG_ADDRESS (§3.2.2.3.2): enable, bus 23:16, device 15:11, function 10:8, register 7:2.
inline constexpr uint32_t kConfigAddressEnable = 1u << 31;
inline constexpr uint32_t kConfigAddressMask = 0x80fffffc;
inline constexpr uint64_t kConfigDataOffset = 4;  // 0xcfc relative to 0xcf8.
// ECAM address bits (§7.2.2): bus 27:20, device 19:15, function 14:12, register 11:0.
inline constexpr uint64_t kEcamBusShift = 20;
inline constexpr uint64_t kEcamDeviceShift = 15;
inline constexpr uint64_t kEcamFunctionShift = 12;

// Requester ID of function 0 of `device` on bus 0 (what MSI messages carry).
constexpr uint16_t requester_id(uint8_t device) {
  return static_cast<uint16_t>(device << 3);
}
}  // namespace pci

class PciRoot {
 public:
  // BARs are placed in, and only decoded inside, [mmio_base, mmio_base + mmio_size). Throws Error
  // for an empty or wrapping window. Device 0 is the host bridge.
  PciRoot(uint64_t mmio_base, uint64_t mmio_size);

  // Set-up: puts `function` at the next free device number (1..31), tells it its requester ID,
  // places each of its BARs naturally aligned in the window and enables memory decoding. Returns
  // the device number. Throws Error when the bus or the window is full.
  uint8_t add(std::shared_ptr<PciFunction> function);

  // Configuration accesses (1-4 bytes); nothing there reads as all ones, writes are dropped.
  void config_read(uint8_t bus, uint8_t device, uint8_t function, uint16_t offset,
                   std::span<uint8_t> data);
  void config_write(uint8_t bus, uint8_t device, uint8_t function, uint16_t offset,
                    std::span<const uint8_t> data);

  // Accesses at `offset` into the BAR window; outside every decoded BAR reads are all ones.
  void mmio_read(uint64_t offset, std::span<uint8_t> data);
  void mmio_write(uint64_t offset, std::span<const uint8_t> data);

  uint64_t mmio_base() const { return mmio_base_; }
  uint64_t mmio_size() const { return mmio_size_; }
  std::shared_ptr<PciFunction> function(uint8_t device) const;

 private:
  struct Route {
    uint64_t address;
    uint64_t size;
    PciFunction* function;  // Owned by functions_, which never shrinks.
    uint8_t bar;
  };
  PciFunction* config_target(uint8_t bus, uint8_t device, uint8_t function, uint16_t offset,
                             size_t size) const;
  bool find_route(uint64_t address, size_t size, Route& route) const;
  void rebuild_routes();  // config_mutex_ held.

  const uint64_t mmio_base_;
  const uint64_t mmio_size_;
  uint64_t next_bar_address_;  // Set-up only.
  std::array<std::shared_ptr<PciFunction>, pci::kDevicesPerBus> functions_;

  std::mutex config_mutex_;  // Serializes configuration writes and the route rebuild after them.
  mutable std::shared_mutex routes_mutex_;
  std::vector<Route> routes_;
};

class PciConfigIo : public BusDevice {
 public:
  explicit PciConfigIo(std::shared_ptr<PciRoot> root);
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  const std::shared_ptr<PciRoot> root_;
  std::atomic<uint32_t> address_{0};  // CONFIG_ADDRESS; one latch for all vCPUs, as on hardware.
};

class PciEcam : public BusDevice {
 public:
  explicit PciEcam(std::shared_ptr<PciRoot> root);
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  const std::shared_ptr<PciRoot> root_;
};

class PciMmioWindow : public BusDevice {
 public:
  explicit PciMmioWindow(std::shared_ptr<PciRoot> root);
  void read(uint64_t offset, std::span<uint8_t> data) override { root_->mmio_read(offset, data); }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    root_->mmio_write(offset, data);
  }

 private:
  const std::shared_ptr<PciRoot> root_;
};

}  // namespace ember
