// The small interface every virtio device implements, and that both transports (PCI modern and MMIO
// version 2) wrap. A device knows nothing of its transport: it gets its queues and a way to interrupt
// the driver at activation.
//
// Threads: register accesses (config space, status, activation, reset) arrive on vCPU threads;
// queue notifications and backend completions run on the I/O thread. Every entry point below is
// called with the device's mutex() held (transports and the I/O loop take it), so devices need no
// locking of their own.
#pragma once

#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "devices/virtio/queue.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/guest_memory.hpp"

namespace ember::virtio {

// Feature bits shared by all devices (§6).
inline constexpr uint64_t kFeatureIndirectDescriptors = 1ull << 28;  // VIRTIO_F_INDIRECT_DESC
inline constexpr uint64_t kFeatureEventIndex = 1ull << 29;           // VIRTIO_F_EVENT_IDX
inline constexpr uint64_t kFeatureVersion1 = 1ull << 32;             // VIRTIO_F_VERSION_1

// Device status bits (§2.1).
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusNeedsReset = 0x40;
inline constexpr uint8_t kStatusFailed = 0x80;

// Device IDs (§5).
enum class DeviceType : uint32_t {
  kNet = 1,
  kBlock = 2,
  kConsole = 3,
  kEntropy = 4,
  kFs = 26,
};

// How a device interrupts the driver; the transport implements it (an MSI-X vector per queue, or
// the ISR status register and one interrupt line).
class Interrupts {
 public:
  virtual ~Interrupts() = default;
  // The device put buffers in the used ring of `queue` and Queue::should_notify() said so.
  virtual void queue_used(uint16_t queue) = 0;
  // Configuration space changed, or the device needs reset (§4.1.4.5, §4.2.2.1).
  virtual void config_changed() = 0;
};

class Device {
 public:
  virtual ~Device() = default;

  virtual DeviceType type() const = 0;
  // Everything the device offers, including kFeatureVersion1 and the ring features it supports.
  virtual uint64_t features() const = 0;
  virtual uint16_t queue_count() const = 0;
  virtual uint16_t queue_max_size() const { return 256; }

  // Device-specific configuration space (§4.1.4.6 / §4.2.2 offset 0x100). Reads past the end
  // return zeros; writes to read-only fields are ignored.
  virtual void read_config(uint64_t offset, std::span<uint8_t> data) const = 0;
  virtual void write_config(uint64_t offset, std::span<const uint8_t> data) {
    (void)offset;
    (void)data;
  }

  // The driver set DRIVER_OK: `queues` are configured and active (Queue::activate() succeeded for
  // the enabled ones), `features` were accepted. Return false if the device cannot run (the
  // transport then sets NEEDS_RESET). `loop` is the I/O thread's loop, for backend fds; the device
  // registers with it here (its handlers run on the I/O thread and must take mutex()).
  virtual bool activate(const GuestMemory& memory, std::span<Queue> queues, uint64_t features,
                        Interrupts& interrupts, EventLoop& loop) = 0;
  // The driver notified `queue` (on the I/O thread).
  virtual void process_queue(uint16_t queue) = 0;
  // Device reset (§2.4): drop in-flight work, unregister from the loop, forget the queues.
  virtual void reset() = 0;
  // The guest broke a queue and the device stopped: transports report DEVICE_NEEDS_RESET in the
  // status they show the driver until reset() (§2.1.2).
  virtual bool needs_reset() const { return false; }

  std::mutex& mutex() { return mutex_; }

 private:
  std::mutex mutex_;
};

}  // namespace ember::virtio
