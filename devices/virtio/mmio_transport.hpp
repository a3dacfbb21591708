// The virtio-over-MMIO transport, version 2 ("modern") only (virtio 1.2 §4.2): one 4 KiB bus
// range per device with the registers of §4.2.2 below 0x100 and the device's configuration space
// from 0x100. It wraps any virtio::Device: feature negotiation, queue set-up, the status state
// machine, notifications and the InterruptStatus register with one edge-triggered interrupt line.
//
// Threads: read()/write() come from vCPU threads; notify() from the I/O thread (the machine
// registers a KVM ioeventfd per queue on notify_address_offset() with the queue index as
// datamatch). A plain bus write to QueueNotify calls the on_notify callback instead, so the
// machine decides on which thread the queue is processed. All transport state is guarded by the
// device's mutex(), which is held around every call into the device. InterruptStatus and
// ConfigGeneration are atomics: the device raises interrupts while it already holds its mutex.
//
// Nothing the guest does here throws or crashes: accesses of the wrong width or alignment read as
// zero and are ignored on write; invalid queue set-ups and devices that refuse to start end in
// DEVICE_NEEDS_RESET with a configuration-change interrupt.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "devices/bus_device.hpp"
#include "devices/interrupt_line.hpp"
#include "devices/virtio/device.hpp"
#include "devices/virtio/queue.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/guest_memory.hpp"

namespace ember::virtio {

namespace mmio {

// Register offsets (§4.2.2, table "MMIO Device Register Layout"). All are 32 bits wide.
inline constexpr uint64_t kMagicValue = 0x000;
inline constexpr uint64_t kVersion = 0x004;
inline constexpr uint64_t kDeviceId = 0x008;
inline constexpr uint64_t kVendorId = 0x00c;
inline constexpr uint64_t kDeviceFeatures = 0x010;
inline constexpr uint64_t kDeviceFeaturesSel = 0x014;
inline constexpr uint64_t kDriverFeatures = 0x020;
inline constexpr uint64_t kDriverFeaturesSel = 0x024;
inline constexpr uint64_t kQueueSel = 0x030;
inline constexpr uint64_t kQueueNumMax = 0x034;
inline constexpr uint64_t kQueueNum = 0x038;
inline constexpr uint64_t kQueueReady = 0x044;
inline constexpr uint64_t kQueueNotify = 0x050;
inline constexpr uint64_t kInterruptStatus = 0x060;
inline constexpr uint64_t kInterruptAck = 0x064;
inline constexpr uint64_t kStatus = 0x070;
inline constexpr uint64_t kQueueDescLow = 0x080;
inline constexpr uint64_t kQueueDescHigh = 0x084;
inline constexpr uint64_t kQueueDriverLow = 0x090;  // Available ring.
inline constexpr uint64_t kQueueDriverHigh = 0x094;
inline constexpr uint64_t kQueueDeviceLow = 0x0a0;  // Used ring.
inline constexpr uint64_t kQueueDeviceHigh = 0x0a4;
inline constexpr uint64_t kShmSel = 0x0ac;
inline constexpr uint64_t kShmLenLow = 0x0b0;
inline constexpr uint64_t kShmLenHigh = 0x0b4;
inline constexpr uint64_t kShmBaseLow = 0x0b8;
inline constexpr uint64_t kShmBaseHigh = 0x0bc;
inline constexpr uint64_t kQueueReset = 0x0c0;
inline constexpr uint64_t kConfigGeneration = 0x0fc;
inline constexpr uint64_t kConfig = 0x100;
inline constexpr uint64_t kConfigEnd = 0x1000;  // Accesses past it read 0 (ours, not the spec's).

inline constexpr uint32_t kMagic = 0x74726976;          // "virt" in little-endian.
inline constexpr uint32_t kVersion2 = 2;                // Legacy version 1 is not offered.
inline constexpr uint32_t kEmberVendorId = 0x52424d45;  // "EMBR" in little-endian.

// InterruptStatus bits (§4.2.2).
inline constexpr uint32_t kInterruptUsedBuffer = 1u << 0;
inline constexpr uint32_t kInterruptConfigChange = 1u << 1;

}  // namespace mmio

class VirtioMmioTransport : public BusDevice, private Interrupts {
 public:
  using NotifyHandler = std::function<void(uint16_t queue)>;

  // device: what the transport carries (owned). memory and loop: handed to the device and its
  // queues at DRIVER_OK; they must outlive the transport. interrupt: the device's edge-triggered
  // line, pulsed (set_level(true), set_level(false)) for every interrupt. on_notify: receives bus
  // writes to QueueNotify once the device runs; it should end in notify(queue) on the I/O thread.
  // Throws Error if device is null, on_notify is empty or the device has no queues.
  VirtioMmioTransport(std::unique_ptr<Device> device, const GuestMemory& memory, EventLoop& loop,
                      InterruptLine& interrupt, NotifyHandler on_notify);
  ~VirtioMmioTransport() override = default;
  VirtioMmioTransport(const VirtioMmioTransport&) = delete;
  VirtioMmioTransport& operator=(const VirtioMmioTransport&) = delete;

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // The driver notified `queue` (from an ioeventfd or on_notify). Ignored unless the device runs
  // (DRIVER_OK accepted) and the queue is active; otherwise calls device.process_queue(queue).
  void notify(uint16_t queue);

  // For KVM_IOEVENTFD: the address offset of QueueNotify; register one eventfd per queue index
  // 0..queue_count()-1 with a 4-byte length and datamatch = the queue index.
  static constexpr uint64_t notify_address_offset() { return mmio::kQueueNotify; }
  static constexpr uint32_t notify_access_size() { return 4; }
  uint16_t queue_count() const { return queue_count_; }

  Device& device() { return *device_; }

 private:
  // virtio::Interrupts, called by the device with its mutex held (never takes it).
  void queue_used(uint16_t queue) override;
  void config_changed() override;

  uint32_t read_register(uint64_t offset);                     // Mutex held.
  void write_register(uint64_t offset, uint32_t value);        // Mutex held.
  void write_status(uint32_t value);                           // Mutex held.
  void write_queue_register(uint64_t offset, uint32_t value);  // Mutex held.
  bool features_acceptable() const;                            // Mutex held.
  bool activate();                                             // Mutex held.
  void fail(const std::string& why);  // Mutex held: NEEDS_RESET and a configuration interrupt.
  void reset();                       // Mutex held.
  Queue* selected_queue();            // Mutex held; null when QueueSel names no queue.
  void raise(uint32_t interrupt_bits);

  const std::unique_ptr<Device> device_;
  const GuestMemory& memory_;
  EventLoop& loop_;
  InterruptLine& interrupt_;
  const NotifyHandler on_notify_;

  // Fixed at construction.
  uint32_t device_id_ = 0;
  uint64_t offered_features_ = 0;
  uint16_t queue_count_ = 0;

  // Guarded by device_->mutex().
  std::vector<Queue> queues_;
  uint32_t device_features_select_ = 0;
  uint32_t driver_features_select_ = 0;
  uint64_t driver_features_ = 0;
  uint32_t queue_select_ = 0;
  uint8_t status_ = 0;
  bool running_ = false;  // DRIVER_OK accepted and the device activated.
  bool failure_logged_ = false;

  std::atomic<uint32_t> interrupt_status_{0};
  std::atomic<uint32_t> config_generation_{0};
};

}  // namespace ember::virtio
