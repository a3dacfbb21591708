#include "devices/virtio/mmio_transport.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <string>
#include <utility>

#include "vmm/error.hpp"

namespace ember::virtio {

using namespace mmio;

namespace {

// Status bits the driver may set; DEVICE_NEEDS_RESET is the device's alone (§2.1).
constexpr uint8_t kDriverStatusBits =
    kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk | kStatusFailed;

uint32_t load_u32(std::span<const uint8_t> data) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) value |= uint32_t{data[i]} << (8 * i);
  return value;
}

void store_u32(std::span<uint8_t> data, uint32_t value) {
  for (size_t i = 0; i < 4; ++i) data[i] = static_cast<uint8_t>(value >> (8 * i));
}

// §4.2.2.2: the driver uses only 32-bit wide, aligned accesses below the configuration space.
bool register_access(uint64_t offset, size_t size) {
  return offset < kConfig && size == 4 && offset % 4 == 0;
}

// Configuration space ends with the 4 KiB page (the bus range is never larger), so devices never
// see offsets near overflow.
bool config_access(uint64_t offset, size_t size) {
  return offset >= kConfig && offset < kConfigEnd && size <= kConfigEnd - offset;
}

uint32_t low_half(uint64_t value) {
  return static_cast<uint32_t>(value);
}
uint32_t high_half(uint64_t value) {
  return static_cast<uint32_t>(value >> 32);
}
uint64_t with_low_half(uint64_t value, uint32_t half) {
  return (value & 0xffffffff00000000ull) | half;
}
uint64_t with_high_half(uint64_t value, uint32_t half) {
  return (value & 0xffffffffull) | (uint64_t{half} << 32);
}

}  // namespace

VirtioMmioTransport::VirtioMmioTransport(std::unique_ptr<Device> device, const GuestMemory& memory,
                                         EventLoop& loop, InterruptLine& interrupt,
                                         NotifyHandler on_notify)
    : device_(std::move(device)),
      memory_(memory),
      loop_(loop),
      interrupt_(interrupt),
      on_notify_(std::move(on_notify)) {
  if (!device_) throw Error("virtio-mmio: no device");
  if (!on_notify_) throw Error("virtio-mmio: no notify handler");
  std::lock_guard lock(device_->mutex());
  device_id_ = static_cast<uint32_t>(device_->type());
  offered_features_ = device_->features() | kFeatureVersion1;
  queue_count_ = device_->queue_count();
  if (queue_count_ == 0) throw Error("virtio-mmio: device has no queues");
  queues_.assign(queue_count_, Queue(device_->queue_max_size()));
}

void VirtioMmioTransport::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), uint8_t{0});
  if (config_access(offset, data.size())) {
    std::lock_guard lock(device_->mutex());
    device_->read_config(offset - kConfig, data);
    return;
  }
  if (!register_access(offset, data.size())) {
    spdlog::debug("virtio-mmio: ignored {}-byte read at {:#x}", data.size(), offset);
    return;
  }
  std::lock_guard lock(device_->mutex());
  store_u32(data, read_register(offset));
}

void VirtioMmioTransport::write(uint64_t offset, std::span<const uint8_t> data) {
  if (config_access(offset, data.size())) {
    std::lock_guard lock(device_->mutex());
    device_->write_config(offset - kConfig, data);
    return;
  }
  if (!register_access(offset, data.size())) {
    spdlog::debug("virtio-mmio: ignored {}-byte write at {:#x}", data.size(), offset);
    return;
  }
  const uint32_t value = load_u32(data);
  if (offset == kQueueNotify) {
    // The handler may call notify() right here, so it runs without the mutex.
    bool forward = false;
    {
      std::lock_guard lock(device_->mutex());
      forward = running_ && value < queue_count_;
    }
    if (forward) on_notify_(static_cast<uint16_t>(value));
    return;
  }
  std::lock_guard lock(device_->mutex());
  write_register(offset, value);
}

void VirtioMmioTransport::notify(uint16_t queue) {
  std::lock_guard lock(device_->mutex());
  if (!running_ || queue >= queue_count_ || !queues_[queue].active()) return;
  try {
    device_->process_queue(queue);
  } catch (const std::exception& error) {
    // No exception crosses the I/O loop: the device stops until the driver resets it.
    running_ = false;
    fail("queue " + std::to_string(queue) + " failed: " + error.what());
  }
}

uint32_t VirtioMmioTransport::read_register(uint64_t offset) {
  switch (offset) {
    case kMagicValue:
      return kMagic;
    case kVersion:
      return kVersion2;
    case kDeviceId:
      return device_id_;
    case kVendorId:
      return kEmberVendorId;
    case kDeviceFeatures:
      if (device_features_select_ == 0) return low_half(offered_features_);
      if (device_features_select_ == 1) return high_half(offered_features_);
      return 0;
    case kQueueNumMax: {
      const Queue* queue = selected_queue();
      return queue == nullptr ? 0 : queue->max_size();  // 0: no such queue (§4.2.2).
    }
    case kQueueReady: {
      const Queue* queue = selected_queue();
      return queue != nullptr && queue->enabled() ? 1 : 0;
    }
    case kInterruptStatus:
      return interrupt_status_.load();
    case kStatus:
      return status_;
    case kShmLenLow:
    case kShmLenHigh:
    case kShmBaseLow:
    case kShmBaseHigh:
      return 0xffffffff;  // No shared memory regions: every SHMSel reads length -1 (§4.2.2).
    case kConfigGeneration:
      return config_generation_.load();
    default:
      return 0;  // Write-only and reserved registers.
  }
}

void VirtioMmioTransport::write_register(uint64_t offset, uint32_t value) {
  switch (offset) {
    case kDeviceFeaturesSel:
      device_features_select_ = value;
      return;
    case kDriverFeatures:
      // Features are fixed once FEATURES_OK is set (§2.2.2).
      if (status_ & kStatusFeaturesOk) return;
      if (driver_features_select_ == 0) driver_features_ = with_low_half(driver_features_, value);
      if (driver_features_select_ == 1) driver_features_ = with_high_half(driver_features_, value);
      return;
    case kDriverFeaturesSel:
      driver_features_select_ = value;
      return;
    case kQueueSel:
      queue_select_ = value;
      return;
    case kInterruptAck:
      interrupt_status_.fetch_and(~value);
      return;
    case kStatus:
      write_status(value);
      return;
    case kQueueNum:
    case kQueueReady:
    case kQueueDescLow:
    case kQueueDescHigh:
    case kQueueDriverLow:
    case kQueueDriverHigh:
    case kQueueDeviceLow:
    case kQueueDeviceHigh:
      write_queue_register(offset, value);
      return;
    default:
      return;  // Read-only and reserved registers.
  }
}

void VirtioMmioTransport::write_queue_register(uint64_t offset, uint32_t value) {
  Queue* queue = selected_queue();
  // A queue's set-up is frozen once it is enabled or the device runs (§4.2.3.2); the I/O thread
  // relies on the rings it validated at activation.
  if (queue == nullptr || running_) return;
  if (offset == kQueueReady) {
    if (value <= 1) queue->set_enabled(value == 1);
    return;
  }
  if (queue->enabled()) return;
  switch (offset) {
    case kQueueNum:
      // A size that does not fit 16 bits becomes 0, which activation rejects, rather than wrapping
      // to a size the driver did not ask for.
      queue->set_size(value <= 0xffff ? static_cast<uint16_t>(value) : 0);
      return;
    case kQueueDescLow:
      queue->set_descriptor_table(with_low_half(queue->descriptor_table(), value));
      return;
    case kQueueDescHigh:
      queue->set_descriptor_table(with_high_half(queue->descriptor_table(), value));
      return;
    case kQueueDriverLow:
      queue->set_available_ring(with_low_half(queue->available_ring(), value));
      return;
    case kQueueDriverHigh:
      queue->set_available_ring(with_high_half(queue->available_ring(), value));
      return;
    case kQueueDeviceLow:
      queue->set_used_ring(with_low_half(queue->used_ring(), value));
      return;
    case kQueueDeviceHigh:
      queue->set_used_ring(with_high_half(queue->used_ring(), value));
      return;
    default:
      return;
  }
}

// §2.1.2 and §3.1.1: the driver only ever adds bits, or writes 0 to reset. FEATURES_OK sticks only
// if the features are acceptable (the driver reads it back, §2.2.2); DRIVER_OK starts the device.
void VirtioMmioTransport::write_status(uint32_t value) {
  if (value == 0) {
    reset();
    return;
  }
  const auto requested = static_cast<uint8_t>(value & kDriverStatusBits);
  if ((status_ & kDriverStatusBits & ~requested) != 0) {
    spdlog::debug("virtio-mmio: driver tried to clear status bits ({:#x} -> {:#x})", status_,
                  requested);
    return;
  }
  auto added = static_cast<uint8_t>(requested & ~status_);
  if ((added & kStatusFeaturesOk) && !features_acceptable()) added &= ~kStatusFeaturesOk;
  status_ |= added & ~kStatusDriverOk;
  if (!(added & kStatusDriverOk)) return;
  if (!(status_ & kStatusFeaturesOk)) return;  // DRIVER_OK before FEATURES_OK is not accepted.
  status_ |= kStatusDriverOk;
  running_ = activate();
}

bool VirtioMmioTransport::features_acceptable() const {
  return (driver_features_ & ~offered_features_) == 0 && (driver_features_ & kFeatureVersion1);
}

bool VirtioMmioTransport::activate() {
  const bool event_idx = driver_features_ & kFeatureEventIndex;
  const bool indirect = driver_features_ & kFeatureIndirectDescriptors;
  for (size_t index = 0; index < queues_.size(); ++index) {
    Queue& queue = queues_[index];
    if (!queue.enabled()) continue;
    if (!queue.activate(memory_, event_idx, indirect)) {
      fail("queue " + std::to_string(index) + ": " + queue.error());
      return false;
    }
  }
  bool activated = false;
  try {
    activated = device_->activate(memory_, queues_, driver_features_, *this, loop_);
    if (!activated) fail("the device refused to start");
  } catch (const std::exception& error) {
    fail(std::string("the device failed to start: ") + error.what());
  }
  return activated;
}

void VirtioMmioTransport::fail(const std::string& why) {
  // Guest-caused, so a guest could repeat it endlessly: warn once, then only at debug level.
  const auto level = failure_logged_ ? spdlog::level::debug : spdlog::level::warn;
  failure_logged_ = true;
  spdlog::log(level, "virtio-mmio: device {} needs reset: {}", device_id_, why);
  status_ |= kStatusNeedsReset;
  config_changed();  // §2.1.2: NEEDS_RESET comes with a configuration change notification.
}

void VirtioMmioTransport::reset() {
  try {
    device_->reset();
  } catch (const std::exception& error) {
    spdlog::error("virtio-mmio: device {} failed to reset: {}", device_id_, error.what());
  }
  for (Queue& queue : queues_) queue.reset();
  device_features_select_ = 0;
  driver_features_select_ = 0;
  driver_features_ = 0;
  queue_select_ = 0;
  status_ = 0;
  running_ = false;
  interrupt_status_.store(0);
}

Queue* VirtioMmioTransport::selected_queue() {
  return queue_select_ < queues_.size() ? &queues_[queue_select_] : nullptr;
}

void VirtioMmioTransport::queue_used(uint16_t /*queue*/) {
  raise(kInterruptUsedBuffer);
}

void VirtioMmioTransport::config_changed() {
  // The device says "needs reset" this way too (§2.1.2); it logged why.
  if (device_->needs_reset()) status_ |= kStatusNeedsReset;
  config_generation_.fetch_add(1);
  raise(kInterruptConfigChange);
}

void VirtioMmioTransport::raise(uint32_t interrupt_bits) {
  interrupt_status_.fetch_or(interrupt_bits);
  // An edge per interrupt: the line is wired to an edge-triggered IOAPIC pin (see HOSTS.md on
  // level-triggered interrupts being delivered twice).
  interrupt_.set_level(true);
  interrupt_.set_level(false);
}

}  // namespace ember::virtio
