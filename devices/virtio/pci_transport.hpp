// The virtio-over-PCI transport, modern only (virtio 1.2 §4.1): a PCI function with vendor 0x1af4,
// device 0x1040 + the virtio device ID, revision 1, and no legacy I/O BAR. It wraps any
// virtio::Device. Everything lives in one 64-bit memory BAR (BAR 0), described by vendor-specific
// capabilities (§4.1.4):
//
//   0x0000  common configuration (§4.1.4.3)      cfg_type 1
//   0x1000  ISR status, read to clear (§4.1.4.5)  cfg_type 3
//   0x2000  device configuration (§4.1.4.6)       cfg_type 4
//   0x3000  notifications (§4.1.4.4)              cfg_type 2, queue_notify_off = queue index,
//                                                 notify_off_multiplier = 4
//   0x4000  MSI-X table, then the PBA on the next 4 KiB boundary
//
// plus the PCI configuration access capability (cfg_type 5, §4.1.4.9) that reaches the BAR through
// configuration space.
//
// Interrupts are MSI-X only: one vector for configuration changes and one per queue, as the driver
// assigns them (config_msix_vector, queue_msix_vector). ember has no INTx: the interrupt pin reads
// 0, and while MSI-X is disabled or a vector is VIRTIO_MSI_NO_VECTOR interrupts are dropped (the
// ISR bits are still set). Linux's virtio-pci driver uses MSI-X whenever the function offers it.
//
// Notifications: the machine registers one KVM ioeventfd per queue at notify_regions() (see there)
// and calls notify(queue) from the I/O thread when it fires. A write that reaches the BAR through
// the bus instead (no ioeventfd yet, or the PCI_CFG capability) goes to on_notify, which should end
// in notify(queue) on the I/O thread; without on_notify, notify() runs on the vCPU thread that
// wrote. Notifications before DRIVER_OK is accepted, or after NEEDS_RESET, are ignored.
//
// Threads and locks: configuration space has its own lock; all virtio state (common configuration,
// queues, status) is guarded by the device's mutex(), which is held around every call into the
// device; the MSI-X table has its own lock. Order: configuration -> device -> MSI-X. The device
// raises interrupts (virtio::Interrupts) with its mutex held; that path takes only the MSI-X lock.
//
// Nothing the guest does here throws or crashes: unknown registers read as zero, accesses of the
// wrong width are ignored, invalid queue set-ups and devices that refuse to start end in
// DEVICE_NEEDS_RESET with a configuration-change interrupt.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "devices/pci/config_space.hpp"
#include "devices/pci/function.hpp"
#include "devices/pci/msi.hpp"
#include "devices/pci/msix.hpp"
#include "devices/virtio/device.hpp"
#include "devices/virtio/queue.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/guest_memory.hpp"

namespace ember::virtio {

namespace pci {

inline constexpr uint16_t kVendorId = 0x1af4;
inline constexpr uint16_t kDeviceIdBase = 0x1040;  // + virtio device ID (§4.1.2.1).
inline constexpr uint8_t kRevision = 1;            // Non-transitional.

// virtio_pci_cap.cfg_type (§4.1.4).
inline constexpr uint8_t kCapCommonConfig = 1;
inline constexpr uint8_t kCapNotifyConfig = 2;
inline constexpr uint8_t kCapIsrConfig = 3;
inline constexpr uint8_t kCapDeviceConfig = 4;
inline constexpr uint8_t kCapPciConfig = 5;
// struct virtio_pci_cap, offsets from the capability start (§4.1.4).
inline constexpr uint16_t kCapLength = 2;
inline constexpr uint16_t kCapConfigType = 3;
inline constexpr uint16_t kCapBar = 4;
inline constexpr uint16_t kCapOffset = 8;
inline constexpr uint16_t kCapRegionLength = 12;
inline constexpr uint16_t kCapNotifyOffMultiplier = 16;  // virtio_pci_notify_cap only.
inline constexpr uint16_t kCapPciConfigData = 16;        // virtio_pci_cfg_cap only.
inline constexpr uint8_t kCapSize = 16;
inline constexpr uint8_t kNotifyCapSize = 20;
inline constexpr uint8_t kPciConfigCapSize = 20;

// The BAR and its regions.
inline constexpr uint8_t kBar = 0;
inline constexpr uint64_t kCommonConfigOffset = 0x0000;
inline constexpr uint64_t kCommonConfigSize = 0x38;  // Through queue_device; no notify data/reset.
inline constexpr uint64_t kIsrOffset = 0x1000;
inline constexpr uint64_t kIsrSize = 4;
inline constexpr uint64_t kDeviceConfigOffset = 0x2000;
inline constexpr uint64_t kDeviceConfigSize = 0x1000;
inline constexpr uint64_t kNotifyOffset = 0x3000;
inline constexpr uint64_t kNotifySize = 0x1000;
inline constexpr uint32_t kNotifyOffMultiplier = 4;
inline constexpr uint16_t kMaxQueues = kNotifySize / kNotifyOffMultiplier;
inline constexpr uint64_t kMsixTableOffset = 0x4000;

// Common configuration registers (§4.1.4.3), offsets in the common configuration region.
inline constexpr uint64_t kDeviceFeatureSelect = 0x00;  // le32
inline constexpr uint64_t kDeviceFeature = 0x04;        // le32, read-only
inline constexpr uint64_t kDriverFeatureSelect = 0x08;  // le32
inline constexpr uint64_t kDriverFeature = 0x0c;        // le32
inline constexpr uint64_t kConfigMsixVector = 0x10;     // le16
inline constexpr uint64_t kNumQueues = 0x12;            // le16, read-only
inline constexpr uint64_t kDeviceStatus = 0x14;         // u8
inline constexpr uint64_t kConfigGeneration = 0x15;     // u8, read-only
inline constexpr uint64_t kQueueSelect = 0x16;          // le16
inline constexpr uint64_t kQueueSize = 0x18;            // le16
inline constexpr uint64_t kQueueMsixVector = 0x1a;      // le16
inline constexpr uint64_t kQueueEnable = 0x1c;          // le16
inline constexpr uint64_t kQueueNotifyOff = 0x1e;       // le16, read-only
inline constexpr uint64_t kQueueDesc = 0x20;            // le64
inline constexpr uint64_t kQueueDriver = 0x28;          // le64 (available ring)
inline constexpr uint64_t kQueueDevice = 0x30;          // le64 (used ring)

inline constexpr uint16_t kNoVector = 0xffff;  // VIRTIO_MSI_NO_VECTOR.
// ISR status bits (§4.1.4.5).
inline constexpr uint8_t kIsrQueue = 1u << 0;
inline constexpr uint8_t kIsrConfig = 1u << 1;

// PCI class code (class, subclass, interface) for a device type: net 02/00/00, block 01/00/00,
// console 07/80/00, entropy 00/ff/00, anything else ff/00/00 (unassigned).
uint32_t class_code(DeviceType type);

}  // namespace pci

// One queue's notification address, for KVM_IOEVENTFD.
struct NotifyRegion {
  uint64_t address;  // Guest-physical, inside the BAR as the guest placed it.
  uint32_t length;   // Bytes of the notify register (4); Linux writes 2 (vp_iowrite16).
  uint16_t queue;
};

class VirtioPciTransport : public PciFunction, private Interrupts {
 public:
  using NotifyHandler = std::function<void(uint16_t queue)>;
  using NotifyRegionsHandler = std::function<void(const std::vector<NotifyRegion>& regions)>;

  // device: what the transport carries. memory and loop: handed to the device and its queues at
  // DRIVER_OK; they must outlive the transport. msi: where MSI-X messages go. on_notify: optional,
  // see above. Throws Error if device or msi is null, or the device has 0 or more than 1024 queues.
  VirtioPciTransport(std::unique_ptr<Device> device, const GuestMemory& memory, EventLoop& loop,
                     std::shared_ptr<MsiSink> msi, NotifyHandler on_notify = {});
  ~VirtioPciTransport() override = default;
  VirtioPciTransport(const VirtioPciTransport&) = delete;
  VirtioPciTransport& operator=(const VirtioPciTransport&) = delete;

  // PciFunction.
  void config_read(uint16_t offset, std::span<uint8_t> data) override;
  void config_write(uint16_t offset, std::span<const uint8_t> data) override;
  std::vector<PciBarDefinition> bar_definitions() const override;
  void assign_bar(uint8_t index, uint64_t address) override;
  void enable_memory_decoding() override;
  std::vector<PciBarRegion> decoded_bars() const override;
  void bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) override;
  void bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) override;
  void set_requester_id(uint16_t requester_id) override;

  // The driver notified `queue` (ioeventfd or on_notify). Ignored unless the device runs and the
  // queue is active; otherwise calls device.process_queue(queue). Any thread.
  void notify(uint16_t queue);

  // One region per queue (address = BAR + 0x3000 + 4 * queue) while the BAR decodes (memory space
  // enabled), else none. For KVM_IOEVENTFD register each with no datamatch and length 0 ("any
  // length", KVM_CAP_IOEVENTFD_ANY_LENGTH), or 2: KVM matches an ioeventfd's length exactly, and
  // Linux writes the 16-bit queue index, so a 4-byte ioeventfd would never fire.
  std::vector<NotifyRegion> notify_regions() const;
  // Set-up: called with the new notify_regions() after a configuration write moved the BAR or
  // turned its decoding on or off, so the machine can move its ioeventfds. It runs on the vCPU
  // thread that wrote, with no transport lock held but inside PciRoot's configuration-write lock
  // (which keeps the calls in order): it must not make PCI configuration accesses itself. Register
  // the initial regions after PciRoot::add() placed the BAR. Regions may lie outside the PCI window
  // mid-reprogramming (PciRoot routes nothing there); the machine may skip those.
  void set_notify_regions_handler(NotifyRegionsHandler handler);

  uint64_t bar_size() const { return bar_size_; }
  uint16_t queue_count() const { return queue_count_; }
  uint16_t msix_vector_count() const { return msix_.vector_count(); }
  Device& device() { return *device_; }

 private:
  // virtio::Interrupts, called by the device with its mutex held (never takes it).
  void queue_used(uint16_t queue) override;
  void config_changed() override;

  void add_capabilities();
  std::vector<NotifyRegion> regions_locked() const;  // config_mutex_ held.
  void cfg_capability_access(bool write);            // config_mutex_ held: PCI_CFG data window.

  // The BAR's regions; the device mutex is taken inside as needed.
  void common_read(uint64_t offset, std::span<uint8_t> data);
  void common_write(uint64_t offset, std::span<const uint8_t> data);
  void notify_write(uint64_t offset);

  // Device mutex held.
  void write_register(uint64_t offset, size_t size, uint64_t value);
  void write_queue_register(uint64_t offset, size_t size, uint64_t value);
  void write_status(uint8_t value);
  bool features_acceptable() const;
  void activate();
  void fail(const std::string& why);
  void log_failure(const std::string& why);
  void reset();
  void raise(uint8_t isr_bits, uint16_t vector);
  Queue* selected_queue();
  bool valid_vector(uint16_t vector) const;

  const std::unique_ptr<Device> device_;
  const GuestMemory& memory_;
  EventLoop& loop_;
  const NotifyHandler on_notify_;

  // Fixed at construction.
  uint64_t offered_features_ = 0;
  uint16_t queue_count_ = 0;
  uint64_t pba_offset_ = 0;
  uint64_t bar_size_ = 0;
  MsixTable msix_;

  // Guarded by config_mutex_.
  mutable std::mutex config_mutex_;
  PciConfigSpace config_;
  uint16_t cfg_capability_ = 0;  // Offset of the PCI_CFG capability.
  NotifyRegionsHandler on_notify_regions_;

  // Guarded by device_->mutex().
  std::vector<Queue> queues_;
  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint64_t driver_features_ = 0;
  uint16_t config_msix_vector_ = pci::kNoVector;
  uint16_t queue_select_ = 0;
  uint8_t status_ = 0;
  bool activated_ = false;  // device_->activate() was called: reset must undo it.
  bool running_ = false;    // DRIVER_OK accepted and the device activated.
  bool failure_logged_ = false;  // The first NEEDS_RESET was logged as a warning.

  // Raised with the device mutex held, read by the ISR region; atomics keep that simple.
  std::atomic<uint8_t> isr_{0};
  std::atomic<uint8_t> config_generation_{0};
};

}  // namespace ember::virtio
