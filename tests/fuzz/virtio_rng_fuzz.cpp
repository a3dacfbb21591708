// virtio-rng (devices/virtio/rng.cpp): request chains from a hostile driver.
//
// Input (virtio_fuzz.hpp): flags, the request queue's layout, one action byte (1 + bits 0-1
// kicks), then the guest memory image.
#include <vector>

#include "devices/virtio/rng.hpp"
#include "tests/fuzz/virtio_fuzz.hpp"

using namespace ember;
using namespace ember::fuzz;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input input(data, size);
  const uint8_t flags = input.u8();
  const RingLayout layout = read_ring_layout(input);
  const int kicks = 1 + (input.u8() & 3);
  const GuestMemory& memory = load_guest_memory(input.rest());

  virtio::VirtioRng device;
  std::vector<virtio::Queue> queues{virtio::Queue(256)};
  if (!activate_queue(queues[0], layout, memory, flags)) return 0;
  CountingInterrupts interrupts(1);
  EventLoop loop;
  std::lock_guard lock(device.mutex());
  FUZZ_CHECK(
      device.activate(memory, queues, negotiated(device.features(), flags), interrupts, loop));
  for (int kick = 0; kick < kicks; ++kick) device.process_queue(0);
  check_needs_reset(device, queues, interrupts);
  device.reset();
  return 0;
}
