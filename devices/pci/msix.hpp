// MSI-X for one PCI function (PCI Local Bus 3.0 §6.8.2): the capability in configuration space, the
// vector table and the pending-bit array (PBA) that live in one of the function's BARs, and the
// delivery rules: a vector fires only while MSI-X is enabled and neither the function nor the entry
// is masked; a vector signalled while masked sets its pending bit and fires when unmasked.
//
// Thread-safe: table accesses come from vCPU threads, signal() from the I/O thread. The lock is
// held while calling the MsiSink, which therefore must not call back in.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "devices/pci/config_space.hpp"
#include "devices/pci/msi.hpp"

namespace ember {

namespace pci {

inline constexpr uint16_t kMsixMaxVectors = 2048;  // Table Size is 11 bits (N - 1).
inline constexpr uint64_t kMsixEntrySize = 16;
// Capability layout after ID and next pointer (§6.8.2.3-5).
inline constexpr uint16_t kMsixMessageControl = 2;
inline constexpr uint16_t kMsixTableOffset = 4;  // Offset | BIR.
inline constexpr uint16_t kMsixPbaOffset = 8;    // Offset | BIR.
inline constexpr uint16_t kMsixControlEnable = 1u << 15;
inline constexpr uint16_t kMsixControlFunctionMask = 1u << 14;
// Table entry fields (§6.8.2.6-9).
inline constexpr uint64_t kMsixEntryAddressLow = 0;
inline constexpr uint64_t kMsixEntryAddressHigh = 4;
inline constexpr uint64_t kMsixEntryData = 8;
inline constexpr uint64_t kMsixEntryVectorControl = 12;
inline constexpr uint32_t kMsixVectorMasked = 1u << 0;

}  // namespace pci

class MsixTable {
 public:
  // Throws Error for 0 or more than 2048 vectors, or a null sink.
  MsixTable(uint16_t vector_count, std::shared_ptr<MsiSink> sink);

  // Set-up: appends the MSI-X capability to `config`, with the table at `table_offset` and the PBA
  // at `pba_offset` of BAR `bar` (both 8-byte aligned). Returns the capability's offset.
  uint16_t add_capability(PciConfigSpace& config, uint8_t bar, uint32_t table_offset,
                          uint32_t pba_offset);
  // After every configuration write: takes MSI-X Enable and Function Mask from Message Control.
  void update_from_config(const PciConfigSpace& config);
  void set_requester_id(uint16_t requester_id);

  uint16_t vector_count() const { return static_cast<uint16_t>(entries_.size()); }
  uint64_t table_size() const { return entries_.size() * pci::kMsixEntrySize; }
  uint64_t pba_size() const { return (entries_.size() + 63) / 64 * 8; }

  // BAR accesses relative to the table or PBA. DWORD or QWORD, naturally aligned (§6.8.2); other
  // reads return zeros and other writes are ignored. The PBA is read-only.
  void table_read(uint64_t offset, std::span<uint8_t> data);
  void table_write(uint64_t offset, std::span<const uint8_t> data);
  void pba_read(uint64_t offset, std::span<uint8_t> data);

  // Sends `vector`, or marks it pending while masked. False when MSI-X is disabled or there is no
  // such vector: nothing is sent and nothing is remembered.
  bool signal(uint16_t vector);
  bool enabled() const;

 private:
  struct Message {
    uint64_t address = 0;
    uint32_t data = 0;
    bool masked = true;
    bool operator==(const Message&) const = default;
  };
  struct Entry {
    uint64_t address = 0;
    uint32_t data = 0;
    uint32_t control = pci::kMsixVectorMasked;  // Masked at reset (§6.8.2.9).
    bool pending = false;
    std::optional<Message> reported;  // What the sink was last told.
  };

  // Lock held: tells the sink about a changed message and delivers a pending vector once unmasked.
  void sync(uint16_t vector);
  uint32_t read_dword(uint64_t offset) const;         // Lock held.
  void write_dword(uint64_t offset, uint32_t value);  // Lock held.

  const std::shared_ptr<MsiSink> sink_;
  uint16_t capability_ = 0;

  mutable std::mutex mutex_;
  std::vector<Entry> entries_;
  uint32_t requester_id_ = 0;
  bool enabled_ = false;
  bool function_masked_ = false;
};

}  // namespace ember
