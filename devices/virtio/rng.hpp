// virtio-rng, the entropy device (virtio 1.2 §5.4): one request queue whose chains the device fills
// with random bytes from getrandom(), without ever blocking the I/O thread.
//
// Each chain's writable bytes, up to kMaxRequestBytes, are filled and returned with that length.
// Hostile guests: a chain with readable buffers or no writable bytes is returned with
// push_used(head, 0) and a rate-limited warning. A broken queue stops the device: needs_reset()
// turns true, a configuration-change interrupt is raised, and nothing is processed until reset();
// the transport should then report DEVICE_NEEDS_RESET.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "devices/virtio/device.hpp"

namespace ember::virtio {

namespace rng {
inline constexpr uint16_t kRequestQueue = 0;
// Larger requests get this much; the driver asks again for more.
inline constexpr uint64_t kMaxRequestBytes = 64 * 1024;
}  // namespace rng

class VirtioRng final : public Device {
 public:
  VirtioRng();

  DeviceType type() const override { return DeviceType::kEntropy; }
  uint64_t features() const override;
  uint16_t queue_count() const override { return 1; }
  void read_config(uint64_t offset, std::span<uint8_t> data) const override;
  bool activate(const GuestMemory& memory, std::span<Queue> queues, uint64_t features,
                Interrupts& interrupts, EventLoop& loop) override;
  void process_queue(uint16_t queue) override;
  void reset() override;

  // The guest broke the queue: nothing more is processed until reset() (§2.1.2).
  bool needs_reset() const override { return broken_.load(std::memory_order_relaxed); }

 private:
  size_t fill(std::span<std::byte> buffer);
  void warn(const std::string& message);

  // Guarded by mutex().
  const GuestMemory* memory_ = nullptr;  // Non-null while active.
  Queue* queue_ = nullptr;
  Interrupts* interrupts_ = nullptr;
  std::atomic<bool> broken_{false};
  std::vector<std::byte> buffer_;
  std::chrono::steady_clock::time_point last_warning_{};
  uint64_t suppressed_warnings_ = 0;
};

}  // namespace ember::virtio
