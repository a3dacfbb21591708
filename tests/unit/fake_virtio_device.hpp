// A virtio::Device for the transport tests: records every call the transport makes and counts
// the calls made without the device mutex held (which must stay 0).
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <span>
#include <stdexcept>
#include <thread>
#include <vector>

#include "devices/virtio/device.hpp"

namespace ember::virtio::test {

inline constexpr uint64_t kDeviceOwnFeature = 1ull << 0;
inline constexpr uint16_t kQueueCount = 2;
inline constexpr uint16_t kQueueMaxSize = 16;

// Whether another thread finds the mutex taken (try_lock from the owning thread would be UB).
inline bool held_elsewhere(std::mutex& mutex) {
  bool held = false;
  std::thread([&] {
    if (mutex.try_lock()) {
      mutex.unlock();
    } else {
      held = true;
    }
  }).join();
  return held;
}

// Records every call the transport makes and checks the device mutex is held for each.
class FakeDevice : public Device {
 public:
  explicit FakeDevice(DeviceType type = DeviceType::kEntropy) : type_(type) {}
  DeviceType type() const override { return type_; }
  uint64_t features() const override {
    return kDeviceOwnFeature | kFeatureEventIndex | kFeatureIndirectDescriptors;
  }
  uint16_t queue_count() const override { return kQueueCount; }
  uint16_t queue_max_size() const override { return kQueueMaxSize; }

  void read_config(uint64_t offset, std::span<uint8_t> data) const override {
    unlocked_calls += held_elsewhere(const_cast<FakeDevice*>(this)->mutex()) ? 0 : 1;
    for (size_t i = 0; i < data.size(); ++i) {
      data[i] = offset + i < config.size() ? config[offset + i] : 0;
    }
  }
  void write_config(uint64_t offset, std::span<const uint8_t> data) override {
    unlocked_calls += held_elsewhere(mutex()) ? 0 : 1;
    for (size_t i = 0; i < data.size() && offset + i < config.size(); ++i) {
      config[offset + i] = data[i];
    }
  }

  bool activate(const GuestMemory& /*memory*/, std::span<Queue> queues, uint64_t features,
                Interrupts& interrupts, EventLoop& /*loop*/) override {
    unlocked_calls += held_elsewhere(mutex()) ? 0 : 1;
    ++activations;
    activated_features = features;
    activated_queues.clear();
    for (const Queue& queue : queues) activated_queues.push_back(queue.active());
    interrupts_ = &interrupts;
    if (throw_on_activate) throw std::runtime_error("backend gone");
    return accept_activation;
  }
  void process_queue(uint16_t queue) override {
    unlocked_calls += held_elsewhere(mutex()) ? 0 : 1;
    if (throw_on_process) throw std::runtime_error("disk on fire");
    processed.push_back(queue);
  }
  void reset() override {
    unlocked_calls += held_elsewhere(mutex()) ? 0 : 1;
    ++resets;
    interrupts_ = nullptr;
  }

  Interrupts* interrupts() { return interrupts_; }

  std::array<uint8_t, 8> config{1, 2, 3, 4, 5, 6, 7, 8};
  bool accept_activation = true;
  bool throw_on_activate = false;
  bool throw_on_process = false;
  int activations = 0;
  int resets = 0;
  uint64_t activated_features = 0;
  std::vector<bool> activated_queues;
  std::vector<uint16_t> processed;
  mutable int unlocked_calls = 0;

 private:
  DeviceType type_;
  Interrupts* interrupts_ = nullptr;
};

}  // namespace ember::virtio::test
