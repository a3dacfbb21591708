// The virtio-pci transport (devices/virtio/pci_transport.cpp) as its PCI function: configuration
// space (vendor capabilities, the PCI_CFG access window, MSI-X capability) and the BAR (common
// configuration, ISR, device configuration, notifications, MSI-X table and PBA), with a real device
// behind it (virtio-rng, or virtio-console when flags bit 2 is set).
//
// Input: u8 flags, then accesses (register_accesses.hpp, le16 offsets; operation bit 3:
// configuration space instead of the BAR, bit 4: the I/O thread's notify() of queue `value` instead
// of an access), then the guest memory image (virtio_fuzz.hpp) holding the rings.
#include "devices/pci/config_space.hpp"
#include "tests/fuzz/pci_fuzz.hpp"
#include "tests/fuzz/register_accesses.hpp"
#include "tests/fuzz/virtio_fuzz.hpp"

using namespace ember;
using namespace ember::fuzz;

namespace {

// PciFunction's contract: configuration accesses of 1-4 bytes inside 4 KiB, BAR accesses inside
// the BAR; PciRoot and the bus never hand it anything else.
struct ConfigSpaceAccess {
  virtio::VirtioPciTransport& function;
  void read(uint64_t offset, std::span<uint8_t> data) {
    function.config_read(static_cast<uint16_t>(offset), data);
  }
  void write(uint64_t offset, std::span<const uint8_t> data) {
    function.config_write(static_cast<uint16_t>(offset), data);
  }
};
struct BarAccess {
  virtio::VirtioPciTransport& function;
  void read(uint64_t offset, std::span<uint8_t> data) { function.bar_read(0, offset, data); }
  void write(uint64_t offset, std::span<const uint8_t> data) {
    function.bar_write(0, offset, data);
  }
};

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
  const auto transport = make_virtio_pci((flags & 4) != 0, memory, loop);
  transport->assign_bar(0, 0xc0000000);
  transport->enable_memory_decoding();
  ConfigSpaceAccess config{*transport};
  BarAccess bar{*transport};
  for (const RegisterAccess& access : accesses) {
    if (access.kind() & 2) {
      transport->notify(static_cast<uint16_t>(access.value));
    } else if (access.kind() & 1) {
      const uint64_t offset = access.offset % pci::kConfigSpaceSize;
      if (access.size() <= 4 && offset + access.size() <= pci::kConfigSpaceSize)
        perform(config, offset, access);
    } else {
      const uint64_t offset = access.offset % transport->bar_size();
      if (offset + access.size() <= transport->bar_size()) perform(bar, offset, access);
    }
  }
  // Device reset through the common configuration, so the device lets go of guest memory.
  const uint8_t zero = 0;
  transport->bar_write(0, virtio::pci::kDeviceStatus, std::span(&zero, 1));
  return 0;
}
