/* Port and MMIO round trips through the debug device and the UART scratch
 * register; exits 0 when every value reads back, else 10+n for the nth check. */
#include "guest.h"

int guest_main(void) {
    static const u32 patterns[] = {0x00000000u, 0xffffffffu, 0xdeadbeefu, 0x12345678u};
    for (unsigned i = 0; i < sizeof patterns / sizeof patterns[0]; ++i) {
        outl(DEBUG_PORT + 4, patterns[i]);
        if (inl(DEBUG_PORT + 4) != patterns[i]) return 10;
    }
    if (inb(DEBUG_PORT) != 'H') return 11;
    puts("pio ok\n");

    volatile u32* scratch = (volatile u32*)(DEBUG_MMIO + 4);
    volatile u8* ident = (volatile u8*)DEBUG_MMIO;
    for (unsigned i = 0; i < sizeof patterns / sizeof patterns[0]; ++i) {
        *scratch = patterns[i] ^ 0x5a5a5a5au;
        if (*scratch != (patterns[i] ^ 0x5a5a5a5au)) return 12;
    }
    if (*ident != 'H') return 13;
    /* PIO and MMIO reach the same register. */
    outl(DEBUG_PORT + 4, 0xc0ffee00u);
    if (*scratch != 0xc0ffee00u) return 14;
    puts("mmio ok\n");

    outb(COM1 + 7, 0xa5);
    if (inb(COM1 + 7) != 0xa5) return 15;
    /* Unmapped MMIO reads float high. */
    if (*(volatile u32*)(DEBUG_MMIO + 0x100000) != 0xffffffffu) return 16;
    puts("roundtrip ok\n");
    return 0;
}
