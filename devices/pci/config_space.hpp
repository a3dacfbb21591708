// The configuration space of one PCI function (PCI Local Bus 3.0 §6.1, type 0 header; 4 KiB as
// PCIe ECAM exposes it): bytes plus a per-byte write mask, so read-only fields, BAR sizing and the
// writable bits of capabilities all follow from one rule: a write changes only the masked bits.
//
// BAR sizing falls out of the mask too: a memory BAR's address bits below its size are read-only
// zeros, so writing all ones reads back ~(size - 1) with the type bits (§6.2.5.1).
//
// Not thread-safe: the function that owns it locks around every call.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace ember::pci {

inline constexpr size_t kConfigSpaceSize = 4096;
inline constexpr size_t kLegacyConfigSpaceSize = 256;  // What mechanism #1 reaches.

// Type 0 header registers (§6.1).
inline constexpr uint16_t kVendorId = 0x00;
inline constexpr uint16_t kDeviceId = 0x02;
inline constexpr uint16_t kCommand = 0x04;
inline constexpr uint16_t kStatus = 0x06;
inline constexpr uint16_t kRevisionId = 0x08;
inline constexpr uint16_t kClassCode = 0x09;  // 3 bytes: programming interface, subclass, class.
inline constexpr uint16_t kCacheLineSize = 0x0c;
inline constexpr uint16_t kHeaderType = 0x0e;
inline constexpr uint16_t kBar0 = 0x10;
inline constexpr uint16_t kSubsystemVendorId = 0x2c;
inline constexpr uint16_t kSubsystemId = 0x2e;
inline constexpr uint16_t kCapabilitiesPointer = 0x34;
inline constexpr uint16_t kInterruptLine = 0x3c;
inline constexpr uint16_t kInterruptPin = 0x3d;
inline constexpr uint16_t kHeaderEnd = 0x40;  // Capabilities start here.

inline constexpr unsigned kBarCount = 6;

// Command register bits (§6.2.2).
inline constexpr uint16_t kCommandIoSpace = 1u << 0;
inline constexpr uint16_t kCommandMemorySpace = 1u << 1;
inline constexpr uint16_t kCommandBusMaster = 1u << 2;
inline constexpr uint16_t kCommandInterruptDisable = 1u << 10;
// Status register bits (§6.2.3).
inline constexpr uint16_t kStatusCapabilitiesList = 1u << 4;

// Memory BAR type bits (§6.2.5.1).
inline constexpr uint32_t kBarMemory64 = 0b100;
inline constexpr uint32_t kBarPrefetchable = 0b1000;
inline constexpr uint32_t kBarTypeMask = 0xf;

// Capability IDs (PCI Code and ID Assignment §2).
inline constexpr uint8_t kCapabilityMsix = 0x11;
inline constexpr uint8_t kCapabilityVendor = 0x09;

}  // namespace ember::pci

namespace ember {

struct PciIdentity {
  uint16_t vendor_id = 0xffff;
  uint16_t device_id = 0xffff;
  uint8_t revision = 0;
  uint32_t class_code = 0;  // 24 bits: class << 16 | subclass << 8 | programming interface.
  uint16_t subsystem_vendor_id = 0;
  uint16_t subsystem_id = 0;
};

// A memory BAR the function implements. Sizes are powers of two, at least 16 bytes.
struct PciBarDefinition {
  uint8_t index = 0;
  uint64_t size = 0;
  bool is_64bit = false;
  bool prefetchable = false;
};

// Where a BAR decodes now.
struct PciBarRegion {
  uint8_t index = 0;
  uint64_t address = 0;
  uint64_t size = 0;
  bool operator==(const PciBarRegion&) const = default;
};

class PciConfigSpace {
 public:
  explicit PciConfigSpace(const PciIdentity& identity);

  // Set-up (throws Error): a memory BAR at `index` (a 64-bit BAR also takes index + 1).
  void add_memory_bar(const PciBarDefinition& bar);
  // Appends a capability after the previous one (dword aligned, from 0x40) and links it in. `body`
  // is everything after the ID and next-pointer bytes; `writable` (empty, or as long as body) is
  // the write mask of those bytes. Returns the capability's offset.
  uint16_t add_capability(uint8_t id, std::span<const uint8_t> body,
                          std::span<const uint8_t> writable = {});
  // Firmware-like placement: programs a BAR (address naturally aligned).
  void set_bar_address(uint8_t index, uint64_t address);

  // Guest access (any size, any offset; bytes past 4 KiB read as ones and are not written).
  void read(uint16_t offset, std::span<uint8_t> data) const;
  void write(uint16_t offset, std::span<const uint8_t> data);

  // Direct access for the owner, bypassing the write mask (e.g. registers it computes).
  uint32_t load(uint16_t offset, unsigned size) const;
  void store(uint16_t offset, unsigned size, uint32_t value);

  uint16_t command() const { return static_cast<uint16_t>(load(pci::kCommand, 2)); }
  bool memory_enabled() const { return (command() & pci::kCommandMemorySpace) != 0; }
  void set_command(uint16_t value) { store(pci::kCommand, 2, value); }

  const std::vector<PciBarDefinition>& bars() const { return bars_; }
  // The address BAR `index` holds now (masked to its alignment), whether decoding is on or not.
  std::optional<uint64_t> bar_address(uint8_t index) const;
  // The BARs that decode now: memory space enabled, and the address range does not wrap.
  std::vector<PciBarRegion> decoded_bars() const;

 private:
  const PciBarDefinition* find_bar(uint8_t index) const;
  void set_mask(uint16_t offset, unsigned size, uint32_t mask);

  std::array<uint8_t, pci::kConfigSpaceSize> bytes_{};
  std::array<uint8_t, pci::kConfigSpaceSize> writable_{};
  std::vector<PciBarDefinition> bars_;
  uint16_t last_capability_ = 0;  // 0: none yet.
  uint16_t next_capability_ = pci::kHeaderEnd;
};

}  // namespace ember
