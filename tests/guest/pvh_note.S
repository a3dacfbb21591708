/* The PVH ELF note: XEN_ELFNOTE_PHYS32_ENTRY (type 18, name "Xen"), the 32-bit entry address.
 * (xen/include/public/elfnote.h; the 8-byte descriptor matches what Linux emits and what
 * QEMU reads for ELF64.) */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

    .section .note.pvh, "a", @note
    .balign 4
    .long 4                         /* namesz */
    .long 8                         /* descsz */
    .long XEN_ELFNOTE_PHYS32_ENTRY  /* type */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32

    .section .note.GNU-stack, "", @progbits
