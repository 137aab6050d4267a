/* Marks the boot timer, then halts with interrupts off forever: the VMM must
 * still stop cleanly when signalled. */
#include "guest.h"

int guest_main(void) {
    puts("halting\n");
    mark_init_reached();
    for (;;) __asm__ volatile("cli; hlt");
}
