// Builds the virtio devices a MachineConfig asks for (disks, nets, console, entropy) and attaches
// them over the chosen transport: virtio-pci behind ember's PCI root (ECAM, 0xcf8, one BAR window;
// MSI-X through KVM routes), or virtio-mmio slots with one edge-triggered GSI each. Queue
// notifications are KVM ioeventfds served by the I/O loop, so vCPU threads never process queues.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "boot/acpi.hpp"
#include "devices/interrupt_line.hpp"
#include "vmm/bus.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/kvm.hpp"
#include "vmm/machine_config.hpp"
#include "vmm/unique_fd.hpp"

namespace ember {

class PciRoot;
class KvmMsiRoutes;
class Virtiofsd;
namespace virtio {
class Device;
class VirtioConsole;
class VirtioPciTransport;
class VirtioMmioTransport;
}  // namespace virtio

class VirtioDevices {
 public:
  using ConsoleOutput = std::function<void(std::span<const uint8_t>)>;

  VirtioDevices(const GuestMemory& memory, EventLoop& loop, Bus& pio, Bus& mmio);
  ~VirtioDevices();

  // Set-up, first half (no KVM: a machine does it before it opens /dev/kvm): opens the backends
  // (one-line Error naming the file, tap or share on failure), starts virtiofsd for the shares and
  // creates the devices. `console_output` receives hvc0's bytes.
  void create(const MachineConfig& config, ConsoleOutput console_output);
  // Second half: attaches the devices to `vm` over the configured transport (ioeventfds, MSI
  // routes or GSIs, bus ranges).
  void attach(Vm& vm);
  // Adds what the guest needs to find them: the PCI host bridge and MCFG, or LNRO0005 devices.
  void describe(boot::AcpiConfig& acpi) const;
  // With Transport::kMmioCommandLine: " virtio_mmio.device=SIZE@BASE:GSI" per device, for the
  // kernel command line (appended after the user's); otherwise empty.
  std::string command_line_additions() const;
  // Host input for hvc0; returns bytes taken (0 when no virtio console or no buffers yet).
  size_t console_input(std::span<const uint8_t> bytes);
  bool has_console() const { return console_ != nullptr; }
  size_t count() const { return pci_transports_.size() + mmio_transports_.size(); }

 private:
  struct Notifier {
    UniqueFd eventfd;
    uint64_t address = 0;
    uint32_t length = 0;
    bool registered = false;
  };

  std::vector<std::unique_ptr<virtio::Device>> make_devices(const MachineConfig& config,
                                                            ConsoleOutput console_output);
  // Starts the share's virtiofsd, watches it (one error line when it exits) and returns its
  // virtio-fs device.
  std::unique_ptr<virtio::Device> make_share(const ShareConfig& share);
  void attach_pci(std::vector<std::unique_ptr<virtio::Device>> devices);
  void attach_mmio(std::vector<std::unique_ptr<virtio::Device>> devices);
  // An eventfd watched by the I/O loop that calls `notify` when signalled.
  std::shared_ptr<Notifier> make_notifier(std::function<void()> notify);
  void move_notifier(Notifier& notifier, uint64_t address, uint32_t length, bool decoding);

  Vm* vm_ = nullptr;  // Set by attach().
  const GuestMemory& memory_;
  EventLoop& loop_;
  Bus& pio_;
  Bus& mmio_;
  Transport transport_ = Transport::kPci;
  std::vector<std::unique_ptr<virtio::Device>> created_;  // Between create() and attach().
  uint32_t notify_length_ = 2;  // 0 ("any length") where KVM supports it.
  std::atomic<bool> notify_warning_logged_{false};  // move_notifier() warns once, then at debug level.
  std::shared_ptr<PciRoot> pci_root_;
  std::shared_ptr<KvmMsiRoutes> msi_routes_;
  std::vector<std::unique_ptr<InterruptLine>> mmio_lines_;  // Outlive the transports using them.
  std::vector<std::shared_ptr<virtio::VirtioPciTransport>> pci_transports_;
  std::vector<std::shared_ptr<virtio::VirtioMmioTransport>> mmio_transports_;
  std::vector<std::shared_ptr<Notifier>> notifiers_;
  // One per share. Declared after the transports so that it goes first: virtiofsd is killed
  // before its device closes the connection (it would log the hang-up on ember's stderr).
  std::vector<std::unique_ptr<Virtiofsd>> virtiofsds_;
  virtio::VirtioConsole* console_ = nullptr;  // Owned by its transport.
};

}  // namespace ember
