/* Real-mode start-up code for the application processors.
 * Copied to TRAMPOLINE_BASE by smp.cpp; the SIPI vector is TRAMPOLINE_BASE >> 12, so an AP starts here
 * with CS = TRAMPOLINE_BASE >> 4, IP = 0. It loads the guest's GDT, enters 32-bit protected mode and
 * jumps to ap_start32 in the image (entry.S), which continues to long mode like the BSP did. */
#include "layout.h"

    .section .rodata.trampoline, "a"
    .code16
    .globl ap_trampoline_start
ap_trampoline_start:
    cli
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (trampoline_gdt_pointer - ap_trampoline_start)
    movl %cr0, %eax
    orl $CR0_PE, %eax
    movl %eax, %cr0
    ljmpl $GDT_CODE32, $ap_start32

    .balign 8
trampoline_gdt_pointer:
    .word GDT_SIZE - 1
    .long gdt
    .globl ap_trampoline_end
ap_trampoline_end:

    .section .note.GNU-stack, "", @progbits
