// virtio-net (devices/virtio/net.cpp): transmit chains from a hostile driver, and frames from the
// host delivered into its receive chains, with and without mergeable buffers. The tap is a
// SOCK_DGRAM socketpair (Tap::from_fd), whose other end the target reads and writes.
//
// Input (virtio_fuzz.hpp): flags (bit 2: MRG_RXBUF, bit 3: GUEST_CSUM, bits 4-6: where to read
// the configuration space at the end), the layouts of the receive
// and transmit queues, four action bytes, then the guest memory image. Action byte a: 0xff does
// nothing; 0xfe sends a 100-byte frame without a kick; other values with bit 7 set kick the
// transmit queue; the rest send a frame of 12 + 37 * a bytes (a = 0x7f: 64 KiB) to the tap and
// kick the receive queue. Then the I/O loop runs once: the tap's readiness (frames waiting, room
// to transmit again) goes through the device's tap handler.
#include <sys/socket.h>

#include <array>
#include <memory>
#include <vector>

#include "devices/virtio/net.hpp"
#include "tests/fuzz/event_loop_once.hpp"
#include "tests/fuzz/virtio_fuzz.hpp"

using namespace ember;
using namespace ember::fuzz;

namespace {

constexpr uint8_t kFlagMergeable = 1u << 2;
constexpr uint8_t kFlagGuestChecksum = 1u << 3;
constexpr int kActions = 4;

size_t frame_length(uint8_t action) {
  return action == 0x7f ? 65536 : virtio::net::kHeaderBytes + 37u * action;
}

// Reads whatever the device transmitted, so the socket never fills.
void drain(int peer) {
  static std::vector<uint8_t> buffer(virtio::net::kMaxPacketBytes + 1);
  while (::recv(peer, buffer.data(), buffer.size(), MSG_DONTWAIT) > 0) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input input(data, size);
  const uint8_t flags = input.u8();
  const RingLayout receive_layout = read_ring_layout(input);
  const RingLayout transmit_layout = read_ring_layout(input);
  std::array<uint8_t, kActions> actions{};
  for (uint8_t& action : actions) action = input.u8();
  const GuestMemory& memory = load_guest_memory(input.rest());

  int fds[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds) == 0);
  UniqueFd peer(fds[1]);
  virtio::VirtioNet device(Tap::from_fd(UniqueFd(fds[0]), "fuzz0"), {0x52, 0x54, 0, 0, 0, 1});
  std::vector<virtio::Queue> queues{virtio::Queue(256), virtio::Queue(256)};
  if (!activate_queue(queues[0], receive_layout, memory, flags) ||
      !activate_queue(queues[1], transmit_layout, memory, flags))
    return 0;
  uint64_t features = negotiated(device.features(), flags);
  if (!(flags & kFlagMergeable)) features &= ~virtio::net::kFeatureMergeableBuffers;
  if (!(flags & kFlagGuestChecksum)) features &= ~virtio::net::kFeatureGuestChecksum;
  CountingInterrupts interrupts(2);
  EventLoop loop;  // Watches the tap.
  {
    std::lock_guard lock(device.mutex());
    FUZZ_CHECK(device.activate(memory, queues, features, interrupts, loop));
  }
  static const std::vector<uint8_t> frame(65536, 0x42);
  for (uint8_t action : actions) {
    if (action == 0xff) continue;
    if (action == 0xfe) {
      ::send(peer.get(), frame.data(), 100, MSG_DONTWAIT);
      continue;
    }
    uint16_t queue = virtio::net::kTransmitQueue;
    if (!(action & 0x80)) {
      const size_t length = frame_length(action);
      ::send(peer.get(), frame.data(), std::min(length, frame.size()), MSG_DONTWAIT);
      queue = virtio::net::kReceiveQueue;
    }
    std::lock_guard lock(device.mutex());
    device.process_queue(queue);
    drain(peer.get());
  }
  run_ready_handlers(loop);
  drain(peer.get());
  std::lock_guard lock(device.mutex());
  std::array<uint8_t, virtio::net::kConfigSize + 2> config{};
  device.read_config((flags >> 4) & 7, config);
  check_needs_reset(device, queues, interrupts);
  device.reset();
  return 0;
}
