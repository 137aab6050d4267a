/* Loads an empty IDT and raises an exception: #BP -> #GP -> #DF -> triple fault. */
#include "guest.h"

int guest_main(void) {
    struct __attribute__((packed)) {
        u16 limit;
        u64 base;
    } idtr = {0, 0};
    puts("faulting\n");
    __asm__ volatile("lidt %0; int3" : : "m"(idtr));
    return 99; /* not reached */
}
