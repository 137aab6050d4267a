/* Snapshot and reset test guest, driven over the serial console. It prints
 * "ready" and reads a line: a number N writes the next round number into the
 * first word of N pages from 16 MiB up, then prints "round R dirtied N";
 * "q" exits. Before each round it checks that the pages still sum to what it
 * last wrote: memory restored half from one moment and half from another
 * prints "corrupt" and exits 3. */
#include "guest.h"

#define ARRAY 0x1000000ul /* 16 MiB */
#define PAGE 4096ul

static u64 round_number;
static u64 expected_sum;
static u64 max_pages;

int guest_main(void) {
    mark_init_reached();
    for (;;) {
        puts("ready\n");
        u64 n = 0;
        for (int c = read_char(); c != '\n'; c = read_char()) {
            if (c == 'q') return 0;
            if (c >= '0' && c <= '9') n = n * 10 + (u64)(c - '0');
        }
        u64 sum = 0;
        for (u64 i = 0; i < max_pages; ++i) sum += *(volatile u64*)(ARRAY + i * PAGE);
        if (sum != expected_sum) {
            puts("corrupt\n");
            return 3;
        }
        ++round_number;
        for (u64 i = 0; i < n; ++i) {
            volatile u64* word = (volatile u64*)(ARRAY + i * PAGE);
            expected_sum += round_number - *word;
            *word = round_number;
        }
        if (n > max_pages) max_pages = n;
        puts("round ");
        put_dec(round_number);
        puts(" dirtied ");
        put_dec(n);
        putc('\n');
    }
}
