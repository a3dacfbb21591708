// Starting the application processors: INIT, SIPI, SIPI (Intel SDM vol. 3A, 9.4.4.1) with the
// real-mode trampoline (trampoline.S) at TRAMPOLINE_BASE.
#pragma once

#include "bootinfo.hpp"

namespace guest {

// Starts every enabled CPU of the MADT except the BSP, one at a time, and emits the smp check.
// Returns the number of CPUs that reported in, the BSP included.
uint32_t start_application_processors(const BootInfo& boot, uint32_t bsp_apic_id);

// Runs `work` at CPL3 on AP `cpu` (1, 2, ...; started before and parked since): INIT and SIPI start it again,
// it reports in, runs the work and parks. False if the CPU was never started or does not report in.
// ap_work_done() says when the work has returned.
using ApWork = void (*)(void* argument);
bool run_on_ap(uint32_t cpu, ApWork work, void* argument);
bool ap_work_done(uint32_t cpu);

}  // namespace guest
