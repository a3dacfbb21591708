#include "devices/legacy/acpi_pm.hpp"

#include <spdlog/spdlog.h>

#include <optional>
#include <utility>

#include "devices/legacy/byte_register.hpp"
#include "vmm/error.hpp"

namespace ember {

using namespace acpi_pm;

AcpiPm::AcpiPm(StopHandler stop) : stop_(std::move(stop)) {
  if (!stop_) throw Error("acpi pm: no stop handler");
}

void AcpiPm::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  switch (offset) {
    case kSleepControlOffset:
      fill_byte_read(data, static_cast<uint8_t>(sleep_type_ << kSleepTypeShift));
      break;
    case kSleepStatusOffset:
      fill_byte_read(data, wake_status_ ? kWakeStatus : 0);
      break;
    case kResetOffset:
      fill_byte_read(data, 0);  // Write-only.
      break;
    default:
      fill_unassigned_read(data);
      break;
  }
}

void AcpiPm::write(uint64_t offset, std::span<const uint8_t> data) {
  const auto value = written_byte(data);
  if (!value) return;
  std::optional<StopReason> stop;
  {
    std::lock_guard lock(mutex_);
    switch (offset) {
      case kSleepControlOffset:
        if (write_sleep_control(*value)) stop = StopReason::kPowerOff;
        break;
      case kSleepStatusOffset:
        if (*value & kWakeStatus) wake_status_ = false;
        break;
      case kResetOffset:
        // The FADT's RESET_VALUE; other values are not a reset request.
        if (*value == layout::kAcpiResetValue) stop = StopReason::kReset;
        break;
      default:
        break;
    }
  }
  // Outside the lock: the machine may stop vCPUs, one of which could be waiting for this lock.
  if (stop) {
    spdlog::info("acpi: guest requested {}",
                 *stop == StopReason::kPowerOff ? "power off" : "reset");
    stop_(*stop);
  }
}

bool AcpiPm::write_sleep_control(uint8_t value) {
  sleep_type_ = static_cast<uint8_t>((value & kSleepTypeMask) >> kSleepTypeShift);
  if (!(value & kSleepEnable)) return false;
  if (sleep_type_ == layout::kAcpiS5SleepType) return true;
  if (!warned_sleep_type_) {
    warned_sleep_type_ = true;
    spdlog::warn("acpi: guest asked for unsupported sleep type {}; ignoring", sleep_type_);
  }
  return false;
}

}  // namespace ember
