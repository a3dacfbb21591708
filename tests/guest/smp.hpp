// Starting the application processors: INIT, SIPI, SIPI (Intel SDM vol. 3A, 9.4.4.1) with the
// real-mode trampoline (trampoline.S) at TRAMPOLINE_BASE.
#pragma once

#include "bootinfo.hpp"

namespace guest {

// Starts every enabled CPU of the MADT except the BSP, one at a time, and emits the smp check.
// Returns the number of CPUs that reported in, the BSP included.
uint32_t start_application_processors(const BootInfo& boot, uint32_t bsp_apic_id);

}  // namespace guest
