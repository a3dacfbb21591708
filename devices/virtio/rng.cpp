#include "devices/virtio/rng.hpp"

#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ember::virtio {

using namespace rng;

namespace {
constexpr auto kWarningInterval = std::chrono::seconds(1);
#ifdef GRND_INSECURE
constexpr unsigned kFallbackFlags = GRND_INSECURE;  // Linux 5.6: never blocks, even at early boot.
#else
constexpr unsigned kFallbackFlags = 0;
#endif
}  // namespace

VirtioRng::VirtioRng() : buffer_(kMaxRequestBytes) {}

uint64_t VirtioRng::features() const {
  return kFeatureVersion1 | kFeatureIndirectDescriptors | kFeatureEventIndex;
}

void VirtioRng::read_config(uint64_t /*offset*/, std::span<uint8_t> data) const {
  std::fill(data.begin(), data.end(), uint8_t{0});  // §5.4.4: no configuration.
}

bool VirtioRng::activate(const GuestMemory& memory, std::span<Queue> queues, uint64_t /*features*/,
                         Interrupts& interrupts, EventLoop& /*loop*/) {
  if (queues.empty()) return false;
  memory_ = &memory;
  queue_ = &queues[kRequestQueue];
  interrupts_ = &interrupts;
  broken_ = false;
  return true;
}

void VirtioRng::reset() {
  memory_ = nullptr;
  queue_ = nullptr;
  interrupts_ = nullptr;
  broken_ = false;
}

void VirtioRng::process_queue(uint16_t queue) {
  if (queue != kRequestQueue || !memory_ || broken_) return;
  bool used = false;
  while (auto chain = queue_->pop()) {
    used = true;
    if (chain->readable_bytes != 0 || chain->writable_bytes == 0) {
      warn("request chain is not one writable buffer (readable " +
           std::to_string(chain->readable_bytes) + ", writable " +
           std::to_string(chain->writable_bytes) + " bytes); dropped");
      queue_->push_used(chain->head, 0);
      continue;
    }
    const auto want = static_cast<size_t>(std::min(chain->writable_bytes, kMaxRequestBytes));
    const size_t filled = fill(std::span(buffer_).first(want));
    const size_t written = chain->write(*memory_, 0, std::span(buffer_).first(filled));
    queue_->push_used(chain->head, static_cast<uint32_t>(written));
  }
  if (used && queue_->should_notify()) interrupts_->queue_used(kRequestQueue);
  if (queue_->broken() && !broken_) {
    broken_ = true;
    // Rate-limited like the rest: a guest can break the queue, reset and break it again, endlessly.
    warn("request queue broken, device needs reset: " + queue_->error());
    interrupts_->config_changed();
  }
}

// Random bytes without blocking: the kernel's pool when it is ready, else (before the pool is
// initialised, early in the host's boot) GRND_INSECURE where the kernel has it. Returns how many
// bytes were filled; possibly fewer than asked, which virtio-rng allows.
size_t VirtioRng::fill(std::span<std::byte> buffer) {
  size_t filled = 0;
  unsigned flags = GRND_NONBLOCK;
  while (filled < buffer.size()) {
    const ssize_t count = ::getrandom(buffer.data() + filled, buffer.size() - filled, flags);
    if (count > 0) {
      filled += static_cast<size_t>(count);
    } else if (count < 0 && errno == EINTR) {
      continue;
    } else if (count < 0 && errno == EAGAIN && flags == GRND_NONBLOCK && kFallbackFlags != 0) {
      flags = kFallbackFlags;
    } else {
      if (count < 0) warn(std::string("getrandom failed: ") + std::strerror(errno));
      break;
    }
  }
  return filled;
}

// Guest-caused trouble is logged at most once a second, with a count of what was left out.
void VirtioRng::warn(const std::string& message) {
  const auto now = std::chrono::steady_clock::now();
  if (last_warning_.time_since_epoch().count() != 0 && now - last_warning_ < kWarningInterval) {
    ++suppressed_warnings_;
    return;
  }
  if (suppressed_warnings_ > 0) {
    spdlog::warn("virtio-rng: {} ({} similar warnings suppressed)", message, suppressed_warnings_);
  } else {
    spdlog::warn("virtio-rng: {}", message);
  }
  last_warning_ = now;
  suppressed_warnings_ = 0;
}

}  // namespace ember::virtio
