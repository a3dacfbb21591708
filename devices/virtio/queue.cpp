#include "devices/virtio/queue.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <limits>
#include <sstream>
#include <utility>

namespace ember::virtio {
namespace {

// Split virtqueue layout (§2.7): sizes and offsets of the three parts.
constexpr uint64_t kDescriptorSize = 16;       // addr u64, len u32, flags u16, next u16
constexpr uint64_t kDescriptorAlignment = 16;  // §2.7 table "Virtqueue Part Alignment"
constexpr uint64_t kAvailableAlignment = 2;
constexpr uint64_t kUsedAlignment = 4;
constexpr uint64_t kRingHeaderSize = 4;  // flags u16, idx u16 (both rings)
constexpr uint64_t kAvailableFlagsOffset = 0;
constexpr uint64_t kAvailableIndexOffset = 2;
constexpr uint64_t kUsedIndexOffset = 2;
constexpr uint64_t kAvailableEntrySize = 2;  // le16 head index
constexpr uint64_t kUsedEntrySize = 8;       // le32 id, le32 len

uint64_t available_ring_bytes(uint16_t size) {
  return kRingHeaderSize + kAvailableEntrySize * size + 2;  // + used_event
}
uint64_t used_ring_bytes(uint16_t size) {
  return kRingHeaderSize + kUsedEntrySize * size + 2;  // + avail_event
}

// Little-endian accesses, explicit so nothing depends on the host's byte order.
uint16_t load_le16(const std::byte* data) {
  return static_cast<uint16_t>(std::to_integer<uint16_t>(data[0]) |
                               std::to_integer<uint16_t>(data[1]) << 8);
}
uint32_t load_le32(const std::byte* data) {
  return static_cast<uint32_t>(load_le16(data)) | static_cast<uint32_t>(load_le16(data + 2)) << 16;
}
uint64_t load_le64(const std::byte* data) {
  return static_cast<uint64_t>(load_le32(data)) | static_cast<uint64_t>(load_le32(data + 4)) << 32;
}
void store_le32(std::byte* data, uint32_t value) {
  for (int i = 0; i < 4; ++i) data[i] = static_cast<std::byte>(value >> (8 * i));
}

uint16_t to_or_from_le16(uint16_t value) {
  if constexpr (std::endian::native == std::endian::big) {
    return static_cast<uint16_t>(value << 8 | value >> 8);
  }
  return value;
}

// The ring indices and event fields are written by driver CPUs concurrently; access them as
// (relaxed) atomics and order with explicit fences. activate() checked their host alignment.
uint16_t load_shared16(std::byte* data) {
  return to_or_from_le16(std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(data))
                             .load(std::memory_order_relaxed));
}
void store_shared16(std::byte* data, uint16_t value) {
  std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(data))
      .store(to_or_from_le16(value), std::memory_order_relaxed);
}

struct RawDescriptor {
  uint64_t address;
  uint32_t length;
  uint16_t flags;
  uint16_t next;
};

// One copy of the guest's descriptor: everything after this looks at the copy only, so the guest
// cannot change a field between our check and our use.
RawDescriptor load_descriptor(const std::byte* data) {
  return RawDescriptor{load_le64(data), load_le32(data + 8), load_le16(data + 12),
                       load_le16(data + 14)};
}

std::string hex(uint64_t value) {
  std::ostringstream out;
  out << "0x" << std::hex << value;
  return out.str();
}

bool host_aligned(const std::byte* data, uintptr_t alignment) {
  return reinterpret_cast<uintptr_t>(data) % alignment == 0;
}

// §2.7.10: notify if new_index has moved past event since old_index, modulo 2^16.
bool need_event(uint16_t event, uint16_t new_index, uint16_t old_index) {
  return static_cast<uint16_t>(new_index - event - 1) <
         static_cast<uint16_t>(new_index - old_index);
}

// Copies between `buffer` and the descriptors of one direction, starting `offset` bytes in.
template <typename Copy>
size_t copy_chain(const GuestMemory& memory, const std::vector<Descriptor>& descriptors,
                  bool device_writable, uint64_t offset, size_t total, Copy copy) {
  size_t done = 0;
  for (const auto& descriptor : descriptors) {
    if (done == total) break;
    if (descriptor.device_writable != device_writable) continue;
    if (offset >= descriptor.length) {
      offset -= descriptor.length;
      continue;
    }
    const uint64_t count = std::min<uint64_t>(descriptor.length - offset, total - done);
    auto view = memory.slice(descriptor.address + offset, count);
    if (!view) break;  // Validated at pop(); only a changed memory map could get here.
    copy(*view, done);
    done += count;
    offset = 0;
  }
  return done;
}

}  // namespace

size_t DescriptorChain::read(const GuestMemory& memory, uint64_t offset,
                             std::span<std::byte> out) const {
  return copy_chain(memory, descriptors, false, offset, out.size(),
                    [&](std::span<std::byte> guest, size_t done) {
                      std::memcpy(out.data() + done, guest.data(), guest.size());
                    });
}

size_t DescriptorChain::write(const GuestMemory& memory, uint64_t offset,
                              std::span<const std::byte> in) const {
  return copy_chain(memory, descriptors, true, offset, in.size(),
                    [&](std::span<std::byte> guest, size_t done) {
                      std::memcpy(guest.data(), in.data() + done, guest.size());
                    });
}

bool Queue::fail(std::string message) {
  if (error_.empty()) error_ = std::move(message);  // The first violation is the one to report.
  return false;
}

bool Queue::activate(const GuestMemory& memory, bool event_idx, bool indirect_descriptors) {
  memory_ = nullptr;
  error_.clear();
  next_available_ = 0;
  next_used_ = 0;
  signalled_used_ = 0;
  signalled_valid_ = false;

  if (size_ == 0 || (size_ & (size_ - 1)) != 0 || size_ > max_size_) {
    return fail("queue size " + std::to_string(size_) + " is not a power of two in 1.." +
                std::to_string(max_size_));
  }
  struct Part {
    const char* name;
    uint64_t address;
    uint64_t bytes;
    uint64_t alignment;
    std::span<std::byte>* view;
  };
  const Part parts[] = {
      {"descriptor table", descriptor_table_, kDescriptorSize * size_, kDescriptorAlignment,
       &descriptors_view_},
      {"available ring", available_ring_, available_ring_bytes(size_), kAvailableAlignment,
       &available_view_},
      {"used ring", used_ring_, used_ring_bytes(size_), kUsedAlignment, &used_view_},
  };
  for (const auto& part : parts) {
    if (part.address % part.alignment != 0) {
      return fail(std::string(part.name) + " at " + hex(part.address) + " is not " +
                  std::to_string(part.alignment) + "-byte aligned");
    }
    auto view = memory.slice(part.address, part.bytes);
    if (!view) {
      return fail(std::string(part.name) + " at " + hex(part.address) + " (" +
                  std::to_string(part.bytes) + " bytes) is not inside guest memory");
    }
    if (!host_aligned(view->data(), part.alignment)) {
      return fail(std::string(part.name) + " at " + hex(part.address) +
                  " is misaligned in host memory (region layout)");
    }
    *part.view = *view;
  }
  memory_ = &memory;
  event_idx_ = event_idx;
  indirect_ = indirect_descriptors;
  return true;
}

std::optional<uint16_t> Queue::pending_count() {
  std::byte* index_field = available_view_.data() + kAvailableIndexOffset;
  uint16_t available = load_shared16(index_field);
  std::atomic_thread_fence(std::memory_order_acquire);  // Ring entries after the index.
  uint16_t pending = static_cast<uint16_t>(available - next_available_);
  if (pending == 0 && event_idx_) {
    enable_notifications();
    available = load_shared16(index_field);
    std::atomic_thread_fence(std::memory_order_acquire);
    pending = static_cast<uint16_t>(available - next_available_);
  }
  if (pending > size_) {
    fail("available index " + std::to_string(available) + " is " + std::to_string(pending) +
         " ahead of consumed index " + std::to_string(next_available_) + " (queue size " +
         std::to_string(size_) + ")");
    return std::nullopt;
  }
  return pending;
}

std::optional<DescriptorChain> Queue::pop() {
  if (!active() || broken()) return std::nullopt;
  auto pending = pending_count();
  if (!pending || *pending == 0) return std::nullopt;

  const uint16_t slot = next_available_ & (size_ - 1);
  const uint16_t head =
      load_le16(available_view_.data() + kRingHeaderSize + kAvailableEntrySize * slot);
  if (head >= size_) {
    fail("available ring entry " + std::to_string(slot) + ": head " + std::to_string(head) +
         " >= queue size " + std::to_string(size_));
    return std::nullopt;
  }
  DescriptorChain chain;
  chain.head = head;
  if (!walk(head, chain)) return std::nullopt;
  ++next_available_;
  return chain;
}

bool Queue::walk(uint16_t head, DescriptorChain& chain) {
  bool seen_writable = false;
  uint16_t index = head;
  // A chain visits each descriptor at most once, so more than `size` steps means a loop.
  for (uint32_t count = 1;; ++count) {
    if (count > size_) {
      return fail("descriptor chain from head " + std::to_string(head) +
                  " is longer than the queue size " + std::to_string(size_) + " (loop?)");
    }
    const RawDescriptor raw = load_descriptor(descriptors_view_.data() + kDescriptorSize * index);
    auto where = [index] { return "descriptor " + std::to_string(index); };
    if (raw.flags & kDescriptorIndirect) {
      if (!indirect_) {
        return fail(where() + " is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated");
      }
      if (raw.flags & kDescriptorNext) return fail(where() + " has both INDIRECT and NEXT set");
      // §2.7.5.3.2: the WRITE flag of the descriptor naming the table is ignored.
      return walk_indirect(raw.address, raw.length, chain, seen_writable);
    }
    const Descriptor descriptor{raw.address, raw.length, (raw.flags & kDescriptorWrite) != 0};
    if (!add_descriptor(descriptor, false, index, chain, seen_writable)) return false;
    if (!(raw.flags & kDescriptorNext)) return true;
    if (raw.next >= size_) {
      return fail(where() + ": next index " + std::to_string(raw.next) + " >= queue size " +
                  std::to_string(size_));
    }
    index = raw.next;
  }
}

bool Queue::walk_indirect(uint64_t address, uint32_t length, DescriptorChain& chain,
                          bool& seen_writable) {
  auto table = [address] { return "indirect table at " + hex(address); };
  if (length == 0 || length % kDescriptorSize != 0) {
    return fail(table() + ": length " + std::to_string(length) +
                " is not a non-zero multiple of 16");
  }
  const uint32_t entries = length / kDescriptorSize;
  if (entries > kMaxIndirectDescriptors) {
    return fail(table() + ": " + std::to_string(entries) + " descriptors, more than " +
                std::to_string(kMaxIndirectDescriptors));
  }
  auto view = memory_->slice(address, length);
  if (!view)
    return fail(table() + " (" + std::to_string(length) + " bytes) is not in guest memory");

  uint32_t index = 0;  // An indirect chain starts at the table's first entry (§2.7.5.3).
  for (uint32_t count = 1;; ++count) {
    if (count > entries) {
      return fail(table() + ": chain longer than its " + std::to_string(entries) +
                  " descriptors (loop?)");
    }
    const RawDescriptor raw = load_descriptor(view->data() + kDescriptorSize * index);
    auto where = [index] { return "indirect descriptor " + std::to_string(index); };
    if (raw.flags & kDescriptorIndirect)
      return fail(where() + " is itself indirect (nested table)");
    const Descriptor descriptor{raw.address, raw.length, (raw.flags & kDescriptorWrite) != 0};
    if (!add_descriptor(descriptor, true, index, chain, seen_writable)) return false;
    if (!(raw.flags & kDescriptorNext)) return true;
    if (raw.next >= entries) {
      return fail(where() + ": next index " + std::to_string(raw.next) + " >= table size " +
                  std::to_string(entries));
    }
    index = raw.next;
  }
}

bool Queue::add_descriptor(const Descriptor& descriptor, bool indirect, uint32_t index,
                           DescriptorChain& chain, bool& seen_writable) {
  if (descriptor.length == 0) return true;  // Allowed, and carries nothing.
  // Messages are built only on failure: this runs for every descriptor of every request.
  auto where = [&] {
    return std::string(indirect ? "indirect descriptor " : "descriptor ") + std::to_string(index) +
           ": buffer " + hex(descriptor.address) + "+" + hex(descriptor.length);
  };
  if (descriptor.address > std::numeric_limits<uint64_t>::max() - descriptor.length) {
    return fail(where() + " overflows the address space");
  }
  if (!memory_->slice(descriptor.address, descriptor.length)) {
    return fail(where() + " is not inside one guest memory region");
  }
  if (descriptor.device_writable) {
    seen_writable = true;
    chain.writable_bytes += descriptor.length;
    if (chain.writable_bytes > kMaxChainBytes) {
      return fail(where() + " makes the chain's writable part larger than 4 GiB");
    }
  } else {
    if (seen_writable) return fail(where() + " is readable but follows a writable one");
    chain.readable_bytes += descriptor.length;
    if (chain.readable_bytes > kMaxChainBytes) {
      return fail(where() + " makes the chain's readable part larger than 4 GiB");
    }
  }
  chain.descriptors.push_back(descriptor);
  return true;
}

void Queue::push_used(uint16_t head, uint32_t written) {
  if (!active()) return;
  // Completing chains popped before the queue broke is harmless: the used ring was checked.
  std::byte* element =
      used_view_.data() + kRingHeaderSize + kUsedEntrySize * (next_used_ & (size_ - 1));
  store_le32(element, head);
  store_le32(element + 4, written);
  ++next_used_;
  std::atomic_thread_fence(std::memory_order_release);  // The entry before the index.
  store_shared16(used_view_.data() + kUsedIndexOffset, next_used_);
}

bool Queue::should_notify() {
  if (!active()) return false;
  // Our used->idx store must be visible before we read the driver's used_event / flags, or a
  // driver that just re-enabled interrupts could miss this batch (§2.7.10).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t old_used = signalled_used_;
  const bool valid = signalled_valid_;
  signalled_used_ = next_used_;
  signalled_valid_ = true;
  if (valid && old_used == next_used_) return false;  // Nothing new since the last decision.
  if (event_idx_) {
    const uint16_t used_event =
        load_shared16(available_view_.data() + kRingHeaderSize + kAvailableEntrySize * size_);
    return !valid || need_event(used_event, next_used_, old_used);
  }
  const uint16_t flags = load_shared16(available_view_.data() + kAvailableFlagsOffset);
  return (flags & kAvailableNoInterrupt) == 0;
}

void Queue::enable_notifications() {
  if (!active() || !event_idx_) return;
  store_shared16(used_view_.data() + kRingHeaderSize + kUsedEntrySize * size_, next_available_);
  // The driver must see avail_event before we look at avail->idx again.
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void Queue::reset() {
  const uint16_t max_size = max_size_;
  *this = Queue(max_size);
}

}  // namespace ember::virtio
