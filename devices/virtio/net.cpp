#include "devices/virtio/net.hpp"

#include <linux/if_tun.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "vmm/error.hpp"

namespace ember::virtio {

using namespace net;

namespace {

constexpr auto kWarningInterval = std::chrono::seconds(1);

// TUN_F_* offloads matching what the guest accepted to receive: the kernel may then hand the tap
// frames with partial checksums (GUEST_CSUM) and GSO frames (GUEST_TSO*). The tun driver refuses
// TSO without CSUM and ECN without TSO, mirroring the feature dependencies of §5.1.3.1.
unsigned tap_offload(uint64_t features) {
  if (!(features & kFeatureGuestChecksum)) return 0;
  unsigned flags = TUN_F_CSUM;
  if (features & kFeatureGuestTso4) flags |= TUN_F_TSO4;
  if (features & kFeatureGuestTso6) flags |= TUN_F_TSO6;
  if ((flags & (TUN_F_TSO4 | TUN_F_TSO6)) && (features & kFeatureGuestEcn)) flags |= TUN_F_TSO_ECN;
  return flags;
}

}  // namespace

VirtioNet::VirtioNet(std::unique_ptr<Tap> tap, std::array<uint8_t, 6> mac)
    : tap_(std::move(tap)), mac_(mac), receive_buffer_(kMaxPacketBytes) {
  if (!tap_) throw Error("virtio-net: no tap");
}

VirtioNet::~VirtioNet() {
  std::lock_guard lock(mutex());
  if (loop_) loop_->remove(tap_->fd());
}

uint64_t VirtioNet::features() const {
  return kFeatureVersion1 | kFeatureIndirectDescriptors | kFeatureEventIndex | kFeatureMac |
         kFeatureStatus | kFeatureChecksum | kFeatureGuestChecksum | kFeatureHostTso4 |
         kFeatureHostTso6 | kFeatureHostEcn | kFeatureGuestTso4 | kFeatureGuestTso6 |
         kFeatureGuestEcn | kFeatureMergeableBuffers;
}

void VirtioNet::read_config(uint64_t offset, std::span<uint8_t> data) const {
  std::array<uint8_t, kConfigSize> config{};
  std::copy(mac_.begin(), mac_.end(), config.begin() + kConfigMac);
  config[kConfigStatus] = static_cast<uint8_t>(status_);
  config[kConfigStatus + 1] = static_cast<uint8_t>(status_ >> 8);
  for (size_t index = 0; index < data.size(); ++index) {
    const uint64_t position = offset + index;
    data[index] = position >= offset && position < config.size() ? config[position] : 0;
  }
}

bool VirtioNet::activate(const GuestMemory& memory, std::span<Queue> queues, uint64_t features,
                         Interrupts& interrupts, EventLoop& loop) {
  if (queues.size() < queue_count()) return false;
  if (loop_) reset();  // Activated twice without a reset: start over.
  try {
    tap_->set_offload(tap_offload(features));
  } catch (const Error& error) {
    spdlog::error("virtio-net: {}", error.what());
    return false;
  }
  memory_ = &memory;
  queues_ = queues.first(queue_count());
  interrupts_ = &interrupts;
  mergeable_ = features & kFeatureMergeableBuffers;
  broken_ = false;
  const uint64_t generation = ++generation_;
  try {
    // Edge-triggered: receive() reads until EAGAIN or until the guest runs out of buffers, and
    // then the driver's notification, not the tap, says when to go on.
    loop.add(tap_->fd(), EPOLLIN | EPOLLOUT | EPOLLET,
             [this, generation](uint32_t events) { on_tap_events(events, generation); });
  } catch (const Error& error) {
    spdlog::error("virtio-net: tap {}: {}", tap_->name(), error.what());
    memory_ = nullptr;
    return false;
  }
  loop_ = &loop;
  return true;
}

void VirtioNet::reset() {
  if (loop_) loop_->remove(tap_->fd());
  loop_ = nullptr;
  ++generation_;
  memory_ = nullptr;
  queues_ = {};
  interrupts_ = nullptr;
  mergeable_ = false;
  broken_ = false;
  pending_transmit_.reset();
  transmit_blocked_ = false;
  receive_length_ = 0;
  receive_chains_.clear();
}

void VirtioNet::process_queue(uint16_t queue) {
  if (queue == kReceiveQueue) receive();
  if (queue == kTransmitQueue) transmit();
}

void VirtioNet::set_link(bool up) {
  std::lock_guard lock(mutex());
  const uint16_t status = up ? kStatusLinkUp : 0;
  if (status == status_) return;
  status_ = status;
  if (interrupts_) interrupts_->config_changed();
}

VirtioNet::Counters VirtioNet::counters() {
  std::lock_guard lock(mutex());
  return counters_;
}

void VirtioNet::on_tap_events(uint32_t events, uint64_t generation) {
  std::lock_guard lock(mutex());
  if (generation != generation_ || !memory_) return;  // Reset since the event was queued.
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) receive();
  if (transmit_blocked_ && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
    transmit_blocked_ = false;
    transmit();
  }
}

void VirtioNet::transmit() {
  if (!memory_ || broken_) return;
  Queue& queue = queues_[kTransmitQueue];
  bool used = false;
  for (;;) {
    if (!pending_transmit_) pending_transmit_ = queue.pop();
    if (!pending_transmit_) break;
    if (transmit_chain(*pending_transmit_) == Sent::kBlocked) {
      transmit_blocked_ = true;  // EPOLLOUT on the tap resumes here.
      break;
    }
    queue.push_used(pending_transmit_->head, 0);
    pending_transmit_.reset();
    used = true;
  }
  finish(queue, kTransmitQueue, used);
}

VirtioNet::Sent VirtioNet::transmit_chain(const DescriptorChain& chain) {
  if (chain.writable_bytes != 0) {
    reject(chain, "transmit chain has device-writable buffers");
    return Sent::kDone;
  }
  if (chain.readable_bytes < kHeaderBytes || chain.readable_bytes > kMaxPacketBytes) {
    reject(chain, "transmit chain is not a frame with its header");
    return Sent::kDone;
  }
  iovecs_.clear();
  for (const Descriptor& descriptor : chain.descriptors) {
    auto view = memory_->slice(descriptor.address, descriptor.length);
    if (!view) {  // Queue::pop() validated the chain; this cannot happen.
      reject(chain, "transmit buffer outside guest memory");
      return Sent::kDone;
    }
    iovecs_.push_back({view->data(), view->size()});
  }
  if (iovecs_.size() > IOV_MAX) {
    reject(chain, "transmit chain has too many buffers");
    return Sent::kDone;
  }
  const ssize_t written = tap_->writev(iovecs_);
  if (written == -EAGAIN) return Sent::kBlocked;
  if (written < 0) {
    ++counters_.transmit_errors;
    warn("tap refused a frame: " + std::string(std::strerror(static_cast<int>(-written))));
    return Sent::kDone;
  }
  ++counters_.transmitted_frames;
  counters_.transmitted_bytes += static_cast<uint64_t>(written);
  return Sent::kDone;
}

void VirtioNet::receive() {
  if (!memory_ || broken_) return;
  Queue& queue = queues_[kReceiveQueue];
  bool used = false;
  for (;;) {
    if (receive_length_ == 0) {
      const ssize_t count = tap_->read(receive_buffer_);
      if (count == 0 || count == -EAGAIN) break;  // 0: a stand-in socket's peer closed.
      if (count < 0) {
        warn("reading the tap failed: " + std::string(std::strerror(static_cast<int>(-count))));
        break;
      }
      if (static_cast<size_t>(count) < kHeaderBytes) {
        ++counters_.receive_dropped;
        continue;
      }
      receive_length_ = static_cast<size_t>(count);
    }
    if (!deliver_frame(queue, used)) break;  // No buffers: the driver's next notification resumes.
    receive_length_ = 0;
  }
  finish(queue, kReceiveQueue, used);
}

// Copies the waiting frame into receive chains: one without MRG_RXBUF, as many as it takes with it.
// False when the driver has no more buffers (the frame and the chains popped so far are kept).
bool VirtioNet::deliver_frame(Queue& queue, bool& used) {
  uint64_t capacity = 0;
  for (const DescriptorChain& chain : receive_chains_) capacity += chain.writable_bytes;
  while (receive_chains_.empty() || (mergeable_ && capacity < receive_length_)) {
    auto chain = queue.pop();
    if (!chain) return false;
    if (chain->readable_bytes != 0 || chain->writable_bytes < kHeaderBytes) {
      reject(*chain, "receive chain is not a writable buffer for a header and more");
      queue.push_used(chain->head, 0);
      used = true;
      continue;
    }
    capacity += chain->writable_bytes;
    receive_chains_.push_back(std::move(*chain));
  }
  if (capacity < receive_length_) {
    // A non-mergeable buffer smaller than the frame: the driver sized its buffers for less than
    // it negotiated (§5.1.6.3.1). Drop the frame, keep the buffer for the next one.
    ++counters_.receive_dropped;
    warn("receive buffer of " + std::to_string(capacity) + " bytes too small for a " +
         std::to_string(receive_length_) + "-byte frame");
    return true;
  }

  const auto buffers = static_cast<uint16_t>(receive_chains_.size());
  receive_buffer_[kNumBuffersOffset] = static_cast<std::byte>(buffers & 0xff);
  receive_buffer_[kNumBuffersOffset + 1] = static_cast<std::byte>(buffers >> 8);
  size_t offset = 0;
  for (const DescriptorChain& chain : receive_chains_) {
    const size_t length =
        static_cast<size_t>(std::min<uint64_t>(chain.writable_bytes, receive_length_ - offset));
    const size_t copied =
        chain.write(*memory_, 0, std::span(receive_buffer_).subspan(offset, length));
    queue.push_used(chain.head, static_cast<uint32_t>(copied));
    offset += length;
  }
  receive_chains_.clear();
  used = true;
  ++counters_.received_frames;
  counters_.received_bytes += receive_length_;
  return true;
}

// A chain the guest got wrong: counted and reported; the caller returns it with push_used(head, 0).
void VirtioNet::reject(const DescriptorChain& chain, const char* why) {
  ++counters_.malformed_chains;
  warn(std::string(why) + " (readable " + std::to_string(chain.readable_bytes) + ", writable " +
       std::to_string(chain.writable_bytes) + " bytes); dropped");
}

// After a batch on `queue`: interrupt the driver if it wants one, and stop for good if the guest
// broke the queue.
void VirtioNet::finish(Queue& queue, uint16_t index, bool used) {
  if (used && queue.should_notify()) interrupts_->queue_used(index);
  if (queue.broken() && !broken_) {
    broken_ = true;
    // Rate-limited like the rest: a guest can break the queue, reset and break it again, endlessly.
    warn("queue " + std::to_string(index) + " broken, device needs reset: " + queue.error());
    interrupts_->config_changed();
  }
}

// Guest-caused trouble is logged at most once a second, with a count of what was left out.
void VirtioNet::warn(const std::string& message) {
  const auto now = std::chrono::steady_clock::now();
  if (last_warning_.time_since_epoch().count() != 0 && now - last_warning_ < kWarningInterval) {
    ++suppressed_warnings_;
    return;
  }
  if (suppressed_warnings_ > 0) {
    spdlog::warn("virtio-net {}: {} ({} similar warnings suppressed)", tap_->name(), message,
                 suppressed_warnings_);
  } else {
    spdlog::warn("virtio-net {}: {}", tap_->name(), message);
  }
  last_warning_ = now;
  suppressed_warnings_ = 0;
}

}  // namespace ember::virtio
