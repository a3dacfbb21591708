// A driver-side split virtqueue for device tests: lays out a descriptor table, available ring and
// used ring in a GuestMemory, builds chains of readable/writable buffers (direct or indirect),
// publishes them and reads back what the device put in the used ring.
//
//   auto memory = test::make_test_memory();
//   test::TestRing ring(*memory, 16);
//   Queue queue(256);
//   ASSERT_TRUE(ring.activate(queue));
//   ring.push({ring.readable("request"), ring.writable(512)});
//   auto chain = queue.pop();                 // ... device work ...
//   queue.push_used(chain->head, 512);
//   auto used = ring.pop_used();              // {id, length}
//   std::string reply = ring.read_string(ring.buffer(1).address, 512);  // what the device wrote
//
// Everything is little-endian through GuestMemory's checked accessors; misuse throws ember::Error.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "devices/virtio/queue.hpp"
#include "vmm/guest_memory.hpp"

namespace ember::virtio::test {

// A standard test memory: two 2 MiB regions with a 2 MiB gap between them.
inline constexpr uint64_t kLowRegionStart = 0;
inline constexpr uint64_t kLowRegionSize = 2ull << 20;
inline constexpr uint64_t kHighRegionStart = 4ull << 20;
inline constexpr uint64_t kHighRegionSize = 2ull << 20;

inline std::unique_ptr<GuestMemory> make_test_memory() {
  return std::make_unique<GuestMemory>(std::vector<GuestMemory::RegionSpec>{
      {kLowRegionStart, kLowRegionSize}, {kHighRegionStart, kHighRegionSize}});
}

// One buffer of a chain, as the driver describes it.
struct Buffer {
  uint64_t address;
  uint32_t length;
  bool writable;  // Device-writable (VIRTQ_DESC_F_WRITE).
};

struct UsedElement {
  uint32_t id;
  uint32_t length;
  bool operator==(const UsedElement&) const = default;
};

class TestRing {
 public:
  // Rings at ring_base (descriptor table, then available ring, then used ring at the next 4-byte
  // boundary), zeroed; buffers and indirect tables are carved from data_base upwards.
  TestRing(const GuestMemory& memory, uint16_t size, uint64_t ring_base = 0x1000,
           uint64_t data_base = 0x100000)
      : memory_(memory),
        size_(size),
        descriptor_table_(ring_base),
        available_ring_(ring_base + 16ull * size),
        used_ring_((available_ring_ + 6 + 2ull * size + 3) & ~3ull),
        next_data_(data_base) {
    const uint64_t end = used_ring_ + 6 + 8ull * size;
    std::vector<std::byte> zeros(end - ring_base);
    memory_.write_or_throw(ring_base, zeros);
  }

  const GuestMemory& memory() const { return memory_; }
  uint16_t size() const { return size_; }
  uint64_t descriptor_table() const { return descriptor_table_; }
  uint64_t available_ring() const { return available_ring_; }
  uint64_t used_ring() const { return used_ring_; }

  // What a transport would do: size, ring addresses, queue_enable.
  void configure(Queue& queue) const {
    queue.set_size(size_);
    queue.set_descriptor_table(descriptor_table_);
    queue.set_available_ring(available_ring_);
    queue.set_used_ring(used_ring_);
    queue.set_enabled(true);
  }
  bool activate(Queue& queue, bool event_idx = false, bool indirect = false) const {
    configure(queue);
    return queue.activate(memory_, event_idx, indirect);
  }

  // --- Buffers in the data area ---
  uint64_t allocate(uint64_t length, uint64_t alignment = 16) {
    next_data_ = (next_data_ + alignment - 1) & ~(alignment - 1);
    const uint64_t address = next_data_;
    memory_.slice_or_throw(address, length);
    next_data_ += length;
    return address;
  }
  Buffer readable(std::span<const std::byte> content) {
    const uint64_t address = allocate(content.size());
    memory_.write_or_throw(address, content);
    return {address, static_cast<uint32_t>(content.size()), false};
  }
  Buffer readable(std::string_view text) { return readable(std::as_bytes(std::span(text))); }
  Buffer writable(uint32_t length) {
    const uint64_t address = allocate(length);
    fill(address, length, std::byte{0});
    return {address, length, true};
  }
  // A buffer anywhere (hostile tests): nothing is allocated or written.
  static Buffer at(uint64_t address, uint32_t length, bool writable) {
    return {address, length, writable};
  }

  // --- Descriptors ---
  void set_descriptor(uint16_t index, uint64_t address, uint32_t length, uint16_t flags,
                      uint16_t next) const {
    write_descriptor(descriptor_table_, index, address, length, flags, next);
  }
  // Writes entry `index` of any descriptor table (the queue's or an indirect one).
  void write_descriptor(uint64_t table, uint32_t index, uint64_t address, uint32_t length,
                        uint16_t flags, uint16_t next) const {
    std::byte entry[16];
    put(entry, address, 8);
    put(entry + 8, length, 4);
    put(entry + 12, flags, 2);
    put(entry + 14, next, 2);
    memory_.write_or_throw(table + 16ull * index, entry);
  }
  // Writes the buffers as a linked chain at the next free descriptor indices (wrapping); returns
  // the head. Remembers the buffers, see buffer().
  uint16_t add_chain(const std::vector<Buffer>& buffers) {
    const uint16_t head = next_descriptor_;
    for (size_t i = 0; i < buffers.size(); ++i) {
      const uint16_t index = next_descriptor_;
      next_descriptor_ = static_cast<uint16_t>((next_descriptor_ + 1) % size_);
      const bool last = i + 1 == buffers.size();
      set_descriptor(index, buffers[i].address, buffers[i].length, flags_of(buffers[i], last),
                     last ? 0 : next_descriptor_);
    }
    last_buffers_ = buffers;
    return head;
  }
  // Writes the buffers as an indirect table in the data area; returns its address.
  uint64_t add_indirect_table(const std::vector<Buffer>& buffers) {
    const uint64_t table = allocate(16ull * buffers.size());
    for (size_t i = 0; i < buffers.size(); ++i) {
      const bool last = i + 1 == buffers.size();
      write_descriptor(table, static_cast<uint32_t>(i), buffers[i].address, buffers[i].length,
                       flags_of(buffers[i], last), last ? 0 : static_cast<uint16_t>(i + 1));
    }
    return table;
  }
  // One queue descriptor (INDIRECT) naming a table of the buffers; returns the head.
  uint16_t add_indirect_chain(const std::vector<Buffer>& buffers) {
    const uint64_t table = add_indirect_table(buffers);
    const uint16_t head = next_descriptor_;
    next_descriptor_ = static_cast<uint16_t>((next_descriptor_ + 1) % size_);
    set_descriptor(head, table, static_cast<uint32_t>(16 * buffers.size()), kDescriptorIndirect, 0);
    last_buffers_ = buffers;
    return head;
  }
  // The i-th buffer of the chain added last.
  const Buffer& buffer(size_t i) const { return last_buffers_.at(i); }

  // --- Available ring ---
  // Puts `head` in the next available slot and advances avail->idx.
  void publish(uint16_t head) {
    set_available_entry(static_cast<uint16_t>(available_index_ % size_), head);
    set_available_index(static_cast<uint16_t>(available_index_ + 1));
  }
  uint16_t push(const std::vector<Buffer>& buffers) {
    const uint16_t head = add_chain(buffers);
    publish(head);
    return head;
  }
  uint16_t push_indirect(const std::vector<Buffer>& buffers) {
    const uint16_t head = add_indirect_chain(buffers);
    publish(head);
    return head;
  }
  void set_available_entry(uint16_t slot, uint16_t head) const {
    write16(available_ring_ + 4 + 2ull * slot, head);
  }
  void set_available_index(uint16_t index) {
    available_index_ = index;
    write16(available_ring_ + 2, index);
  }
  uint16_t available_index() const { return available_index_; }
  void set_available_flags(uint16_t flags) const { write16(available_ring_, flags); }
  void set_used_event(uint16_t index) const { write16(available_ring_ + 4 + 2ull * size_, index); }

  // --- Used ring ---
  uint16_t used_flags() const { return read16(used_ring_); }
  uint16_t used_index() const { return read16(used_ring_ + 2); }
  // The element at used position `position` (taken modulo the size).
  UsedElement used(uint16_t position) const {
    const uint64_t element = used_ring_ + 4 + 8ull * (position % size_);
    return {read32(element), read32(element + 4)};
  }
  uint16_t avail_event() const { return read16(used_ring_ + 4 + 8ull * size_); }
  // The next element the device added since the last pop_used(), as a driver would consume it.
  std::optional<UsedElement> pop_used() {
    if (last_used_ == used_index()) return std::nullopt;
    return used(last_used_++);
  }

  // --- Raw memory ---
  std::vector<std::byte> read_bytes(uint64_t address, uint64_t length) const {
    auto view = memory_.slice_or_throw(address, length);
    return {view.begin(), view.end()};
  }
  std::string read_string(uint64_t address, uint64_t length) const {
    auto view = memory_.slice_or_throw(address, length);
    return {reinterpret_cast<const char*>(view.data()), view.size()};
  }
  void fill(uint64_t address, uint64_t length, std::byte value) const {
    auto view = memory_.slice_or_throw(address, length);
    std::fill(view.begin(), view.end(), value);
  }
  void write16(uint64_t address, uint16_t value) const {
    std::byte bytes[2];
    put(bytes, value, 2);
    memory_.write_or_throw(address, bytes);
  }
  uint16_t read16(uint64_t address) const { return static_cast<uint16_t>(read_le(address, 2)); }
  uint32_t read32(uint64_t address) const { return static_cast<uint32_t>(read_le(address, 4)); }

 private:
  static uint16_t flags_of(const Buffer& buffer, bool last) {
    return static_cast<uint16_t>((buffer.writable ? kDescriptorWrite : 0) |
                                 (last ? 0 : kDescriptorNext));
  }
  static void put(std::byte* out, uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out[i] = static_cast<std::byte>(value >> (8 * i));
  }
  uint64_t read_le(uint64_t address, int bytes) const {
    auto view = memory_.slice_or_throw(address, bytes);
    uint64_t value = 0;
    for (int i = 0; i < bytes; ++i) value |= std::to_integer<uint64_t>(view[i]) << (8 * i);
    return value;
  }

  const GuestMemory& memory_;
  uint16_t size_;
  uint64_t descriptor_table_;
  uint64_t available_ring_;
  uint64_t used_ring_;
  uint64_t next_data_;
  uint16_t next_descriptor_ = 0;
  uint16_t available_index_ = 0;
  uint16_t last_used_ = 0;
  std::vector<Buffer> last_buffers_;
};

}  // namespace ember::virtio::test
