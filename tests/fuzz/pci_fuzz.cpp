// ember's PCI root complex (devices/pci/root.cpp) as the guest reaches it: configuration mechanism
// #1 (ports 0xcf8-0xcff), ECAM and the BAR window, with the host bridge at device 0 and two
// virtio-pci functions (rng, console). Configuration writes move and size BARs, turn memory
// decoding and MSI-X (enable, function mask) on and off; BAR accesses reach the MSI-X tables and
// PBAs (devices/pci/msix.cpp) and everything else of the transports.
//
// Input: register accesses (register_accesses.hpp, le32 offsets; operation bits 3-4: 0 the config
// I/O ports, 1 ECAM, 2 the BAR window, 3 notify() of queue `value` on the first function), then
// the guest memory image (virtio_fuzz.hpp).
#include "tests/fuzz/pci_fuzz.hpp"

#include <memory>

#include "devices/pci/root.hpp"
#include "tests/fuzz/register_accesses.hpp"
#include "tests/fuzz/virtio_fuzz.hpp"

using namespace ember;
using namespace ember::fuzz;

namespace {

constexpr uint64_t kWindowBase = 0xc0000000;
constexpr uint64_t kWindowSize = 0x1000000;
constexpr uint64_t kEcamSize = 0x100000;  // Bus 0 only.
constexpr uint64_t kConfigPorts = 8;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input input(data, size);
  const auto accesses = read_register_accesses(input, 4);
  const GuestMemory& memory = load_guest_memory(input.rest());

  EventLoop loop;
  const auto root = std::make_shared<PciRoot>(kWindowBase, kWindowSize);
  const auto rng = make_virtio_pci(false, memory, loop);
  root->add(rng);
  root->add(make_virtio_pci(true, memory, loop));
  PciConfigIo ports(root);
  PciEcam ecam(root);
  PciMmioWindow window(root);
  for (const RegisterAccess& access : accesses) {
    switch (access.kind() & 3) {
      case 0:  // Port I/O: 1, 2 or 4 bytes inside the eight ports.
        if (access.size() <= 4 && access.offset % kConfigPorts + access.size() <= kConfigPorts)
          perform(ports, access.offset % kConfigPorts, access);
        break;
      case 1:
        if (access.offset % kEcamSize + access.size() <= kEcamSize)
          perform(ecam, access.offset % kEcamSize, access);
        break;
      case 2:
        if (access.offset % kWindowSize + access.size() <= kWindowSize)
          perform(window, access.offset % kWindowSize, access);
        break;
      default:
        rng->notify(static_cast<uint16_t>(access.value));
    }
  }
  // Device reset (status 0) for each function, wherever the guest left its BAR, so no device keeps
  // guest memory.
  for (uint8_t device = 1; device <= 2; ++device) {
    const auto function =
        std::static_pointer_cast<virtio::VirtioPciTransport>(root->function(device));
    const uint8_t zero = 0;
    function->bar_write(0, virtio::pci::kDeviceStatus, std::span(&zero, 1));
  }
  return 0;
}
