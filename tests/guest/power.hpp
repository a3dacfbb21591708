// Leaving the guest: ACPI S5 (ACPI 6.5, 7.4.2 and 4.8.3.7) or a pvpanic report.
#pragma once

namespace guest {

// Enters S5 through the FADT's sleep control register (hardware-reduced) or PM1a/PM1b control.
// Prints `poweroff failed` and halts forever if the machine is still running afterwards.
[[noreturn]] void power_off();
// Same, used from the exception handler (at CPL0).
[[noreturn]] void power_off_after_failure();
// Writes "panicked" to the pvpanic port and halts forever.
[[noreturn]] void report_panic();

}  // namespace guest
