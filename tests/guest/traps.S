/* CPL0 trap and interrupt entry points. They run in the (slow) CPL0 emulator on the development
 * hosts, so each one is a handful of instructions: count, EOI, iretq.
 *   exception_stubs: 32 stubs, 16 bytes apart, pushing (error code,) vector -> exception_handler (C++)
 *   io_trap:         int3 gate (DPL3): port I/O on behalf of CPL3 code
 *   irq_timer, irq_uart, irq_spurious: device interrupts
 *   irq_virtio_stubs: counting stubs for the virtio drivers' MSI-X / IOAPIC vectors
 *   enter_user:      iretq to CPL3 */
#include "layout.h"

    .text
    .balign 16
    .globl exception_stubs
exception_stubs:
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    /* Vectors with an error code: #DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP, #VC, #SX (SDM vol. 3A, 6.15). */
    .if (\vector == 8) || ((\vector >= 10) && (\vector <= 14)) || (\vector == 17) || (\vector == 21) || (\vector == 29) || (\vector == 30)
    .else
    pushq $0
    .endif
    pushq $\vector
    jmp exception_common
    .endr

exception_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    andq $-16, %rsp
    cld
    call exception_handler
1:  cli
    hlt
    jmp 1b

/* int3 from CPL3: RDI = IO_OP_*, RSI = port, RDX = value; result in RAX. Clobbers RAX, RDX. */
    .globl io_trap
io_trap:
    movl %edx, %eax
    movl %esi, %edx
    cmpl $IO_OP_OUTB, %edi
    jne 1f
    outb %al, %dx
    iretq
1:  cmpl $IO_OP_INB, %edi
    jne 2f
    xorl %eax, %eax
    inb %dx, %al
    iretq
2:  cmpl $IO_OP_OUTW, %edi
    jne 3f
    outw %ax, %dx
    iretq
3:  cmpl $IO_OP_INW, %edi
    jne 4f
    xorl %eax, %eax
    inw %dx, %ax
    iretq
4:  cmpl $IO_OP_OUTL, %edi
    jne 5f
    outl %eax, %dx
    iretq
5:  cmpl $IO_OP_INL, %edi
    jne 7f
    inl %dx, %eax
    iretq
7:  cmpl $IO_OP_CPL0_POPCNT, %edi
    jne 8f
    popcntq %rax, %rax   /* the value: io_trap moved it to RAX (RDX holds the port now) */
    iretq
8:  cmpl $IO_OP_FLUSH_TLB, %edi
    jne 6f
    movq %cr3, %rax
    movq %rax, %cr3
    iretq
6:  cli                 /* IO_OP_PARK (and anything unknown): stop this CPU */
    hlt
    jmp 6b

/* LAPIC timer: count and EOI. */
    .globl irq_timer
irq_timer:
    pushq %rax
    incq timer_ticks(%rip)
    movl $LAPIC_EOI_ADDRESS, %eax
    movl $0, (%rax)
    popq %rax
    iretq

/* COM1 (IOAPIC pin 4, edge): count, read IIR (clears a THRE interrupt), drain received bytes into
 * uart_rx_ring, EOI. */
#define UART_RBR 0
#define UART_IIR 2
#define UART_LSR 5
#define UART_LSR_DATA_READY 0x01
    .globl irq_uart
irq_uart:
    pushq %rax
    pushq %rcx
    pushq %rdx
    incq uart_irqs(%rip)
    movl $(COM1_BASE + UART_IIR), %edx
    inb %dx, %al
    movb %al, uart_last_iir(%rip)
1:  movl $(COM1_BASE + UART_LSR), %edx
    inb %dx, %al
    testb $UART_LSR_DATA_READY, %al
    jz 2f
    movl $(COM1_BASE + UART_RBR), %edx
    inb %dx, %al
    movq uart_rx_head(%rip), %rcx
    andl $(UART_RX_RING_SIZE - 1), %ecx
    leaq uart_rx_ring(%rip), %rdx
    movb %al, (%rdx, %rcx)
    incq uart_rx_head(%rip)
    jmp 1b
2:  movl $LAPIC_EOI_ADDRESS, %eax
    movl $0, (%rax)
    popq %rdx
    popq %rcx
    popq %rax
    iretq

/* Virtio device interrupts (MSI-X messages or IOAPIC pins): VIRTIO_VECTOR_COUNT stubs, VIRTIO_STUB_SIZE
 * bytes apart, for vectors VECTOR_VIRTIO_FIRST on. Each counts into virtio_irq_counts[n] (virtio.cpp) and
 * EOIs; the drivers at CPL3 watch the counters. */
    .balign VIRTIO_STUB_SIZE
    .globl irq_virtio_stubs
irq_virtio_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .balign VIRTIO_STUB_SIZE
    pushq %rax
    movl $\n, %eax
    jmp irq_virtio_common
    .endr
irq_virtio_common:
    incq virtio_irq_counts(,%rax,8)
    movl $LAPIC_EOI_ADDRESS, %eax
    movl $0, (%rax)
    popq %rax
    iretq

/* Spurious LAPIC vector: no EOI (SDM vol. 3A, 11.9). */
    .globl irq_spurious
irq_spurious:
    iretq

/* enter_user(rip, rsp, arg0, arg1): iretq to CPL3 with interrupts enabled, RDI = arg0, RSI = arg1. */
    .globl enter_user
enter_user:
    pushq $(GDT_USER_DATA | 3)
    pushq %rsi
    pushq $(RFLAGS_IF | RFLAGS_RESERVED1)
    pushq $(GDT_USER_CODE64 | 3)
    pushq %rdi
    movq %rdx, %rdi
    movq %rcx, %rsi
    movl $(GDT_USER_DATA | 3), %eax
    movl %eax, %ds
    movl %eax, %es
    iretq

    .section .note.GNU-stack, "", @progbits
