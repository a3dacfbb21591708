#include "devices/virtio/pci_transport.hpp"
#include "devices/register_bytes.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <bit>
#include <exception>
#include <string>

#include "vmm/error.hpp"

namespace ember::virtio {

using namespace pci;

namespace {

template <size_t N>
void put_le(std::array<uint8_t, N>& bytes, size_t offset, size_t size, uint64_t value) {
  for (size_t i = 0; i < size; ++i) bytes[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

void put_le(std::vector<uint8_t>& bytes, size_t offset, size_t size, uint64_t value) {
  for (size_t i = 0; i < size; ++i) bytes[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

void fill_zero(std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), uint8_t{0});
}

// Whether [offset, offset + size) lies inside [begin, begin + length).
bool inside(uint64_t offset, size_t size, uint64_t begin, uint64_t length) {
  return offset >= begin && offset - begin < length && size <= length - (offset - begin);
}

bool overlaps(uint64_t offset, size_t size, uint64_t begin, uint64_t length) {
  return offset < begin + length && offset + size > begin;
}

uint16_t checked_queue_count(const Device* device) {
  if (device == nullptr) throw Error("virtio-pci: no device");
  const uint16_t count = device->queue_count();
  if (count == 0 || count > kMaxQueues)
    throw Error("virtio-pci: device has " + std::to_string(count) + " queues (1 to " +
                std::to_string(kMaxQueues) + " supported)");
  return count;
}

PciIdentity identity(DeviceType type) {
  const auto id = static_cast<uint16_t>(kDeviceIdBase + static_cast<uint32_t>(type));
  return {.vendor_id = kVendorId,
          .device_id = id,
          .revision = kRevision,
          .class_code = class_code(type),
          .subsystem_vendor_id = kVendorId,
          .subsystem_id = id};  // Non-transitional: 0x40 or more (§4.1.2.1).
}

}  // namespace

uint32_t pci::class_code(DeviceType type) {
  switch (type) {
    case DeviceType::kNet:
      return 0x020000;  // Network controller, Ethernet.
    case DeviceType::kBlock:
      return 0x010000;  // Mass storage, SCSI (as QEMU).
    case DeviceType::kConsole:
      return 0x078000;  // Communication controller, other.
    case DeviceType::kEntropy:
      return 0x00ff00;  // As QEMU's virtio-rng-pci.
    case DeviceType::kFs:
      return 0x018000;  // Mass storage, other (as QEMU's vhost-user-fs-pci).
  }
  return 0xff0000;
}

VirtioPciTransport::VirtioPciTransport(std::unique_ptr<Device> device, const GuestMemory& memory,
                                       EventLoop& loop, std::shared_ptr<MsiSink> msi,
                                       NotifyHandler on_notify)
    : device_(std::move(device)),
      memory_(memory),
      loop_(loop),
      on_notify_(std::move(on_notify)),
      queue_count_(checked_queue_count(device_.get())),
      msix_(static_cast<uint16_t>(queue_count_ + 1), std::move(msi)),  // Configuration + queues.
      config_(identity(device_->type())) {
  std::lock_guard lock(device_->mutex());
  offered_features_ = device_->features() | kFeatureVersion1;
  queues_.assign(queue_count_, Queue(device_->queue_max_size()));
  pba_offset_ = kMsixTableOffset + ((msix_.table_size() + 0xfff) & ~uint64_t{0xfff});
  bar_size_ = std::bit_ceil(pba_offset_ + msix_.pba_size());
  config_.add_memory_bar(
      {.index = kBar, .size = bar_size_, .is_64bit = true, .prefetchable = false});
  add_capabilities();
}

void VirtioPciTransport::add_capabilities() {
  // struct virtio_pci_cap (§4.1.4) after the ID and next bytes: cap_len, cfg_type, bar, id,
  // padding[2], offset, length; then notify_off_multiplier or pci_cfg_data.
  const auto add = [this](uint8_t type, uint64_t offset, uint64_t length, uint8_t size,
                          uint32_t extra) {
    std::vector<uint8_t> body(size - 2, 0);
    put_le(body, kCapLength - 2, 1, size);
    put_le(body, kCapConfigType - 2, 1, type);
    put_le(body, kCapBar - 2, 1, kBar);
    put_le(body, kCapOffset - 2, 4, offset);
    put_le(body, kCapRegionLength - 2, 4, length);
    if (size > kCapSize) put_le(body, kCapSize - 2, 4, extra);
    std::vector<uint8_t> writable(body.size(), 0);
    if (type == kCapPciConfig) {  // The driver picks bar, offset and length, and uses the data.
      writable[kCapBar - 2] = 0xff;
      std::fill_n(writable.begin() + (kCapOffset - 2), 12, uint8_t{0xff});
    }
    return config_.add_capability(::ember::pci::kCapabilityVendor, body, writable);
  };
  add(kCapCommonConfig, kCommonConfigOffset, kCommonConfigSize, kCapSize, 0);
  add(kCapNotifyConfig, kNotifyOffset, uint64_t{queue_count_} * kNotifyOffMultiplier,
      kNotifyCapSize, kNotifyOffMultiplier);
  add(kCapIsrConfig, kIsrOffset, kIsrSize, kCapSize, 0);
  add(kCapDeviceConfig, kDeviceConfigOffset, kDeviceConfigSize, kCapSize, 0);
  cfg_capability_ = add(kCapPciConfig, 0, 0, kPciConfigCapSize, 0);
  msix_.add_capability(config_, kBar, static_cast<uint32_t>(kMsixTableOffset),
                       static_cast<uint32_t>(pba_offset_));
}

// --- Configuration space ---------------------------------------------------------------------

void VirtioPciTransport::config_read(uint16_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(config_mutex_);
  if (overlaps(offset, data.size(), cfg_capability_ + kCapPciConfigData, 4))
    cfg_capability_access(false);
  config_.read(offset, data);
}

void VirtioPciTransport::config_write(uint16_t offset, std::span<const uint8_t> data) {
  NotifyRegionsHandler handler;
  std::vector<NotifyRegion> regions;
  {
    std::lock_guard lock(config_mutex_);
    const auto before = config_.decoded_bars();
    config_.write(offset, data);
    msix_.update_from_config(config_);
    if (overlaps(offset, data.size(), cfg_capability_ + kCapPciConfigData, 4))
      cfg_capability_access(true);
    if (config_.decoded_bars() != before && on_notify_regions_) {
      handler = on_notify_regions_;
      regions = regions_locked();
    }
  }
  if (handler) handler(regions);
}

// VIRTIO_PCI_CAP_PCI_CFG (§4.1.4.9): an access of cap.length bytes at cap.offset in BAR cap.bar
// through pci_cfg_data. Lengths other than 1, 2 or 4, unaligned offsets and other BARs do nothing.
void VirtioPciTransport::cfg_capability_access(bool write) {
  const auto bar = static_cast<uint8_t>(config_.load(cfg_capability_ + kCapBar, 1));
  const uint32_t offset = config_.load(cfg_capability_ + kCapOffset, 4);
  const uint32_t length = config_.load(cfg_capability_ + kCapRegionLength, 4);
  const auto data_offset = static_cast<uint16_t>(cfg_capability_ + kCapPciConfigData);
  if (bar != kBar || (length != 1 && length != 2 && length != 4) || offset % length != 0 ||
      !inside(offset, length, 0, bar_size_))
    return;
  std::array<uint8_t, 4> bytes{};
  const auto window = std::span(bytes).first(length);
  if (write) {
    put_le(bytes, 0, 4, config_.load(data_offset, 4));
    bar_write(bar, offset, window);
  } else {
    bar_read(bar, offset, window);
    config_.store(data_offset, length, static_cast<uint32_t>(access_value(window)));
  }
}

std::vector<PciBarDefinition> VirtioPciTransport::bar_definitions() const {
  std::lock_guard lock(config_mutex_);
  return config_.bars();
}

void VirtioPciTransport::assign_bar(uint8_t index, uint64_t address) {
  std::lock_guard lock(config_mutex_);
  config_.set_bar_address(index, address);
}

void VirtioPciTransport::enable_memory_decoding() {
  std::lock_guard lock(config_mutex_);
  config_.set_command(config_.command() | ::ember::pci::kCommandMemorySpace);
}

std::vector<PciBarRegion> VirtioPciTransport::decoded_bars() const {
  std::lock_guard lock(config_mutex_);
  return config_.decoded_bars();
}

void VirtioPciTransport::set_requester_id(uint16_t requester_id) {
  msix_.set_requester_id(requester_id);
}

std::vector<NotifyRegion> VirtioPciTransport::notify_regions() const {
  std::lock_guard lock(config_mutex_);
  return regions_locked();
}

std::vector<NotifyRegion> VirtioPciTransport::regions_locked() const {
  std::vector<NotifyRegion> regions;
  for (const PciBarRegion& bar : config_.decoded_bars()) {
    if (bar.index != kBar) continue;
    for (uint16_t queue = 0; queue < queue_count_; ++queue)
      regions.push_back({bar.address + kNotifyOffset + uint64_t{queue} * kNotifyOffMultiplier,
                         kNotifyOffMultiplier, queue});
  }
  return regions;
}

void VirtioPciTransport::set_notify_regions_handler(NotifyRegionsHandler handler) {
  std::lock_guard lock(config_mutex_);
  on_notify_regions_ = std::move(handler);
}

// --- The BAR ---------------------------------------------------------------------------------

void VirtioPciTransport::bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) {
  const size_t size = data.size();
  if (index != kBar) {
    fill_zero(data);
  } else if (inside(offset, size, kCommonConfigOffset, kCommonConfigSize)) {
    common_read(offset - kCommonConfigOffset, data);
  } else if (inside(offset, size, kIsrOffset, kIsrSize)) {
    fill_zero(data);
    if (offset == kIsrOffset && size > 0) data[0] = isr_.exchange(0);  // Read clears (§4.1.4.5).
  } else if (inside(offset, size, kDeviceConfigOffset, kDeviceConfigSize)) {
    std::lock_guard lock(device_->mutex());
    device_->read_config(offset - kDeviceConfigOffset, data);
  } else if (inside(offset, size, kMsixTableOffset, msix_.table_size())) {
    msix_.table_read(offset - kMsixTableOffset, data);
  } else if (inside(offset, size, pba_offset_, msix_.pba_size())) {
    msix_.pba_read(offset - pba_offset_, data);
  } else {
    fill_zero(data);  // Notify registers, gaps and straddling accesses.
  }
}

void VirtioPciTransport::bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) {
  const size_t size = data.size();
  if (index != kBar) return;
  if (inside(offset, size, kCommonConfigOffset, kCommonConfigSize)) {
    common_write(offset - kCommonConfigOffset, data);
  } else if (inside(offset, size, kDeviceConfigOffset, kDeviceConfigSize)) {
    std::lock_guard lock(device_->mutex());
    device_->write_config(offset - kDeviceConfigOffset, data);
  } else if (inside(offset, size, kNotifyOffset, kNotifySize)) {
    notify_write(offset - kNotifyOffset);
  } else if (inside(offset, size, kMsixTableOffset, msix_.table_size())) {
    msix_.table_write(offset - kMsixTableOffset, data);
  }
  // ISR and PBA are read-only; gaps ignore writes.
}

void VirtioPciTransport::notify_write(uint64_t offset) {
  const uint64_t queue = offset / kNotifyOffMultiplier;
  if (queue >= queue_count_) return;
  if (on_notify_) {
    on_notify_(static_cast<uint16_t>(queue));
  } else {
    notify(static_cast<uint16_t>(queue));
  }
}

void VirtioPciTransport::notify(uint16_t queue) {
  std::lock_guard lock(device_->mutex());
  if (!running_ || (status_ & kStatusNeedsReset) != 0 || queue >= queue_count_ ||
      !queues_[queue].active())
    return;
  try {
    device_->process_queue(queue);
  } catch (const std::exception& error) {  // No exception crosses the I/O loop or a vCPU.
    return fail(std::string("processing a queue failed: ") + error.what());
  }
  if (queues_[queue].broken())
    fail("queue " + std::to_string(queue) + ": " + queues_[queue].error());
}

// --- Common configuration ----------------------------------------------------------------------

Queue* VirtioPciTransport::selected_queue() {
  return queue_select_ < queue_count_ ? &queues_[queue_select_] : nullptr;
}

bool VirtioPciTransport::valid_vector(uint16_t vector) const {
  return vector == kNoVector || vector < msix_.vector_count();
}

void VirtioPciTransport::common_read(uint64_t offset, std::span<uint8_t> data) {
  std::array<uint8_t, kCommonConfigSize> registers{};
  {
    std::lock_guard lock(device_->mutex());
    const auto feature_word = [](uint64_t features, uint32_t select) -> uint32_t {
      return select < 2 ? static_cast<uint32_t>(features >> (32 * select)) : 0;
    };
    put_le(registers, kDeviceFeatureSelect, 4, device_feature_select_);
    put_le(registers, kDeviceFeature, 4, feature_word(offered_features_, device_feature_select_));
    put_le(registers, kDriverFeatureSelect, 4, driver_feature_select_);
    put_le(registers, kDriverFeature, 4, feature_word(driver_features_, driver_feature_select_));
    put_le(registers, kConfigMsixVector, 2, config_msix_vector_);
    put_le(registers, kNumQueues, 2, queue_count_);
    put_le(registers, kDeviceStatus, 1, status_);
    put_le(registers, kConfigGeneration, 1, config_generation_.load());
    put_le(registers, kQueueSelect, 2, queue_select_);
    // An unavailable queue reads as size 0 and everything else 0 (§4.1.4.3.1).
    if (const Queue* queue = selected_queue()) {
      put_le(registers, kQueueSize, 2, queue->size());
      put_le(registers, kQueueMsixVector, 2, queue->msix_vector());
      put_le(registers, kQueueEnable, 2, queue->enabled() ? 1 : 0);
      put_le(registers, kQueueNotifyOff, 2, queue_select_);
      put_le(registers, kQueueDesc, 8, queue->descriptor_table());
      put_le(registers, kQueueDriver, 8, queue->available_ring());
      put_le(registers, kQueueDevice, 8, queue->used_ring());
    }
  }
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = offset + i < registers.size() ? registers[offset + i] : uint8_t{0};
}

void VirtioPciTransport::common_write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(device_->mutex());
  write_register(offset, data.size(), access_value(data));
}

// Each field is written with its own width (§4.1.3.1); 64-bit fields also as two 32-bit halves.
// Anything else is ignored.
void VirtioPciTransport::write_register(uint64_t offset, size_t size, uint64_t value) {
  switch (offset) {
    case kDeviceFeatureSelect:
      if (size == 4) device_feature_select_ = static_cast<uint32_t>(value);
      return;
    case kDriverFeatureSelect:
      if (size == 4) driver_feature_select_ = static_cast<uint32_t>(value);
      return;
    case kDriverFeature:
      // Features are fixed once FEATURES_OK is accepted (§3.1.1).
      if (size == 4 && driver_feature_select_ < 2 && (status_ & kStatusFeaturesOk) == 0) {
        const unsigned shift = 32 * driver_feature_select_;
        driver_features_ = (driver_features_ & ~(0xffffffffull << shift)) | (value << shift);
      }
      return;
    case kConfigMsixVector:
      // A vector the table lacks reads back as NO_VECTOR (§4.1.5.1.2).
      if (size == 2) {
        const auto vector = static_cast<uint16_t>(value);
        config_msix_vector_ = valid_vector(vector) ? vector : kNoVector;
      }
      return;
    case kDeviceStatus:
      if (size == 1) write_status(static_cast<uint8_t>(value));
      return;
    case kQueueSelect:
      if (size == 2) queue_select_ = static_cast<uint16_t>(value);
      return;
    default:
      write_queue_register(offset, size, value);
  }
}

void VirtioPciTransport::write_queue_register(uint64_t offset, size_t size, uint64_t value) {
  Queue* queue = selected_queue();
  if (queue == nullptr) return;
  if (offset == kQueueMsixVector) {
    if (size == 2) {
      const auto vector = static_cast<uint16_t>(value);
      queue->set_msix_vector(valid_vector(vector) ? vector : kNoVector);
    }
    return;
  }
  // A queue's set-up is fixed once it is enabled or the device runs (§4.1.4.3.2).
  if (running_ || queue->enabled()) return;
  const auto set_address = [&](uint64_t base, uint64_t current, auto setter) {
    if (offset == base && size == 8) {
      (queue->*setter)(value);
    } else if (offset == base && size == 4) {
      (queue->*setter)((current & ~0xffffffffull) | (value & 0xffffffff));
    } else if (offset == base + 4 && size == 4) {
      (queue->*setter)((current & 0xffffffff) | (value << 32));
    }
  };
  switch (offset) {
    case kQueueSize:
      if (size == 2) queue->set_size(static_cast<uint16_t>(value));  // Checked at activation.
      return;
    case kQueueEnable:
      if (size == 2 && value == 1) queue->set_enabled(true);  // Writing 0 is not allowed.
      return;
    case kQueueDesc:
    case kQueueDesc + 4:
      set_address(kQueueDesc, queue->descriptor_table(), &Queue::set_descriptor_table);
      return;
    case kQueueDriver:
    case kQueueDriver + 4:
      set_address(kQueueDriver, queue->available_ring(), &Queue::set_available_ring);
      return;
    case kQueueDevice:
    case kQueueDevice + 4:
      set_address(kQueueDevice, queue->used_ring(), &Queue::set_used_ring);
      return;
    default:
      return;  // Read-only or unknown.
  }
}

bool VirtioPciTransport::features_acceptable() const {
  return (driver_features_ & ~offered_features_) == 0 &&
         (driver_features_ & kFeatureVersion1) != 0;  // No legacy interface here.
}

// The driver only adds bits until it resets (§3.1.1), so bits once set stay set.
void VirtioPciTransport::write_status(uint8_t value) {
  if (value == 0) {
    reset();
    return;
  }
  const uint8_t old = status_;
  uint8_t next = static_cast<uint8_t>(old | value);
  // FEATURES_OK reads back clear when the subset is not acceptable (§2.2.2, §3.1.1 step 6).
  if ((next & kStatusFeaturesOk) != 0 && (old & kStatusFeaturesOk) == 0 && !features_acceptable())
    next = static_cast<uint8_t>(next & ~kStatusFeaturesOk);
  status_ = next;
  if ((next & kStatusDriverOk) != 0 && (old & kStatusDriverOk) == 0) activate();
}

void VirtioPciTransport::activate() {
  if ((status_ & kStatusFeaturesOk) == 0) return fail("DRIVER_OK without FEATURES_OK");
  if ((status_ & kStatusNeedsReset) != 0) return;
  const bool event_index = (driver_features_ & kFeatureEventIndex) != 0;
  const bool indirect = (driver_features_ & kFeatureIndirectDescriptors) != 0;
  for (uint16_t index = 0; index < queue_count_; ++index) {
    Queue& queue = queues_[index];
    if (queue.enabled() && !queue.activate(memory_, event_index, indirect))
      return fail("queue " + std::to_string(index) + ": " + queue.error());
  }
  activated_ = true;
  bool started = false;
  try {
    started = device_->activate(memory_, queues_, driver_features_, *this, loop_);
  } catch (const std::exception& error) {
    return fail(std::string("the device could not start: ") + error.what());
  }
  if (!started) return fail("the device could not start");
  running_ = true;
}

void VirtioPciTransport::fail(const std::string& why) {
  if ((status_ & kStatusNeedsReset) != 0) return;  // Reported already.
  log_failure(why);
  status_ |= kStatusNeedsReset;
  if ((status_ & kStatusDriverOk) != 0) raise(kIsrConfig, config_msix_vector_);  // §2.1.2.
}

// Guest-caused, so a guest could repeat it endlessly (break a queue, reset, break it again): the first
// failure is a warning, later ones debug lines, as on virtio-mmio; the devices rate-limit their own.
void VirtioPciTransport::log_failure(const std::string& why) {
  const auto level = failure_logged_ ? spdlog::level::debug : spdlog::level::warn;
  failure_logged_ = true;
  spdlog::log(level, "virtio-pci device {}: {}; device needs reset",
              static_cast<uint32_t>(device_->type()), why);
}

void VirtioPciTransport::reset() {
  if (activated_) {
    try {
      device_->reset();
    } catch (const std::exception& error) {
      spdlog::warn("virtio-pci device {}: reset failed: {}", static_cast<uint32_t>(device_->type()),
                   error.what());
    }
  }
  for (Queue& queue : queues_) queue.reset();
  device_feature_select_ = 0;
  driver_feature_select_ = 0;
  driver_features_ = 0;
  config_msix_vector_ = kNoVector;
  queue_select_ = 0;
  status_ = 0;
  activated_ = false;
  running_ = false;
  isr_ = 0;
}

// --- Interrupts (device mutex held) ------------------------------------------------------------

void VirtioPciTransport::raise(uint8_t isr_bits, uint16_t vector) {
  isr_.fetch_or(isr_bits);
  msix_.signal(vector);  // Dropped without MSI-X or with NO_VECTOR: ember has no INTx.
}

void VirtioPciTransport::queue_used(uint16_t queue) {
  if (queue >= queue_count_) return;
  raise(kIsrQueue, queues_[queue].msix_vector());
}

void VirtioPciTransport::config_changed() {
  // The device also says "needs reset" this way; a broken queue is how we tell.
  const auto broken = std::find_if(queues_.begin(), queues_.end(),
                                   [](const Queue& queue) { return queue.broken(); });
  if (broken != queues_.end() && (status_ & kStatusNeedsReset) == 0) {
    log_failure("queue " + std::to_string(broken - queues_.begin()) + ": " + broken->error());
    status_ |= kStatusNeedsReset;
  }
  // Or the device stopped for its own reasons (a vhost-user backend that died); it logged why.
  if (device_->needs_reset()) status_ |= kStatusNeedsReset;
  config_generation_.fetch_add(1);
  raise(kIsrConfig, config_msix_vector_);
}

}  // namespace ember::virtio
