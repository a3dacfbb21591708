#include "devices/legacy/pvpanic.hpp"

#include <spdlog/spdlog.h>

#include <utility>

#include "devices/legacy/byte_register.hpp"
#include "vmm/error.hpp"

namespace ember {

using namespace pvpanic;

Pvpanic::Pvpanic(StopHandler stop) : stop_(std::move(stop)) {
  if (!stop_) throw Error("pvpanic: no stop handler");
}

void Pvpanic::read(uint64_t offset, std::span<uint8_t> data) {
  if (offset != 0) {
    fill_unassigned_read(data);
    return;
  }
  fill_byte_read(data, kSupportedEvents);
}

void Pvpanic::write(uint64_t offset, std::span<const uint8_t> data) {
  const auto events = written_byte(data);
  if (offset != 0 || !events) return;
  if (*events & kCrashLoaded) {
    spdlog::info("pvpanic: guest crashed and is starting its crash kernel");
  }
  if (*events & kPanicked) {
    spdlog::info("pvpanic: guest panicked");
    stop_(StopReason::kGuestPanic);
  }
}

}  // namespace ember
