// The guest side of the virtio fuzz targets. Their inputs share one layout:
//
//   u8   flags              bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, higher bits per target
//   per queue: u8 size code (0-8: 1 << code, anything else taken as the size itself, which
//              activation must refuse), le16 descriptor table, le16 available ring, le16 used
//              ring (guest-physical addresses)
//   actions             a few bytes the target reads as it goes (kicks, frames to inject, ...)
//   guest memory image  the rest: copied over guest RAM from address 0 (16 KiB), then the
//                       second region at 0x8000 (4 KiB); the 16 KiB between them is a hole
//
// so descriptor tables, rings, indirect tables and buffers are all fuzzed in place, the way a
// hostile driver would lay them out. Guest memory is made once and overwritten for every input.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "devices/virtio/device.hpp"
#include "devices/virtio/queue.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "tests/fuzz/quiet_logging.hpp"
#include "vmm/guest_memory.hpp"

namespace ember::fuzz {

inline constexpr uint64_t kLowRegionSize = 0x4000;
inline constexpr uint64_t kHighRegionStart = 0x8000;
inline constexpr uint64_t kHighRegionSize = 0x1000;

inline constexpr uint8_t kFlagEventIndex = 1u << 0;
inline constexpr uint8_t kFlagIndirect = 1u << 1;

inline GuestMemory& guest_memory() {
  static GuestMemory memory({{0, kLowRegionSize}, {kHighRegionStart, kHighRegionSize}});
  return memory;
}

// Zeroes guest RAM and copies `image` over it, region after region.
inline GuestMemory& load_guest_memory(std::span<const uint8_t> image) {
  GuestMemory& memory = guest_memory();
  for (const MemoryRegion& region : memory.regions()) {
    const size_t count = std::min<size_t>(image.size(), region.size);
    if (count > 0) std::memcpy(region.host, image.data(), count);
    std::memset(region.host + count, 0, region.size - count);
    image = image.subspan(count);
  }
  return memory;
}

struct RingLayout {
  uint16_t size;
  uint64_t descriptors;
  uint64_t available;
  uint64_t used;
};

inline RingLayout read_ring_layout(Input& input) {
  const uint8_t code = input.u8();
  const uint16_t size = code <= 8 ? static_cast<uint16_t>(1u << code) : code;
  const uint64_t descriptors = input.u16();
  const uint64_t available = input.u16();
  const uint64_t used = input.u16();
  return {size, descriptors, available, used};
}

// What a transport does when the driver sets DRIVER_OK: configure, enable and activate the queue.
inline bool activate_queue(virtio::Queue& queue, const RingLayout& layout,
                           const GuestMemory& memory, uint8_t flags) {
  queue.set_size(layout.size);
  queue.set_descriptor_table(layout.descriptors);
  queue.set_available_ring(layout.available);
  queue.set_used_ring(layout.used);
  queue.set_enabled(true);
  const bool activated =
      queue.activate(memory, (flags & kFlagEventIndex) != 0, (flags & kFlagIndirect) != 0);
  FUZZ_CHECK(activated == !queue.broken());
  return activated;
}

// The features a driver would accept from `offered`, as the flags choose.
inline uint64_t negotiated(uint64_t offered, uint8_t flags) {
  uint64_t features = offered & ~(virtio::kFeatureEventIndex | virtio::kFeatureIndirectDescriptors);
  if (flags & kFlagEventIndex) features |= offered & virtio::kFeatureEventIndex;
  if (flags & kFlagIndirect) features |= offered & virtio::kFeatureIndirectDescriptors;
  return features;
}

class CountingInterrupts : public virtio::Interrupts {
 public:
  explicit CountingInterrupts(uint16_t queue_count) : queue_count_(queue_count) {}
  void queue_used(uint16_t queue) override {
    FUZZ_CHECK(queue < queue_count_);
    ++used;
  }
  void config_changed() override { ++config; }

  int used = 0;
  int config = 0;

 private:
  uint16_t queue_count_;
};

// The rule every device keeps: a queue the guest broke stops the device (DEVICE_NEEDS_RESET).
inline void check_needs_reset(const virtio::Device& device, std::span<const virtio::Queue> queues,
                              const CountingInterrupts& interrupts) {
  for (const virtio::Queue& queue : queues) {
    if (!queue.broken()) continue;
    FUZZ_CHECK(device.needs_reset());
    FUZZ_CHECK(interrupts.config > 0);
  }
}

}  // namespace ember::fuzz
