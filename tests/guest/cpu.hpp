// Per-CPU descriptor tables and the CPL0 -> CPL3 hand-off (runs at CPL0: keep it small).
#pragma once

#include <stdint.h>

#include "layout.h"

namespace guest {

// Saved by exception_common (traps.S), lowest address first.
struct ExceptionFrame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error_code;
    uint64_t rip, cs, rflags, rsp, ss;
};

// Kernel and user stacks of application processor `cpu` (1..MAX_CPUS-1).
uint64_t ap_kernel_stack_top(uint32_t cpu);

}  // namespace guest

extern "C" {
// Set by the BSP before it starts an AP; read by that AP's CPL0 entry.
extern volatile uint64_t ap_boot_kernel_stack;
extern volatile uint32_t ap_boot_cpu;

[[noreturn]] void kernel_entry(uint64_t entry_kind, uint64_t boot_info);
[[noreturn]] void exception_handler(guest::ExceptionFrame* frame);

// CPL3 entry points (main.cpp, smp.cpp).
[[noreturn]] void user_main(uint64_t entry_kind, uint64_t boot_info);
[[noreturn]] void ap_user_main(uint64_t cpu, uint64_t unused);
}
