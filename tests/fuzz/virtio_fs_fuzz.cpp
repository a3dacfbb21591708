// virtio-fs (devices/virtio/fs.cpp) parses nothing the guest writes: its rings and FUSE requests go
// to the vhost-user backend (virtiofsd) untouched. What ember does parse is the backend's side of
// the vhost-user connection (devices/vhost_user/): this target plays a hostile or broken backend.
// Its whole reply stream is queued on the socket before the device starts, and the stream then
// ends, so every request ember sends meets the next bytes of the input or end of file.
//
// Input: u8 flags (bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bit 2/3: the driver enabled queue 0/1),
// u8 configuration offset to read, then the backend's bytes (headers and payloads of replies to
// GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, acks, GET_VRING_BASE). The same bytes also
// go through the message decoders directly.
#include <sys/socket.h>

#include <array>
#include <memory>
#include <vector>

#include "devices/vhost_user/frontend.hpp"
#include "devices/vhost_user/message.hpp"
#include "devices/virtio/fs.hpp"
#include "tests/fuzz/event_loop_once.hpp"
#include "tests/fuzz/virtio_fuzz.hpp"
#include "vmm/error.hpp"

using namespace ember;
using namespace ember::fuzz;

namespace {

void decode_all(std::span<const uint8_t> bytes) {
  const auto payload = std::as_bytes(bytes);
  const auto first = payload.first(std::min<size_t>(payload.size(), vhost_user::kHeaderSize));
  if (auto header = vhost_user::decode_header(first)) {
    FUZZ_CHECK(header->size <= vhost_user::kMaxPayloadSize);
    vhost_user::request_name(header->request);
  }
  vhost_user::decode_u64(payload);
  vhost_user::decode_vring_state(payload);
  vhost_user::decode_vring_address(payload);
  if (auto regions = vhost_user::decode_memory_table(payload))
    FUZZ_CHECK(regions->size() <= vhost_user::kMaxMemoryRegions);
}

// Rings where Queue::activate() accepts them: the backend is told their host addresses.
void activate_rings(std::vector<virtio::Queue>& queues, const GuestMemory& memory, uint8_t flags) {
  for (uint16_t index = 0; index < queues.size(); ++index) {
    if (!(flags & (4u << index))) continue;
    const uint64_t base = 0x1000ull * index;
    FUZZ_CHECK(
        activate_queue(queues[index], {16, base, base + 0x100, base + 0x140}, memory, flags));
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
  const uint8_t config_offset = input.u8();
  const auto replies = input.rest();
  decode_all(replies);

  int fds[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  UniqueFd backend(fds[1]);
  // Small inputs: the socket buffer takes them whole.
  FUZZ_CHECK(::send(backend.get(), replies.data(), replies.size(), MSG_DONTWAIT) ==
             static_cast<ssize_t>(replies.size()));
  ::shutdown(backend.get(), SHUT_WR);

  const GuestMemory& memory = load_guest_memory({});
  std::vector<virtio::Queue> queues{virtio::Queue(256), virtio::Queue(256)};
  CountingInterrupts interrupts(virtio::fs::kQueueCount);
  EventLoop loop;
  try {
    virtio::VirtioFs device(std::make_unique<vhost_user::Frontend>(UniqueFd(fds[0]), "fuzz"),
                            "fuzz-tag");
    std::unique_lock lock(device.mutex());
    FUZZ_CHECK((device.features() & ~virtio::fs::kPassedFeatures) == 0);
    std::array<uint8_t, 8> config{};
    device.read_config(config_offset, config);
    activate_rings(queues, memory, flags);
    if (device.activate(memory, queues, negotiated(device.features(), flags), interrupts, loop)) {
      device.process_queue(virtio::fs::kHighPriorityQueue);
      device.process_queue(1);
      lock.unlock();  // The loop's handlers take it.
      run_ready_handlers(loop);
      lock.lock();
    }
    device.reset();
  } catch (const Error&) {
    // A backend that fails the handshake: one line for the user, nothing else.
  }
  return 0;
}
