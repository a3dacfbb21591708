#include "devices/virtio/blk.hpp"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <utility>

#include "vmm/error.hpp"

namespace ember::virtio {

using namespace blk;

namespace {

// Little-endian fields of requests and configuration space, whatever the host's byte order.
template <typename T>
T load_le(std::span<const std::byte> bytes, size_t offset) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    value =
        static_cast<T>(value | static_cast<T>(std::to_integer<T>(bytes[offset + i]) << (8 * i)));
  return value;
}

template <typename T>
void store_le(std::span<std::byte> bytes, size_t offset, T value) {
  for (size_t i = 0; i < sizeof(T); ++i)
    bytes[offset + i] = static_cast<std::byte>(static_cast<uint64_t>(value) >> (8 * i));
}

// [sector, sector + sectors) lies inside a disk of `capacity` sectors (no overflow).
bool in_range(uint64_t sector, uint64_t sectors, uint64_t capacity) {
  return sector <= capacity && sectors <= capacity - sector;
}

// IN and GET_ID fill the writable part, so the used length covers it; other requests write only
// the status byte.
uint32_t used_length(const DescriptorChain& chain, uint32_t type) {
  if (type == kTypeIn || type == kTypeGetId) return static_cast<uint32_t>(chain.writable_bytes);
  return 1;
}

// A guest can break its queue, reset and break it again: log at most once a second across devices.
bool broken_queue_log_allowed() {
  static std::atomic<int64_t> last_log_ms{-1000};
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t last = last_log_ms.load(std::memory_order_relaxed);
  return now - last >= 1000 && last_log_ms.compare_exchange_strong(last, now);
}

}  // namespace

VirtioBlock::VirtioBlock(std::unique_ptr<DiskBackend> backend, std::string id)
    : backend_(std::move(backend)), id_(std::move(id)) {
  if (!backend_) throw Error("virtio-blk: no backend");
}

VirtioBlock::~VirtioBlock() {
  std::lock_guard lock(mutex());
  reset();
}

uint64_t VirtioBlock::features() const {
  uint64_t offered = kFeatureVersion1 | kFeatureIndirectDescriptors | kFeatureEventIndex |
                     kBlockFeatureSegMax | kBlockFeatureBlockSize | kBlockFeatureFlush;
  if (backend_->read_only()) return offered | kBlockFeatureReadOnly;
  return offered | kBlockFeatureDiscard | kBlockFeatureWriteZeroes;
}

void VirtioBlock::read_config(uint64_t offset, std::span<uint8_t> data) const {
  std::array<std::byte, kConfigSize> config{};
  store_le<uint64_t>(config, kConfigCapacity, capacity_sectors());
  // Two descriptors of each chain carry the header and the status byte.
  store_le<uint32_t>(config, kConfigSegMax, queue_max_size() - 2u);
  store_le<uint32_t>(config, kConfigBlockSize, kSectorSize);
  store_le<uint16_t>(config, kConfigNumQueues, 1);
  store_le<uint32_t>(config, kConfigMaxDiscardSectors, kMaxDiscardSectors);
  store_le<uint32_t>(config, kConfigMaxDiscardSegments, kMaxDiscardSegments);
  store_le<uint32_t>(config, kConfigDiscardSectorAlignment, kDiscardSectorAlignment);
  store_le<uint32_t>(config, kConfigMaxWriteZeroesSectors, kMaxDiscardSectors);
  store_le<uint32_t>(config, kConfigMaxWriteZeroesSegments, kMaxDiscardSegments);
  store_le<uint8_t>(config, kConfigWriteZeroesMayUnmap, 1);
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t at = offset + i;
    data[i] = at >= offset && at < config.size() ? std::to_integer<uint8_t>(config[at]) : 0;
  }
}

bool VirtioBlock::activate(const GuestMemory& memory, std::span<Queue> queues, uint64_t features,
                           Interrupts& interrupts, EventLoop& loop) {
  if (queues.empty() || !queues[0].active()) return false;
  try {
    loop.add(backend_->completion_fd(), EPOLLIN, [this](uint32_t) {
      std::lock_guard lock(mutex());
      drain_completions();
    });
  } catch (const Error& error) {
    spdlog::error("virtio-blk: {}", error.what());
    return false;
  }
  memory_ = &memory;
  queue_ = &queues[0];
  interrupts_ = &interrupts;
  loop_ = &loop;
  features_ = features;
  needs_reset_ = false;
  used_since_notify_ = false;
  return true;
}

void VirtioBlock::reset() {
  if (loop_ != nullptr) loop_->remove(backend_->completion_fd());
  // After this no backend request can still write into guest memory or complete later.
  backend_->abandon_in_flight();
  pending_.clear();
  memory_ = nullptr;
  queue_ = nullptr;
  interrupts_ = nullptr;
  loop_ = nullptr;
  features_ = 0;
  needs_reset_ = false;
  used_since_notify_ = false;
}

void VirtioBlock::process_queue(uint16_t queue) {
  if (queue != 0 || !active() || needs_reset_) return;
  while (true) {
    while (auto chain = queue_->pop()) handle(*chain);
    // With EVENT_IDX, ask for the next kick, then look again for chains that raced with it.
    queue_->enable_notifications();
    auto chain = queue_->pop();
    if (!chain) break;
    handle(*chain);
  }
  check_broken();
  notify_if_needed();
}

void VirtioBlock::check_broken() {
  if (needs_reset_ || !queue_->broken()) return;
  needs_reset_ = true;
  if (broken_queue_log_allowed())
    spdlog::warn("virtio-blk: request queue broken, device needs reset: {}", queue_->error());
  interrupts_->config_changed();
}

void VirtioBlock::handle(const DescriptorChain& chain) {
  if (chain.writable_bytes == 0) {
    // No status byte to report anything in: give the buffers back untouched.
    queue_->push_used(chain.head, 0);
    used_since_notify_ = true;
    return;
  }
  std::array<std::byte, kHeaderSize> header{};
  if (chain.readable_bytes < kHeaderSize || chain.read(*memory_, 0, header) != kHeaderSize)
    return complete(chain, kTypeOut, kStatusIoError);
  const auto type = load_le<uint32_t>(header, 0);
  const auto sector = load_le<uint64_t>(header, 8);

  std::optional<uint8_t> status;
  switch (type) {
    case kTypeIn:
    case kTypeOut:
      status = start_transfer(chain, type, sector);
      break;
    case kTypeFlush:
      backend_->flush(submit(chain, type));
      break;
    case kTypeGetId:
      status = answer_get_id(chain);
      break;
    case kTypeDiscard:
    case kTypeWriteZeroes:
      status = start_segment(chain, type);
      break;
    default:
      status = kStatusUnsupported;
  }
  if (status) complete(chain, type, *status);
}

std::optional<uint8_t> VirtioBlock::start_transfer(const DescriptorChain& chain, uint32_t type,
                                                   uint64_t sector) {
  const bool in = type == kTypeIn;
  // IN: nothing readable after the header; OUT: nothing writable before the status byte.
  if (in ? chain.readable_bytes != kHeaderSize : chain.writable_bytes != 1) return kStatusIoError;
  if (!in && backend_->read_only()) return kStatusIoError;
  const uint64_t length = in ? chain.writable_bytes - 1 : chain.readable_bytes - kHeaderSize;
  if (length % kSectorSize != 0) return kStatusIoError;
  if (!in_range(sector, length / kSectorSize, capacity_sectors())) return kStatusIoError;
  if (length == 0) return kStatusOk;
  const auto data = buffers(chain, in, in ? 0 : kHeaderSize, length);
  if (!data) return kStatusIoError;
  const uint64_t token = submit(chain, type);
  if (in) {
    backend_->read(sector * kSectorSize, *data, token);
  } else {
    backend_->write(sector * kSectorSize, *data, token);
  }
  return std::nullopt;
}

std::optional<uint8_t> VirtioBlock::start_segment(const DescriptorChain& chain, uint32_t type) {
  if (backend_->read_only()) return kStatusIoError;
  const uint64_t feature = type == kTypeDiscard ? kBlockFeatureDiscard : kBlockFeatureWriteZeroes;
  if (!(features_ & feature)) return kStatusUnsupported;
  if (chain.writable_bytes != 1) return kStatusIoError;
  const uint64_t payload = chain.readable_bytes - kHeaderSize;
  if (payload == 0 || payload % kSegmentSize != 0) return kStatusIoError;
  if (payload / kSegmentSize > kMaxDiscardSegments) return kStatusIoError;

  std::array<std::byte, kSegmentSize> segment{};
  if (chain.read(*memory_, kHeaderSize, segment) != kSegmentSize) return kStatusIoError;
  const auto sector = load_le<uint64_t>(segment, 0);
  const auto sectors = load_le<uint32_t>(segment, 8);
  const auto flags = load_le<uint32_t>(segment, 12);
  // §5.2.6.2: unknown flags, and unmap on a discard, are unsupported.
  const uint32_t allowed = type == kTypeWriteZeroes ? kSegmentFlagUnmap : 0;
  if (flags & ~allowed) return kStatusUnsupported;
  if (sectors > kMaxDiscardSectors || !in_range(sector, sectors, capacity_sectors()))
    return kStatusIoError;
  if (sectors == 0) return kStatusOk;

  const uint64_t token = submit(chain, type);
  if (type == kTypeDiscard) {
    backend_->discard(sector * kSectorSize, sectors * kSectorSize, token);
  } else {
    backend_->write_zeroes(sector * kSectorSize, sectors * kSectorSize,
                           (flags & kSegmentFlagUnmap) != 0, token);
  }
  return std::nullopt;
}

std::optional<uint8_t> VirtioBlock::answer_get_id(const DescriptorChain& chain) {
  const uint64_t room = chain.writable_bytes - 1;
  if (room == 0) return kStatusIoError;
  // The id is NUL-padded to 20 bytes; a 20-byte id has no terminator (§5.2.6).
  std::array<std::byte, kIdSize> id{};
  std::transform(id_.begin(), id_.begin() + std::min<size_t>(id_.size(), kIdSize), id.begin(),
                 [](char c) { return static_cast<std::byte>(c); });
  chain.write(*memory_, 0, std::span(id).first(std::min<uint64_t>(room, kIdSize)));
  return kStatusOk;
}

uint64_t VirtioBlock::submit(const DescriptorChain& chain, uint32_t type) {
  const uint64_t token = next_token_++;
  pending_.emplace(token, PendingRequest{chain, type});
  return token;
}

std::optional<std::vector<iovec>> VirtioBlock::buffers(const DescriptorChain& chain, bool writable,
                                                       uint64_t skip, uint64_t length) const {
  std::vector<iovec> result;
  for (const auto& descriptor : chain.descriptors) {
    if (descriptor.device_writable != writable || length == 0) continue;
    if (skip >= descriptor.length) {
      skip -= descriptor.length;
      continue;
    }
    const uint64_t take = std::min<uint64_t>(descriptor.length - skip, length);
    // pop() checked every descriptor against guest memory; this only guards against its bugs.
    auto host = memory_->slice(descriptor.address + skip, take);
    if (!host) return std::nullopt;
    result.push_back({host->data(), take});
    length -= take;
    skip = 0;
  }
  if (length != 0) return std::nullopt;
  return result;
}

void VirtioBlock::complete(const DescriptorChain& chain, uint32_t type, uint8_t status) {
  const std::array<std::byte, 1> status_byte{std::byte{status}};
  chain.write(*memory_, chain.writable_bytes - 1, status_byte);
  queue_->push_used(chain.head, used_length(chain, type));
  used_since_notify_ = true;
}

void VirtioBlock::drain_completions() {
  backend_->drain_completions([this](uint64_t token, int32_t result) {
    auto request = pending_.find(token);
    if (request == pending_.end() || !active()) return;
    uint8_t status = result == 0 ? kStatusOk : kStatusIoError;
    // Discard is a hint (§5.2.6.2): a backend that cannot deallocate has still done enough.
    if (request->second.type == kTypeDiscard && result == -EOPNOTSUPP) status = kStatusOk;
    if (status != kStatusOk) {
      spdlog::debug("virtio-blk: request type {} failed: {}", request->second.type, -result);
    }
    complete(request->second.chain, request->second.type, status);
    pending_.erase(request);
  });
  if (active()) notify_if_needed();
}

void VirtioBlock::notify_if_needed() {
  if (!used_since_notify_) return;
  used_since_notify_ = false;
  if (queue_->should_notify()) interrupts_->queue_used(0);
}

}  // namespace ember::virtio
