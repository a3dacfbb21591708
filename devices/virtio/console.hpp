// virtio-console (virtio 1.2 §5.3) with a single port 0: receiveq (0, host to guest) and transmitq
// (1, guest to host). No F_SIZE, MULTIPORT or EMERG_WRITE, so the configuration space is unused.
//
// Output: on a transmitq notification (I/O thread) the readable bytes of each chain go to `output`,
// chain by chain, in ring order. `output` runs with mutex() held and should not block for long.
//
// Input is pushed, as with the UART: the machine's I/O loop reads its input fd and calls
// enqueue_input(), which copies what fits into the receive buffers the driver made available and
// returns how many bytes it took; the caller keeps the rest and offers it again later (for example
// from the loop's idle callback). The device itself watches no fd.
//
// Hostile guests: chains in the wrong direction, empty or larger than kMaxTransmitChainBytes are
// returned with push_used(head, 0) and a rate-limited warning. A broken queue stops the device:
// needs_reset() turns true, a configuration-change interrupt is raised, and nothing is processed
// until reset(); the transport should then report DEVICE_NEEDS_RESET.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "devices/virtio/device.hpp"

namespace ember::virtio {

namespace console {
inline constexpr uint16_t kReceiveQueue = 0;   // receiveq, port 0
inline constexpr uint16_t kTransmitQueue = 1;  // transmitq, port 0
// Config (§5.3.4): cols, rows, max_nr_ports, emerg_wr; all unused without the features.
inline constexpr uint64_t kConfigSize = 12;
// A larger transmit chain is not console output but a guest misbehaving.
inline constexpr uint64_t kMaxTransmitChainBytes = 1ull << 20;
}  // namespace console

class VirtioConsole final : public Device {
 public:
  using Output = std::function<void(std::span<const uint8_t>)>;

  // Throws Error if output is empty.
  explicit VirtioConsole(Output output);

  DeviceType type() const override { return DeviceType::kConsole; }
  uint64_t features() const override;
  uint16_t queue_count() const override { return 2; }
  void read_config(uint64_t offset, std::span<uint8_t> data) const override;
  bool activate(const GuestMemory& memory, std::span<Queue> queues, uint64_t features,
                Interrupts& interrupts, EventLoop& loop) override;
  void process_queue(uint16_t queue) override;
  void reset() override;

  // Host input for the guest: copies a prefix of `bytes` into available receive buffers and
  // returns its length (0 before activation, after a broken queue, or with no buffers). Takes
  // mutex(): call it without holding it.
  size_t enqueue_input(std::span<const uint8_t> bytes);

  // The guest broke a queue: nothing more is processed until reset() (§2.1.2 DEVICE_NEEDS_RESET).
  bool needs_reset() const override { return broken_.load(std::memory_order_relaxed); }

 private:
  void transmit();
  void drop_chain(Queue& queue, const DescriptorChain& chain, const char* why);
  void finish(Queue& queue, uint16_t index, bool used);
  void warn(const std::string& message);

  const Output output_;

  // Guarded by mutex().
  const GuestMemory* memory_ = nullptr;  // Non-null while active.
  std::span<Queue> queues_;
  Interrupts* interrupts_ = nullptr;
  std::atomic<bool> broken_{false};
  std::vector<std::byte> transmit_buffer_;
  std::chrono::steady_clock::time_point last_warning_{};
  uint64_t suppressed_warnings_ = 0;
};

}  // namespace ember::virtio
