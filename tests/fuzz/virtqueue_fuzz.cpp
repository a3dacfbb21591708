// The virtqueue walker (devices/virtio/queue.cpp) against a hostile driver's rings.
//
// Input (virtio_fuzz.hpp): flags, one ring layout, one action byte (bits 0-1: rounds of popping,
// bit 2: reset and activate again between rounds), then the guest memory image holding the
// descriptor table, available ring, indirect tables and buffers. Each round pops chains until none
// is left or the queue breaks, reads each chain's readable part, fills its writable part and
// returns it through the used ring, as a device would.
#include <vector>

#include "tests/fuzz/virtio_fuzz.hpp"

using namespace ember;
using namespace ember::fuzz;

namespace {

// What pop() promises of a chain it hands out.
void check_chain(const GuestMemory& memory, const virtio::DescriptorChain& chain, uint16_t size) {
  uint64_t readable = 0;
  uint64_t writable = 0;
  bool seen_writable = false;
  for (const virtio::Descriptor& descriptor : chain.descriptors) {
    FUZZ_CHECK(descriptor.length > 0);
    FUZZ_CHECK(memory.slice(descriptor.address, descriptor.length).has_value());
    FUZZ_CHECK(descriptor.device_writable || !seen_writable);
    seen_writable = seen_writable || descriptor.device_writable;
    (descriptor.device_writable ? writable : readable) += descriptor.length;
  }
  FUZZ_CHECK(chain.head < size);
  FUZZ_CHECK(readable == chain.readable_bytes && writable == chain.writable_bytes);
  FUZZ_CHECK(readable <= virtio::kMaxChainBytes && writable <= virtio::kMaxChainBytes);
}

// Pops until empty or broken.
void drain(const GuestMemory& memory, virtio::Queue& queue) {
  std::vector<std::byte> buffer;
  while (auto chain = queue.pop()) {
    check_chain(memory, *chain, queue.size());
    // Guest memory holds at most 20 KiB, so a validated chain's parts are that small too.
    buffer.assign(chain->readable_bytes, std::byte{0});
    FUZZ_CHECK(chain->read(memory, 0, buffer) == chain->readable_bytes);
    buffer.assign(chain->writable_bytes, std::byte{0x5a});
    FUZZ_CHECK(chain->write(memory, 0, buffer) == chain->writable_bytes);
    // Reads and writes from an offset stop at the end of their part.
    const uint64_t offset = chain->readable_bytes / 2;
    FUZZ_CHECK(chain->read(memory, offset, buffer) <= chain->readable_bytes - offset);
    queue.push_used(chain->head, static_cast<uint32_t>(chain->writable_bytes));
  }
  queue.should_notify();
  queue.enable_notifications();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input input(data, size);
  const uint8_t flags = input.u8();
  const RingLayout layout = read_ring_layout(input);
  const uint8_t action = input.u8();
  const GuestMemory& memory = load_guest_memory(input.rest());

  virtio::Queue queue(256);
  if (!activate_queue(queue, layout, memory, flags)) return 0;
  const int rounds = 1 + (action & 3);
  for (int round = 0; round < rounds; ++round) {
    // No bound on the chains popped: a used ring or a writable buffer laid over the available
    // ring moves its index as the device writes (a hostile layout, and a legal one for a driver
    // that keeps adding buffers).
    drain(memory, queue);
    if (queue.broken()) {
      FUZZ_CHECK(!queue.error().empty());
      if (!(action & 4)) break;
    }
    if (action & 4) {
      queue.reset();
      if (!activate_queue(queue, layout, memory, static_cast<uint8_t>(flags ^ kFlagIndirect)))
        return 0;
    }
  }
  return 0;
}
