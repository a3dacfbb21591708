/* Real-mode setup code of ember-test-guest.bzimage, for loaders that enter a bzImage the traditional
 * way, at setup offset 0x200 in real mode (QEMU's -kernel, via its linuxboot option ROM).
 * It plays the part of Linux's arch/x86/boot: e820 map from INT 15h AX=E820 into boot_params, then
 * 32-bit protected mode with flat segments (__BOOT_CS 0x10, __BOOT_DS 0x18) and a jump to
 * code32_start (0x100000) with ESI = boot_params, as the 32-bit boot protocol says (boot.rst).
 * mkbzimage.py writes the setup header fields over 0x1f1..0x267. Segment: boot_params = setup base. */
#define BOOT_PARAMS_E820_ENTRIES 0x1e8
#define BOOT_PARAMS_E820_TABLE 0x2d0
#define E820_MAX_ENTRIES 128
#define E820_ENTRY_SIZE 20
#define SMAP 0x534d4150
#define BOOT_CS 0x10
#define BOOT_DS 0x18
#define CODE32_START 0x100000

    .section .setup, "ax"
    .code16
    .org 0x200
    jmp start16     /* the setup header's jump field: mkbzimage.py keeps these two bytes */
    .org 0x268
start16:
    cli
    movw %cs, %ax
    subw $0x20, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $0xfff0, %sp
    cld

    /* e820: INT 15h, EAX=E820h, EDX='SMAP', ES:DI = next entry, EBX = continuation. */
    xorl %ebx, %ebx
    movw $BOOT_PARAMS_E820_TABLE, %di
    xorw %bp, %bp
1:  movl $0xe820, %eax
    movl $SMAP, %edx
    movl $E820_ENTRY_SIZE, %ecx
    int $0x15
    jc 2f
    cmpl $SMAP, %eax
    jne 2f
    incw %bp
    addw $E820_ENTRY_SIZE, %di
    cmpw $E820_MAX_ENTRIES, %bp
    jae 2f
    testl %ebx, %ebx
    jnz 1b
2:  movw %bp, %ax
    movb %al, BOOT_PARAMS_E820_ENTRIES

    /* ESI = linear address of boot_params; the GDT pointer needs linear addresses too. */
    xorl %esi, %esi
    movw %ds, %si
    shll $4, %esi
    movl %esi, %eax
    addl $setup_gdt, %eax
    movl %eax, setup_gdt_pointer + 2
    lgdtl setup_gdt_pointer

    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    movw $BOOT_DS, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    ljmpl $BOOT_CS, $CODE32_START

    .balign 8
setup_gdt:
    .quad 0
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x10 code, 32-bit, flat */
    .quad 0x00cf92000000ffff    /* 0x18 data, flat */
setup_gdt_pointer:
    .word setup_gdt_pointer - setup_gdt - 1
    .long 0

    .section .note.GNU-stack, "", @progbits
