// virtio-blk request handling (devices/virtio/blk.cpp) against hostile chains, on a 64 KiB disk
// (a memfd through RawFile's synchronous path, so every request completes at once).
//
// Input (virtio_fuzz.hpp): flags (bit 2: a read-only disk, bit 3: DISCARD and WRITE_ZEROES not
// negotiated, bit 4: reset the device before its completions are drained, bits 5-7: which 8 bytes
// of configuration space to read at the end), the request queue's layout, one action byte (1 +
// bits 0-1 kicks), then the guest memory image with the requests: 16-byte headers, data buffers,
// status bytes, discard segments.
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <memory>
#include <string>

#include "devices/backends/raw_file.hpp"
#include "devices/virtio/blk.hpp"
#include "tests/fuzz/event_loop_once.hpp"
#include "tests/fuzz/virtio_fuzz.hpp"

using namespace ember;
using namespace ember::fuzz;

namespace {

constexpr off_t kDiskSize = 64 * 1024;
constexpr uint8_t kFlagReadOnly = 1u << 2;
constexpr uint8_t kFlagNoDiscard = 1u << 3;
constexpr uint8_t kFlagResetEarly = 1u << 4;

// The disk's path, a fresh zeroed 64 KiB memfd for every input.
std::string fresh_disk() {
  static const int disk = ::memfd_create("ember-fuzz-disk", MFD_CLOEXEC);
  FUZZ_CHECK(disk >= 0);
  FUZZ_CHECK(::ftruncate(disk, 0) == 0 && ::ftruncate(disk, kDiskSize) == 0);
  return "/proc/self/fd/" + std::to_string(disk);
}

}  // namespace

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

  RawFileOptions options;
  options.read_only = (flags & kFlagReadOnly) != 0;
  options.force_synchronous = true;
  virtio::VirtioBlock device(std::make_unique<RawFile>(fresh_disk(), options), "fuzz-disk");
  std::vector<virtio::Queue> queues{virtio::Queue(256)};
  if (!activate_queue(queues[0], layout, memory, flags)) return 0;
  uint64_t features = negotiated(device.features(), flags);
  if (flags & kFlagNoDiscard)
    features &= ~(virtio::kBlockFeatureDiscard | virtio::kBlockFeatureWriteZeroes);
  CountingInterrupts interrupts(1);
  EventLoop loop;
  {
    std::lock_guard lock(device.mutex());
    FUZZ_CHECK(device.activate(memory, queues, features, interrupts, loop));
    for (int kick = 0; kick < kicks; ++kick) device.process_queue(0);
    check_needs_reset(device, queues, interrupts);
    if (flags & kFlagResetEarly) device.reset();
  }
  run_ready_handlers(loop);  // Completions: status bytes and used entries.
  std::lock_guard lock(device.mutex());
  std::array<uint8_t, 8> config{};
  device.read_config(8u * (flags >> 5), config);
  device.reset();
  return 0;
}
