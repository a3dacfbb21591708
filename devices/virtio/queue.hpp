// A virtio 1.2 split virtqueue (§2.7) as the device sees it: the driver's descriptor table,
// available ring and used ring in guest memory, read and written only through GuestMemory's checked
// slices.
//
// Everything here is fed by a possibly hostile guest. pop() validates a whole chain before handing
// it out: addresses inside guest RAM, lengths that do not overflow, no loops, no chain longer than
// the queue, readable descriptors before writable ones, indirect tables only when negotiated and
// well formed, avail index never more than `size` ahead. A violation marks the queue broken: pop()
// then returns nothing, and the device reports DEVICE_NEEDS_RESET (§2.1.2). Nothing throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/guest_memory.hpp"

namespace ember::virtio {

// Descriptor flags (§2.7.5).
inline constexpr uint16_t kDescriptorNext = 1;      // VIRTQ_DESC_F_NEXT
inline constexpr uint16_t kDescriptorWrite = 2;     // VIRTQ_DESC_F_WRITE
inline constexpr uint16_t kDescriptorIndirect = 4;  // VIRTQ_DESC_F_INDIRECT
// Ring flags (§2.7.6, §2.7.8).
inline constexpr uint16_t kAvailableNoInterrupt = 1;  // VIRTQ_AVAIL_F_NO_INTERRUPT
inline constexpr uint16_t kUsedNoNotify = 1;          // VIRTQ_USED_F_NO_NOTIFY
// Largest total of readable (or of writable) bytes one chain may describe.
inline constexpr uint64_t kMaxChainBytes = 1ull << 32;
// Largest indirect table accepted, in descriptors (a 1 MiB table; Linux uses far fewer).
inline constexpr uint32_t kMaxIndirectDescriptors = 65536;

struct Descriptor {
  uint64_t address;
  uint32_t length;
  bool device_writable;
};

// One validated chain: readable descriptors first, then writable ones (§2.7.4.2).
struct DescriptorChain {
  uint16_t head = 0;  // What push_used() takes back.
  std::vector<Descriptor> descriptors;
  uint64_t readable_bytes = 0;
  uint64_t writable_bytes = 0;

  // Copy out of the readable part starting at `offset` (within the readable bytes); returns bytes
  // copied (short at the end of the readable part). The chain was validated, so this cannot fault.
  size_t read(const GuestMemory& memory, uint64_t offset, std::span<std::byte> out) const;
  // Copy into the writable part starting at `offset` (within the writable bytes); returns bytes
  // copied.
  size_t write(const GuestMemory& memory, uint64_t offset, std::span<const std::byte> in) const;
};

class Queue {
 public:
  explicit Queue(uint16_t max_size = 256) : max_size_(max_size), size_(max_size) {}

  // Transport-side configuration, written by the driver before it sets queue_enable / DRIVER_OK.
  uint16_t max_size() const { return max_size_; }
  uint16_t size() const { return size_; }
  void set_size(uint16_t size) { size_ = size; }
  uint64_t descriptor_table() const { return descriptor_table_; }
  uint64_t available_ring() const { return available_ring_; }
  uint64_t used_ring() const { return used_ring_; }
  void set_descriptor_table(uint64_t address) { descriptor_table_ = address; }
  void set_available_ring(uint64_t address) { available_ring_ = address; }
  void set_used_ring(uint64_t address) { used_ring_ = address; }
  bool enabled() const { return enabled_; }
  void set_enabled(bool enabled) { enabled_ = enabled; }
  uint16_t msix_vector() const { return msix_vector_; }
  void set_msix_vector(uint16_t vector) { msix_vector_ = vector; }

  // Checks the configuration (size a power of two <= max_size, rings aligned and inside guest
  // memory) and starts using it with the negotiated features. False, with error() set, if invalid.
  bool activate(const GuestMemory& memory, bool event_idx, bool indirect_descriptors);
  bool active() const { return memory_ != nullptr; }

  // The next available chain, or nullopt if none or the queue is broken (or not active).
  // Zero-length descriptors are accepted and dropped from the chain; a chain may total 0 bytes.
  // With EVENT_IDX, finding the ring empty also publishes avail_event (as enable_notifications()
  // does) and looks once more, so a device that pops until nullopt never misses a notification.
  std::optional<DescriptorChain> pop();
  // Returns a chain to the driver with the number of bytes the device wrote into it.
  void push_used(uint16_t head, uint32_t written);
  // After push_used(): whether the driver wants an interrupt now (EVENT_IDX used_event, or
  // VIRTQ_AVAIL_F_NO_INTERRUPT), §2.7.10. Resets the "used since last notification" state.
  bool should_notify();
  // With EVENT_IDX: tell the driver to notify when any new buffer arrives (writes avail_event =
  // our next available index, then a full fence; re-check with pop() afterwards). No-op otherwise.
  void enable_notifications();

  bool broken() const { return !error_.empty(); }
  const std::string& error() const {
    return error_;
  }  // What the guest did wrong, for one log line.

  // Back to the state after device reset (§2.4): configuration cleared, size = max_size.
  void reset();

 private:
  bool fail(std::string message);
  // Reads avail->idx (acquire) and, with EVENT_IDX and nothing pending, publishes avail_event and
  // reads it again so a buffer added meanwhile is not missed. nullopt when broken.
  std::optional<uint16_t> pending_count();
  bool walk(uint16_t head, DescriptorChain& chain);
  bool add_descriptor(const Descriptor& descriptor, bool indirect, uint32_t index,
                      DescriptorChain& chain, bool& seen_writable);
  bool walk_indirect(uint64_t address, uint32_t length, DescriptorChain& chain,
                     bool& seen_writable);

  uint16_t max_size_;
  uint16_t size_;
  uint64_t descriptor_table_ = 0;
  uint64_t available_ring_ = 0;
  uint64_t used_ring_ = 0;
  bool enabled_ = false;
  uint16_t msix_vector_ = 0xffff;  // VIRTIO_MSI_NO_VECTOR

  const GuestMemory* memory_ = nullptr;
  // Host views of the three rings, checked once at activate() (each lies inside one region).
  std::span<std::byte> descriptors_view_;
  std::span<std::byte> available_view_;
  std::span<std::byte> used_view_;
  bool event_idx_ = false;
  bool indirect_ = false;
  uint16_t next_available_ = 0;  // Our shadow of how far we consumed avail->idx.
  uint16_t next_used_ = 0;       // Our used->idx.
  uint16_t signalled_used_ = 0;  // used->idx when we last decided to notify.
  bool signalled_valid_ = false;
  std::string error_;
};

}  // namespace ember::virtio
