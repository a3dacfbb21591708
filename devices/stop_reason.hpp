// Why a guest asks the machine to stop, reported by devices (ACPI sleep/reset registers, i8042,
// pvpanic) through a StopHandler. The machine decides what each means for ember's exit status.
#pragma once

#include <functional>

namespace ember {

enum class StopReason {
  kPowerOff,    // ACPI S5 or equivalent.
  kReset,       // Reboot request: ACPI reset register, i8042 pulse, triple fault.
  kGuestPanic,  // pvpanic "panicked" event.
};

using StopHandler = std::function<void(StopReason)>;

}  // namespace ember
