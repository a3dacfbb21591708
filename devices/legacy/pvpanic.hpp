// QEMU's pvpanic I/O port device (docs/specs/pvpanic.rst), one byte at layout::kPvpanicPort.
// Linux's pvpanic driver reads the supported events and writes the ones that happen: "panicked"
// stops the machine with StopReason::kGuestPanic; "crash kernel loaded" is only logged, since the
// guest goes on into its kdump kernel.
#pragma once

#include <cstdint>
#include <span>

#include "devices/bus_device.hpp"
#include "devices/stop_reason.hpp"

namespace ember {

namespace pvpanic {

inline constexpr uint64_t kRegisterCount = 1;
// Event bits (pvpanic.rst, "ISA Interface"; Linux include/uapi/misc/pvpanic.h).
inline constexpr uint8_t kPanicked = 0x01;     // PVPANIC_PANICKED.
inline constexpr uint8_t kCrashLoaded = 0x02;  // PVPANIC_CRASH_LOADED.
inline constexpr uint8_t kSupportedEvents = kPanicked | kCrashLoaded;

}  // namespace pvpanic

class Pvpanic : public BusDevice {
 public:
  // stop: receives StopReason::kGuestPanic for each "panicked" event. Throws Error if empty.
  explicit Pvpanic(StopHandler stop);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  // No state to protect: the device only forwards events.
  const StopHandler stop_;
};

}  // namespace ember
