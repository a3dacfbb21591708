/* Constants shared by the assembly and the C++ of the ember test guest.
 * Plain #defines only: this header is included from .S files too. */
#ifndef EMBER_TEST_GUEST_LAYOUT_H
#define EMBER_TEST_GUEST_LAYOUT_H

/* Where the image runs (PVH p_paddr, bzImage code32_start / pref_address). */
#define IMAGE_BASE 0x100000

/* GDT selectors (gdt in entry.S). */
#define GDT_CODE32 0x08
#define GDT_CODE64 0x10
#define GDT_DATA 0x18
#define GDT_USER_DATA 0x20 /* used with RPL 3 */
#define GDT_USER_CODE64 0x28 /* used with RPL 3 */
#define GDT_TSS_FIRST 0x30 /* one 16-byte TSS descriptor per CPU */
#define GDT_FIXED_ENTRIES 6
#define MAX_CPUS 16
#define GDT_SIZE ((GDT_FIXED_ENTRIES + 2 * MAX_CPUS) * 8)

/* How the guest was entered (first argument of kernel_entry / user_main). */
#define ENTRY_PVH 0
#define ENTRY_LINUX64 1
#define ENTRY_LINUX32 2
#define ENTRY_AP 3

/* Control registers and MSRs (Intel SDM vol. 3A, 2.5 and 2.2.1). */
#define CR0_PE 0x00000001
#define CR0_ET 0x00000010
#define CR0_NE 0x00000020
#define CR0_PG 0x80000000
#define CR4_PAE 0x00000020
#define MSR_EFER 0xc0000080
#define EFER_LME 0x00000100
#define RFLAGS_RESERVED1 0x2
#define RFLAGS_IF 0x200

/* Page table entry bits (SDM vol. 3A, 4.5). */
#define PTE_PRESENT 0x01
#define PTE_WRITE 0x02
#define PTE_USER 0x04
#define PTE_PWT 0x08
#define PTE_PCD 0x10
#define PTE_LARGE 0x80
/* 2 MiB pages from here up are mapped uncached (IOAPIC 0xfec00000, LAPIC 0xfee00000). */
#define UNCACHED_FROM 0xfe000000

/* Stacks. */
#define BSP_KERNEL_STACK_SIZE 16384
#define BSP_USER_STACK_SIZE 65536
#define AP_KERNEL_STACK_SIZE 8192
#define AP_USER_STACK_SIZE 8192

/* The AP real-mode trampoline is copied here (RAM below 1 MiB; SIPI vector = page number). */
#define TRAMPOLINE_BASE 0x70000

/* Interrupt vectors. */
#define VECTOR_IO_TRAP 3 /* int3 from CPL3: port I/O service */
#define VECTOR_TIMER 0x20
#define VECTOR_UART 0x21
/* Device interrupts of the virtio drivers (MSI-X and IOAPIC pins): VIRTIO_VECTOR_COUNT vectors from
 * VECTOR_VIRTIO_FIRST, each with a counting stub (irq_virtio_stubs in traps.S, 16 bytes apart). */
#define VECTOR_VIRTIO_FIRST 0x30
#define VIRTIO_VECTOR_COUNT 16
#define VIRTIO_STUB_SIZE 16
#define VECTOR_SPURIOUS 0xff

/* Port I/O trap operations: RDI = op, RSI = port, RDX = value, result in RAX. */
#define IO_OP_OUTB 0
#define IO_OP_OUTW 1
#define IO_OP_OUTL 2
#define IO_OP_INB 3
#define IO_OP_INW 4
#define IO_OP_INL 5
#define IO_OP_PARK 6 /* halt this CPU forever with interrupts off */
#define IO_OP_CPL0_POPCNT 7 /* popcnt at CPL0: an instruction an emulating KVM lacks (HOSTS.md) */
#define IO_OP_FLUSH_TLB 8 /* reload CR3: CPL3 code changed the page tables (uncached MMIO mappings) */

/* Fixed platform addresses. */
#define LAPIC_BASE 0xfee00000
#define LAPIC_EOI_ADDRESS 0xfee000b0
#define COM1_BASE 0x3f8
#define UART_RX_RING_SIZE 256

#endif
