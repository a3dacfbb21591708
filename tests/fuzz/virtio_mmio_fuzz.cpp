// The virtio-mmio transport (devices/virtio/mmio_transport.cpp): a hostile driver's register
// accesses, from feature negotiation and queue set-up to DRIVER_OK, notifications and reset, with
// a real device behind it (virtio-rng, or virtio-console when flags bit 2 is set).
//
// Input: u8 flags (bit 2: console), then register accesses (register_accesses.hpp: le16 offsets
// into the 4 KiB register page; operation bit 3: instead of an access, the I/O thread's notify() of
// queue `value`), then the guest memory image (virtio_fuzz.hpp) holding the rings.
#include <memory>

#include "devices/interrupt_line.hpp"
#include "devices/virtio/console.hpp"
#include "devices/virtio/mmio_transport.hpp"
#include "devices/virtio/rng.hpp"
#include "tests/fuzz/register_accesses.hpp"
#include "tests/fuzz/virtio_fuzz.hpp"

using namespace ember;
using namespace ember::fuzz;

namespace {

constexpr uint64_t kRegisterPage = 0x1000;

class Line : public InterruptLine {
 public:
  void set_level(bool asserted) override {
    FUZZ_CHECK(asserted != level_);  // Pulses: up, then down.
    level_ = asserted;
  }

 private:
  bool level_ = false;
};

std::unique_ptr<virtio::Device> make_device(uint8_t flags) {
  if (flags & 4) return std::make_unique<virtio::VirtioConsole>([](std::span<const uint8_t>) {});
  return std::make_unique<virtio::VirtioRng>();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input input(data, size);
  const uint8_t flags = input.u8();
  const auto accesses = read_register_accesses(input, 2);
  const GuestMemory& memory = load_guest_memory(input.rest());

  EventLoop loop;
  Line line;
  std::unique_ptr<virtio::VirtioMmioTransport> transport;
  // QueueNotify forwarded as the machine does, minus the hop to the I/O thread.
  transport = std::make_unique<virtio::VirtioMmioTransport>(
      make_device(flags), memory, loop, line, [&](uint16_t queue) { transport->notify(queue); });
  for (const RegisterAccess& access : accesses) {
    if (access.kind() & 1) {
      transport->notify(static_cast<uint16_t>(access.value));
      continue;
    }
    // The bus hands the device accesses inside its page only.
    const uint64_t offset = access.offset % kRegisterPage;
    if (offset + access.size() > kRegisterPage) continue;
    perform(*transport, offset, access);
  }
  // Reset, as the driver's last write would, so the device lets go of guest memory.
  const uint8_t zero[4] = {};
  transport->write(virtio::mmio::kStatus, zero);
  return 0;
}
