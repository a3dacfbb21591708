#include "devices/virtio/console.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "vmm/error.hpp"

namespace ember::virtio {

using namespace console;

namespace {
constexpr size_t kTransmitChunkBytes = 16 * 1024;  // Host buffer output goes through.
constexpr auto kWarningInterval = std::chrono::seconds(1);
}  // namespace

VirtioConsole::VirtioConsole(Output output)
    : output_(std::move(output)), transmit_buffer_(kTransmitChunkBytes) {
  if (!output_) throw Error("virtio-console: no output");
}

uint64_t VirtioConsole::features() const {
  return kFeatureVersion1 | kFeatureIndirectDescriptors | kFeatureEventIndex;
}

void VirtioConsole::read_config(uint64_t /*offset*/, std::span<uint8_t> data) const {
  std::fill(data.begin(), data.end(), uint8_t{0});
}

bool VirtioConsole::activate(const GuestMemory& memory, std::span<Queue> queues,
                             uint64_t /*features*/, Interrupts& interrupts, EventLoop& /*loop*/) {
  if (queues.size() < queue_count()) return false;
  memory_ = &memory;
  queues_ = queues.first(queue_count());
  interrupts_ = &interrupts;
  broken_ = false;
  return true;
}

void VirtioConsole::reset() {
  memory_ = nullptr;
  queues_ = {};
  interrupts_ = nullptr;
  broken_ = false;
}

void VirtioConsole::process_queue(uint16_t queue) {
  // New receive buffers wait for the next enqueue_input(); only output needs work here.
  if (queue == kTransmitQueue) transmit();
}

void VirtioConsole::transmit() {
  if (!memory_ || broken_) return;
  Queue& queue = queues_[kTransmitQueue];
  bool used = false;
  while (auto chain = queue.pop()) {
    used = true;
    if (chain->writable_bytes != 0 || chain->readable_bytes == 0) {
      drop_chain(queue, *chain, "transmit chain is not one readable buffer");
      continue;
    }
    if (chain->readable_bytes > kMaxTransmitChainBytes) {
      drop_chain(queue, *chain, "transmit chain too large");
      continue;
    }
    for (uint64_t offset = 0; offset < chain->readable_bytes;) {
      const size_t length = chain->read(*memory_, offset, transmit_buffer_);
      if (length == 0) break;
      output_(std::span(reinterpret_cast<const uint8_t*>(transmit_buffer_.data()), length));
      offset += length;
    }
    queue.push_used(chain->head, 0);
  }
  finish(queue, kTransmitQueue, used);
}

size_t VirtioConsole::enqueue_input(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mutex());
  if (!memory_ || broken_ || bytes.empty()) return 0;
  Queue& queue = queues_[kReceiveQueue];
  bool used = false;
  size_t taken = 0;
  while (taken < bytes.size()) {
    auto chain = queue.pop();
    if (!chain) break;
    used = true;
    if (chain->readable_bytes != 0 || chain->writable_bytes == 0) {
      drop_chain(queue, *chain, "receive chain is not one writable buffer");
      continue;
    }
    const size_t length =
        static_cast<size_t>(std::min<uint64_t>(chain->writable_bytes, bytes.size() - taken));
    const size_t copied = chain->write(*memory_, 0, std::as_bytes(bytes.subspan(taken, length)));
    queue.push_used(chain->head, static_cast<uint32_t>(copied));
    taken += copied;
  }
  finish(queue, kReceiveQueue, used);
  return taken;
}

void VirtioConsole::drop_chain(Queue& queue, const DescriptorChain& chain, const char* why) {
  warn(std::string(why) + " (readable " + std::to_string(chain.readable_bytes) + ", writable " +
       std::to_string(chain.writable_bytes) + " bytes); dropped");
  queue.push_used(chain.head, 0);
}

// After a batch on `queue`: interrupt the driver if it wants one, and stop for good if the guest
// broke the queue.
void VirtioConsole::finish(Queue& queue, uint16_t index, bool used) {
  if (used && queue.should_notify()) interrupts_->queue_used(index);
  if (queue.broken() && !broken_) {
    broken_ = true;
    // Rate-limited like the rest: a guest can break the queue, reset and break it again, endlessly.
    warn("queue " + std::to_string(index) + " broken, device needs reset: " + queue.error());
    interrupts_->config_changed();
  }
}

// Guest-caused trouble is logged at most once a second, with a count of what was left out.
void VirtioConsole::warn(const std::string& message) {
  const auto now = std::chrono::steady_clock::now();
  if (last_warning_.time_since_epoch().count() != 0 && now - last_warning_ < kWarningInterval) {
    ++suppressed_warnings_;
    return;
  }
  if (suppressed_warnings_ > 0) {
    spdlog::warn("virtio-console: {} ({} similar warnings suppressed)", message,
                 suppressed_warnings_);
  } else {
    spdlog::warn("virtio-console: {}", message);
  }
  last_warning_ = now;
  suppressed_warnings_ = 0;
}

}  // namespace ember::virtio
