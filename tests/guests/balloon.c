/* Virtio-balloon test guest: a minimal polled virtio-mmio (version 2) driver
 * for the balloon device, driven over the serial console. It finds the device
 * in the MMIO windows from 0xd0001000 up (none: exits 4), negotiates only
 * VERSION_1 (refused: exits 5), sets up the inflate and deflate queues and
 * prints "balloon found". Then it prints "ready", reads a line and answers
 * with one line:
 *   touch N    writes 0x5a5a000000000000 | i into the first word of page i of
 *              the array at 32 MiB, for i < N (N <= 16384) -> "touched N"
 *   inflate N  sends the PFNs of pages [0, N) on the inflate queue
 *   deflate N  the same on the deflate queue      -> "inflated N"/"deflated N"
 *   check N    counts pages in [0, N) holding their pattern, all zero or
 *              anything else                  -> "pattern=A zero=B other=C"
 *   bad        one inflate buffer: pages 0..7, then a PFN in the MMIO hole,
 *              0xffffffff and a PFN at 4 GiB (past the RAM) -> "bad sent"
 *   config     reads the config space           -> "num_pages=X actual=Y"
 *   actual N   writes N into the config's actual field -> "actual N"
 *   q          exits 0
 * A request the device does not complete in time prints "timeout", exits 6. */
#include "virtio.h"

#define ARRAY 0x2000000ul /* 32 MiB */
#define PAGE 4096ul
#define MAX_PAGES 16384ul /* 64 MiB: stays within a 128 MiB guest */
#define PATTERN 0x5a5a000000000000ul

#define DEVICE_BALLOON 5
#define REG_NUM_PAGES 0x100 /* balloon config (§5.5.4) */
#define REG_ACTUAL 0x104
#define BUFFER_PFNS 256

static u32 pfns[BUFFER_PFNS];

/* Sends pfns[0, n) as one device-readable buffer on queue q and waits until
 * the device has used it; 0 on timeout. */
static int send(u32 q, u32 n) {
    struct queue* vq = &queues[q];
    u16 slot = (u16)(vq->next_avail % vq->size);
    vq->desc[slot].addr = (u64)pfns;
    vq->desc[slot].len = n * 4;
    vq->desc[slot].flags = 0;
    vq->desc[slot].next = 0;
    u16 used_before = vq->used->idx;
    publish(q, slot);
    return wait_used(q, used_before);
}

/* Sends the PFNs of array pages [0, n) on queue q in buffers of up to
 * BUFFER_PFNS; 0 on timeout. */
static int send_pages(u32 q, u64 n) {
    for (u64 first = 0; first < n; first += BUFFER_PFNS) {
        u32 count = (u32)(n - first < BUFFER_PFNS ? n - first : BUFFER_PFNS);
        for (u32 i = 0; i < count; ++i) pfns[i] = (u32)((ARRAY + (first + i) * PAGE) >> 12);
        if (!send(q, count)) return 0;
    }
    return 1;
}

static void check(u64 n) {
    u64 pattern = 0, zero = 0, other = 0;
    for (u64 i = 0; i < n; ++i) {
        volatile u64* page = (volatile u64*)(ARRAY + i * PAGE);
        if (page[0] == (PATTERN | i)) {
            ++pattern;
            continue;
        }
        u64 bits = 0;
        for (u64 w = 0; w < PAGE / 8; ++w) bits |= page[w];
        if (bits)
            ++other;
        else
            ++zero;
    }
    puts("pattern=");
    put_dec(pattern);
    puts(" zero=");
    put_dec(zero);
    puts(" other=");
    put_dec(other);
    putc('\n');
}

static void config(void) {
    u32 generation, num_pages, actual;
    do {
        generation = reg_read(REG_CONFIG_GENERATION);
        num_pages = reg_read(REG_NUM_PAGES);
        actual = reg_read(REG_ACTUAL);
    } while (reg_read(REG_CONFIG_GENERATION) != generation);
    puts("num_pages=");
    put_dec(num_pages);
    puts(" actual=");
    put_dec(actual);
    putc('\n');
}

int guest_main(void) {
    mark_init_reached();
    if (!find_device(DEVICE_BALLOON)) {
        puts("no balloon\n");
        return 4;
    }
    int status = init_device(2);
    if (status) return status;
    puts("balloon found\n");

    for (;;) {
        puts("ready\n");
        char word[16];
        u64 n;
        read_command(word, sizeof word, &n);

        int page_command = streq(word, "touch") || streq(word, "inflate") ||
                           streq(word, "deflate") || streq(word, "check");
        if (page_command && n > MAX_PAGES) {
            puts("too many\n");
        } else if (streq(word, "touch")) {
            for (u64 i = 0; i < n; ++i) *(volatile u64*)(ARRAY + i * PAGE) = PATTERN | i;
            puts("touched ");
            put_dec(n);
            putc('\n');
        } else if (streq(word, "inflate") || streq(word, "deflate")) {
            int inflate = word[0] == 'i';
            if (!send_pages(inflate ? 0 : 1, n)) {
                puts("timeout\n");
                return 6;
            }
            puts(inflate ? "inflated " : "deflated ");
            put_dec(n);
            putc('\n');
        } else if (streq(word, "check")) {
            check(n);
        } else if (streq(word, "bad")) {
            for (u32 i = 0; i < 8; ++i) pfns[i] = (u32)((ARRAY + i * PAGE) >> 12);
            pfns[8] = 0xc0000;    /* the MMIO hole at 3 GiB */
            pfns[9] = 0xffffffff; /* far past anything */
            pfns[10] = 0x100000;  /* 4 GiB: past a 128 MiB guest's RAM */
            if (!send(0, 11)) {
                puts("timeout\n");
                return 6;
            }
            puts("bad sent\n");
        } else if (streq(word, "config")) {
            config();
        } else if (streq(word, "actual")) {
            reg_write(REG_ACTUAL, (u32)n);
            puts("actual ");
            put_dec((u32)n);
            putc('\n');
        } else if (streq(word, "q")) {
            return 0;
        } else {
            puts("unknown\n");
        }
    }
}
