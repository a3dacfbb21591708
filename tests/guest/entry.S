/* Entry points, GDT and identity page tables of the ember test guest.
 *
 * Image offset 0 (0x100000): 32-bit Linux boot protocol entry (bzImage code32_start), ESI = boot_params.
 * Image offset 0x200 (0x100200): 64-bit Linux boot protocol entry (ELF e_entry, bzImage 64-bit entry),
 *   RSI = boot_params, identity-mapped low memory, flat 64-bit CS.
 * pvh_start32: PVH entry (XEN_ELFNOTE_PHYS32_ENTRY), 32-bit protected mode, paging off,
 *   EBX = hvm_start_info.
 * ap_start32: where the AP trampoline lands in 32-bit protected mode.
 * All of them reach common64 in long mode, on our GDT and page tables, and call kernel_entry(kind, info).
 * This runs at CPL0, which the development hosts emulate slowly: keep it short. */
#include "layout.h"

    .section .text.head, "ax"
    .code32
    .globl startup_32
startup_32:
    cli
    movl $ENTRY_LINUX32, %edi
    jmp common32

    .globl pvh_start32
pvh_start32:
    cli
    movl %ebx, %esi
    movl $ENTRY_PVH, %edi
    jmp common32

    .globl ap_start32
ap_start32:
    movl $GDT_DATA, %eax    /* DS still has the real-mode base: reload before lgdt reads memory */
    movl %eax, %ds
    movl $ENTRY_AP, %edi
    xorl %esi, %esi

/* 32-bit protected mode, paging off -> long mode. EDI = entry kind, ESI = boot info. No stack used. */
common32:
    lgdt gdt_pointer
    ljmp $GDT_CODE32, $1f
1:  movl $GDT_DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    movl $CR4_PAE, %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl $(CR0_PG | CR0_NE | CR0_ET | CR0_PE), %eax
    movl %eax, %cr0
    ljmp $GDT_CODE64, $common64

    .org 0x200
    .code64
    .globl startup_64
startup_64:
    cli
    movl $ENTRY_LINUX64, %edi

/* Long mode on someone's tables -> ours. EDI = entry kind, ESI = boot info (both below 4 GiB). */
common64:
    movl %edi, %edi
    movl %esi, %esi
    cmpl $ENTRY_AP, %edi    /* a stack first: the far return below needs one */
    je 1f
    leaq bsp_kernel_stack_top(%rip), %rsp
    jmp 2f
1:  movq ap_boot_kernel_stack(%rip), %rsp
2:  lgdt gdt_pointer(%rip)
    movl $GDT_DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    pushq $GDT_CODE64
    leaq 3f(%rip), %rax
    pushq %rax
    lretq
3:  movl $CR4_PAE, %eax /* also clears SMEP/SMAP/TSD a loader may have set */
    movq %rax, %cr4
    leaq boot_pml4(%rip), %rax
    movq %rax, %cr3
    call kernel_entry
4:  hlt
    jmp 4b

    .section .data
    .balign 16
    .globl gdt
gdt:
    .quad 0                     /* null */
    .quad 0x00cf9a000000ffff    /* 0x08 code, 32-bit, DPL0 */
    .quad 0x00af9a000000ffff    /* 0x10 code, 64-bit, DPL0 */
    .quad 0x00cf92000000ffff    /* 0x18 data, DPL0 */
    .quad 0x00cff2000000ffff    /* 0x20 data, DPL3 */
    .quad 0x00affa000000ffff    /* 0x28 code, 64-bit, DPL3 */
    .fill 2 * MAX_CPUS, 8, 0    /* 0x30: 64-bit TSS descriptors, written by cpu.cpp */
gdt_end:
    .balign 8
    .globl gdt_pointer
gdt_pointer:
    .word gdt_end - gdt - 1
    .quad gdt

/* Identity map of the first 4 GiB with 2 MiB pages, user-accessible (all checks run at CPL3).
 * Built by the assembler so the CPL0 setup writes no page tables. */
#define PDE_FLAGS (PTE_PRESENT | PTE_WRITE | PTE_USER | PTE_LARGE)
    .balign 4096
    .globl boot_pml4
boot_pml4:
    .quad boot_pdpt + (PTE_PRESENT | PTE_WRITE | PTE_USER)
    .fill 511, 8, 0
boot_pdpt:
    .quad boot_pd + 0x0000 + (PTE_PRESENT | PTE_WRITE | PTE_USER)
    .quad boot_pd + 0x1000 + (PTE_PRESENT | PTE_WRITE | PTE_USER)
    .quad boot_pd + 0x2000 + (PTE_PRESENT | PTE_WRITE | PTE_USER)
    .quad boot_pd + 0x3000 + (PTE_PRESENT | PTE_WRITE | PTE_USER)
    .fill 508, 8, 0
boot_pd:
    .set page_address, 0
    .rept 2048
    .if page_address >= UNCACHED_FROM
    .quad page_address + (PDE_FLAGS | PTE_PCD | PTE_PWT)
    .else
    .quad page_address + PDE_FLAGS
    .endif
    .set page_address, page_address + 0x200000
    .endr

    .section .bss.noclear.bsp_stack, "aw", @nobits
    .balign 16
    .space BSP_KERNEL_STACK_SIZE
    .globl bsp_kernel_stack_top
bsp_kernel_stack_top:

    .section .note.GNU-stack, "", @progbits
