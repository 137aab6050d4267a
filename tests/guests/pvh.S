/* A PVH guest: entered in 32-bit protected mode, paging off, EBX pointing at
 * hvm_start_info (PVH boot ABI). Checks the magic and the command line pointer,
 * prints, and resets through the i8042. Exit 3 if the start info is wrong. */
    .section .note.pvh, "a"
    .align 4
    .long 4             /* namesz: "Xen\0" */
    .long 4             /* descsz */
    .long 18            /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start

    .section .text.start, "ax"
    .code32
    .globl _start
_start:
pvh_start:
    cmpl $0x336ec578, (%ebx)
    jne bad
    mov $msg, %esi
1:  movb (%esi), %al
    test %al, %al
    jz done
    mov $0x3f8, %dx
    outb %al, %dx
    inc %esi
    jmp 1b
done:
    mov $0x440, %dx
    outb %al, %dx       /* boot timer */
#ifdef HALT
    cli                 /* stay up until killed: for memory measurements */
2:  hlt
    jmp 2b
#else
    mov $0xfe, %al
    outb %al, $0x64     /* reset through the i8042 (husk-vmm exits 0 here) */
    xor %al, %al
    mov $0x501, %dx
    outb %al, %dx       /* QEMU's isa-debug-exit at 0x501, for side-by-side runs */
    lidt null_idt       /* no i8042 (QEMU microvm): triple fault, which -no-reboot turns into an exit */
    int3
2:  hlt
    jmp 2b
#endif
bad:
    mov $3, %al
    mov $0x441, %dx
    outb %al, %dx
    jmp 2b

    .section .rodata
    .align 8
null_idt: .word 0
    .long 0
msg: .asciz "Hello from a PVH guest\n"
