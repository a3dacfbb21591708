// The hardware-reduced ACPI registers ember's FADT points at, 3 bytes at layout::kAcpiPmPort:
// sleep control (FADT SLEEP_CONTROL_REG), sleep status (SLEEP_STATUS_REG) and reset (RESET_REG).
// Only S5 is supported: Linux powers off by writing SLP_TYP=\_S5 with SLP_EN, and reboots through
// the reset register.
#pragma once

#include <cstdint>
#include <mutex>
#include <span>

#include "boot/layout.hpp"
#include "devices/bus_device.hpp"
#include "devices/stop_reason.hpp"

namespace ember {

namespace acpi_pm {

inline constexpr uint64_t kRegisterCount = 3;
// Offsets from layout::kAcpiPmPort.
inline constexpr uint64_t kSleepControlOffset = layout::kAcpiSleepControlPort - layout::kAcpiPmPort;
inline constexpr uint64_t kSleepStatusOffset = layout::kAcpiSleepStatusPort - layout::kAcpiPmPort;
inline constexpr uint64_t kResetOffset = layout::kAcpiResetPort - layout::kAcpiPmPort;

// Sleep control register (ACPI 6.4 §4.8.3.7).
inline constexpr uint8_t kSleepTypeShift = 2;
inline constexpr uint8_t kSleepTypeMask = 0x1c;  // SLP_TYP, bits 4:2.
inline constexpr uint8_t kSleepEnable = 0x20;    // SLP_EN, bit 5 (write-only).

// Sleep status register (ACPI 6.4 §4.8.3.7).
inline constexpr uint8_t kWakeStatus = 0x80;  // WAK_STS, bit 7, write 1 to clear.

}  // namespace acpi_pm

class AcpiPm : public BusDevice {
 public:
  // stop: receives StopReason::kPowerOff for an S5 request and kReset for the reset value. Throws
  // Error if empty.
  explicit AcpiPm(StopHandler stop);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  // Runs with mutex_ held; returns true when the guest asked for S5.
  bool write_sleep_control(uint8_t value);

  const StopHandler stop_;

  std::mutex mutex_;
  uint8_t sleep_type_ = 0;          // SLP_TYP as last written (readable; SLP_EN reads 0).
  bool wake_status_ = false;        // Never set: nothing wakes a sleeping ember guest.
  bool warned_sleep_type_ = false;  // Unsupported sleep states are logged once.
};

}  // namespace ember
