/* Entry of the 64-bit tiny guests: husk-vmm enters here in long mode with the
 * first 4 GiB identity-mapped. Set a stack, run main, and hand its return
 * value to the debug port's exit register. */
    .section .text.start, "ax"
    .globl _start
    .code64
_start:
    lea stack_top(%rip), %rsp
    call guest_main
    mov %eax, %edi
    call guest_exit
1:  hlt
    jmp 1b

    .bss
    .align 16
    .space 16384
stack_top:
