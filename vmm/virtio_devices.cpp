#include "vmm/virtio_devices.hpp"

#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <filesystem>

#include "boot/layout.hpp"
#include "boot/pci_acpi.hpp"
#include "boot/virtio_mmio_acpi.hpp"
#include "devices/backends/raw_file.hpp"
#include "devices/backends/tap.hpp"
#include "devices/pci/root.hpp"
#include "devices/virtio/blk.hpp"
#include "devices/vhost_user/frontend.hpp"
#include "devices/virtio/console.hpp"
#include "devices/virtio/fs.hpp"
#include "devices/virtio/mmio_transport.hpp"
#include "devices/virtio/net.hpp"
#include "devices/virtio/pci_transport.hpp"
#include "devices/virtio/rng.hpp"
#include "vmm/error.hpp"
#include "vmm/kvm_interrupt_line.hpp"
#include "vmm/msi_routes.hpp"
#include "vmm/virtiofsd.hpp"

namespace ember {

namespace {

// A locally administered unicast MAC from the tap name, stable across runs (52:54:00 is QEMU's
// prefix; ember uses 02:ec:xx, locally administered).
std::array<uint8_t, 6> mac_for(const std::string& tap) {
  uint32_t hash = 2166136261u;  // FNV-1a
  for (unsigned char c : tap) hash = (hash ^ c) * 16777619u;
  return {0x02, 0xec, static_cast<uint8_t>(hash >> 24), static_cast<uint8_t>(hash >> 16),
          static_cast<uint8_t>(hash >> 8), static_cast<uint8_t>(hash)};
}

void drain(int fd) {
  uint64_t value;
  while (::read(fd, &value, sizeof(value)) > 0) {
  }
}

}  // namespace

VirtioDevices::VirtioDevices(const GuestMemory& memory, EventLoop& loop, Bus& pio, Bus& mmio)
    : memory_(memory), loop_(loop), pio_(pio), mmio_(mmio) {}

VirtioDevices::~VirtioDevices() {
  for (auto& notifier : notifiers_) loop_.remove(notifier->eventfd.get());
  for (auto& virtiofsd : virtiofsds_) {
    loop_.remove(virtiofsd->pidfd());
    loop_.remove(virtiofsd->stderr_fd());
  }
}

void VirtioDevices::create(const MachineConfig& config, ConsoleOutput console_output) {
  transport_ = config.transport;
  created_ = make_devices(config, std::move(console_output));
  if (transport_ != Transport::kPci && created_.size() > layout::kVirtioMmioMaxDevices)
    throw Error("--transport mmio: at most " + std::to_string(layout::kVirtioMmioMaxDevices) +
                " virtio devices (one IOAPIC pin each), " + std::to_string(created_.size()) +
                " requested");
}

void VirtioDevices::attach(Vm& vm) {
  vm_ = &vm;
  if (vm.kvm().check_extension(KVM_CAP_IOEVENTFD_ANY_LENGTH) > 0) notify_length_ = 0;
  auto devices = std::move(created_);
  if (devices.empty()) return;
  if (transport_ == Transport::kPci) {
    attach_pci(std::move(devices));
  } else {
    attach_mmio(std::move(devices));
  }
}

std::vector<std::unique_ptr<virtio::Device>> VirtioDevices::make_devices(
    const MachineConfig& config, ConsoleOutput console_output) {
  std::vector<std::unique_ptr<virtio::Device>> devices;
  for (const auto& disk : config.disks) {
    RawFileOptions options;
    options.read_only = disk.read_only;
    options.direct = disk.direct;
    auto backend = std::make_unique<RawFile>(disk.path, options);
    const std::string id =
        disk.id.empty() ? std::filesystem::path(disk.path).filename().string().substr(0, 20)
                        : disk.id;
    devices.push_back(std::make_unique<virtio::VirtioBlock>(std::move(backend), id));
  }
  for (const auto& net : config.nets) {
    devices.push_back(std::make_unique<virtio::VirtioNet>(std::make_unique<Tap>(net.tap),
                                                          net.mac.value_or(mac_for(net.tap))));
  }
  if (config.console == ConsoleKind::kVirtio) {
    auto console = std::make_unique<virtio::VirtioConsole>(std::move(console_output));
    console_ = console.get();
    devices.push_back(std::move(console));
  }
  if (config.entropy) devices.push_back(std::make_unique<virtio::VirtioRng>());
  for (size_t index = 0; index < config.shares.size(); ++index) {
    for (size_t other = 0; other < index; ++other)
      if (config.shares[other].tag == config.shares[index].tag)
        throw Error("share tag '" + config.shares[index].tag + "' is used twice");
    devices.push_back(make_share(config.shares[index]));
  }
  return devices;
}

std::unique_ptr<virtio::Device> VirtioDevices::make_share(const ShareConfig& share) {
  virtio::fs::check_tag(share.tag);  // Before a process is started for it.
  auto virtiofsd = std::make_unique<Virtiofsd>(VirtiofsdOptions{share.host_dir, share.read_only});
  std::unique_ptr<virtio::Device> device;
  try {
    device = std::make_unique<virtio::VirtioFs>(
        std::make_unique<vhost_user::Frontend>(virtiofsd->take_connection(),
                                               "virtiofsd for '" + share.tag + "'"),
        share.tag);
  } catch (const Error& error) {
    const auto exit = virtiofsd->wait_exit(std::chrono::seconds(1));
    std::string said = virtiofsd->read_stderr();
    while (!said.empty() && said.back() == '\n') said.pop_back();
    if (const size_t last = said.rfind('\n'); last != std::string::npos) said.erase(0, last + 1);
    throw Error(std::string(error.what()) + (exit ? " (virtiofsd " + *exit + ")" : "") +
                (said.empty() ? "" : ": " + said));
  }
  Virtiofsd* raw = virtiofsd.get();
  // What virtiofsd says while the guest runs: warnings in ember's log, a line each.
  loop_.add(raw->stderr_fd(), EPOLLIN, [this, raw, tag = share.tag](uint32_t events) {
    std::string text = raw->read_stderr();
    for (size_t start = 0; start < text.size();) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      if (end > start) spdlog::warn("virtiofsd for share '{}': {}", tag, text.substr(start, end - start));
      start = end + 1;
    }
    if (text.empty() && (events & EPOLLHUP)) loop_.remove(raw->stderr_fd());
  });
  loop_.add(raw->pidfd(), EPOLLIN, [this, raw, tag = share.tag](uint32_t) {
    const auto exit = raw->poll_exit();
    if (!exit) return;
    loop_.remove(raw->pidfd());
    spdlog::error("virtiofsd for share '{}' ({}) {}: the guest lost that share", tag,
                  raw->host_dir(), *exit);
  });
  virtiofsds_.push_back(std::move(virtiofsd));
  return device;
}

std::shared_ptr<VirtioDevices::Notifier> VirtioDevices::make_notifier(std::function<void()> notify) {
  auto notifier = std::make_shared<Notifier>();
  notifier->eventfd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!notifier->eventfd) throw system_error("eventfd for a virtqueue notification");
  const int fd = notifier->eventfd.get();
  loop_.add(fd, EPOLLIN, [fd, notify = std::move(notify)](uint32_t) {
    drain(fd);
    notify();
  });
  notifiers_.push_back(notifier);
  return notifier;
}

void VirtioDevices::move_notifier(Notifier& notifier, uint64_t address, uint32_t length,
                                  bool decoding) {
  try {
    if (notifier.registered) {
      vm_->remove_ioeventfd(notifier.eventfd.get(), notifier.address, notifier.length, false);
      notifier.registered = false;
    }
    if (!decoding) return;
    vm_->add_ioeventfd(notifier.eventfd.get(), address, length, false);
    notifier.address = address;
    notifier.length = length;
    notifier.registered = true;
  } catch (const Error& error) {
    // The notify register still works through the bus (slower): log, never fail the guest. A guest
    // that moves one BAR onto another's collides every time: one warning, then debug lines.
    const bool first = !notify_warning_logged_.exchange(true);
    spdlog::log(first ? spdlog::level::warn : spdlog::level::debug, "virtqueue notification at {:#x}: {}",
                address, error.what());
  }
}

void VirtioDevices::attach_pci(std::vector<std::unique_ptr<virtio::Device>> devices) {
  pci_root_ = std::make_shared<PciRoot>(layout::kPciMmioBase, layout::kPciMmioSize);
  msi_routes_ = std::make_shared<KvmMsiRoutes>(*vm_);
  for (auto& device : devices) {
    // Writes that reach the notify register through the bus (before the ioeventfd exists, or via
    // the PCI_CFG capability) are handed to the I/O thread through the same eventfds.
    auto notifiers = std::make_shared<std::vector<std::shared_ptr<Notifier>>>();
    auto on_bus_notify = [notifiers](uint16_t queue) {
      if (queue >= notifiers->size()) return;
      const uint64_t one = 1;
      [[maybe_unused]] auto written = ::write((*notifiers)[queue]->eventfd.get(), &one, 8);
    };
    auto transport = std::make_shared<virtio::VirtioPciTransport>(
        std::move(device), memory_, loop_, msi_routes_, on_bus_notify);
    virtio::VirtioPciTransport* raw = transport.get();
    for (uint16_t queue = 0; queue < transport->queue_count(); ++queue)
      notifiers->push_back(make_notifier([raw, queue] { raw->notify(queue); }));
    pci_root_->add(transport);
    auto place = [this, notifiers](const std::vector<virtio::NotifyRegion>& regions) {
      for (size_t queue = 0; queue < notifiers->size(); ++queue) {
        const virtio::NotifyRegion* region = nullptr;
        for (const auto& candidate : regions)
          if (candidate.queue == queue) region = &candidate;
        move_notifier(*(*notifiers)[queue], region ? region->address : 0, notify_length_,
                      region != nullptr);
      }
    };
    place(transport->notify_regions());
    transport->set_notify_regions_handler(place);
    pci_transports_.push_back(std::move(transport));
  }
  pio_.insert(layout::kPciConfigPort, layout::kPciConfigPortCount,
              std::make_shared<PciConfigIo>(pci_root_));
  mmio_.insert(layout::kPciEcamBase, layout::kPciEcamSize, std::make_shared<PciEcam>(pci_root_));
  mmio_.insert(layout::kPciMmioBase, layout::kPciMmioSize,
               std::make_shared<PciMmioWindow>(pci_root_));
}

void VirtioDevices::attach_mmio(std::vector<std::unique_ptr<virtio::Device>> devices) {
  uint32_t slot = 0;
  for (auto& device : devices) {
    const auto placement = boot::virtio_mmio_slot(slot++);
    auto line = std::make_unique<KvmInterruptLine>(*vm_, placement.gsi);
    auto notifiers = std::make_shared<std::vector<std::shared_ptr<Notifier>>>();
    auto on_bus_notify = [notifiers](uint16_t queue) {
      if (queue >= notifiers->size()) return;
      const uint64_t one = 1;
      [[maybe_unused]] auto written = ::write((*notifiers)[queue]->eventfd.get(), &one, 8);
    };
    auto transport = std::make_shared<virtio::VirtioMmioTransport>(std::move(device), memory_,
                                                                   loop_, *line, on_bus_notify);
    virtio::VirtioMmioTransport* raw = transport.get();
    const uint64_t notify_address =
        placement.base + virtio::VirtioMmioTransport::notify_address_offset();
    for (uint16_t queue = 0; queue < transport->queue_count(); ++queue) {
      auto notifier = make_notifier([raw, queue] { raw->notify(queue); });
      try {
        vm_->add_ioeventfd(notifier->eventfd.get(), notify_address,
                          virtio::VirtioMmioTransport::notify_access_size(), false, queue);
      } catch (const Error& error) {
        spdlog::warn("virtio-mmio notification at {:#x}: {}", notify_address, error.what());
      }
      notifiers->push_back(std::move(notifier));
    }
    mmio_.insert(placement.base, placement.size, transport);
    mmio_lines_.push_back(std::move(line));
    mmio_transports_.push_back(std::move(transport));
  }
}

void VirtioDevices::describe(boot::AcpiConfig& acpi) const {
  if (!pci_transports_.empty()) boot::add_pci_to_acpi(acpi);
  if (transport_ != Transport::kMmio) return;
  for (uint32_t slot = 0; slot < mmio_transports_.size(); ++slot)
    acpi.extra_devices.push_back(boot::virtio_mmio_acpi_device(boot::virtio_mmio_slot(slot)));
}

std::string VirtioDevices::command_line_additions() const {
  std::string additions;
  if (transport_ != Transport::kMmioCommandLine) return additions;
  for (uint32_t slot = 0; slot < mmio_transports_.size(); ++slot)
    additions += " " + boot::virtio_mmio_cmdline(boot::virtio_mmio_slot(slot));
  return additions;
}

size_t VirtioDevices::console_input(std::span<const uint8_t> bytes) {
  return console_ != nullptr ? console_->enqueue_input(bytes) : 0;
}

}  // namespace ember
