// Leaving the guest: ACPI S5 (ACPI 6.5, 7.4.2 and 4.8.3.7) or a pvpanic report.
#pragma once

namespace guest {

// Enters S5 through the FADT's sleep control register (hardware-reduced) or PM1a/PM1b control.
// Prints `poweroff failed` and halts forever if the machine is still running afterwards.
[[noreturn]] void power_off();
// Same, used from the exception handler (at CPL0).
[[noreturn]] void power_off_after_failure();
// Asks the machine to reset, by `method`: "acpi" (the FADT reset register) or "i8042" (pulse the
// reset line through the keyboard controller, as Linux's reboot=k). Halts forever if still running.
[[noreturn]] void reset_machine(const char* method);
// Writes "panicked" to the pvpanic port and halts forever.
[[noreturn]] void report_panic();

}  // namespace guest
