// virtio-console (devices/virtio/console.cpp): output chains from a hostile driver and host input
// copied into its receive chains.
//
// Input (virtio_fuzz.hpp): flags, the layouts of receiveq and transmitq, four action bytes, then
// the guest memory image. Action byte a: 0xff does nothing; bit 7 set kicks transmitq; otherwise
// 13 * a bytes of host input are offered (enqueue_input) and must not be over-reported.
#include <array>
#include <vector>

#include "devices/virtio/console.hpp"
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
  const RingLayout receive_layout = read_ring_layout(input);
  const RingLayout transmit_layout = read_ring_layout(input);
  std::array<uint8_t, 4> actions{};
  for (uint8_t& action : actions) action = input.u8();
  const GuestMemory& memory = load_guest_memory(input.rest());

  virtio::VirtioConsole device([](std::span<const uint8_t> bytes) { FUZZ_CHECK(!bytes.empty()); });
  std::vector<virtio::Queue> queues{virtio::Queue(256), virtio::Queue(256)};
  if (!activate_queue(queues[0], receive_layout, memory, flags) ||
      !activate_queue(queues[1], transmit_layout, memory, flags))
    return 0;
  CountingInterrupts interrupts(2);
  EventLoop loop;
  {
    std::lock_guard lock(device.mutex());
    FUZZ_CHECK(
        device.activate(memory, queues, negotiated(device.features(), flags), interrupts, loop));
  }
  static const std::vector<uint8_t> text(13 * 0xff, 'x');
  for (uint8_t action : actions) {
    if (action == 0xff) continue;
    if (action & 0x80) {
      std::lock_guard lock(device.mutex());
      device.process_queue(virtio::console::kTransmitQueue);
    } else {
      const auto offered = std::span(text).first(13u * action);
      FUZZ_CHECK(device.enqueue_input(offered) <= offered.size());
    }
  }
  std::lock_guard lock(device.mutex());
  check_needs_reset(device, queues, interrupts);
  device.reset();
  return 0;
}
