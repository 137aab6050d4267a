/* Virtio-balloon test guest: a minimal polled virtio-mmio (version 2) driver
 * for the balloon device, driven over the serial console. It finds the device
 * in the MMIO windows from 0xd0001000 up (none: exits 4), negotiates only
 * VERSION_1 (refused: exits 5), sets up the inflate and deflate queues and
 * prints "balloon ready". Then it prints "ready", reads a line and answers
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
#include "guest.h"

#define ARRAY 0x2000000ul /* 32 MiB */
#define PAGE 4096ul
#define MAX_PAGES 16384ul /* 64 MiB: stays within a 128 MiB guest */
#define PATTERN 0x5a5a000000000000ul

/* Virtio-mmio windows and registers (virtio 1.2 §4.2.2). */
#define MMIO_FIRST 0xd0001000ul
#define MMIO_WINDOW 0x1000ul
#define MMIO_WINDOWS 19
#define REG_MAGIC 0x000
#define REG_VERSION 0x004
#define REG_DEVICE_ID 0x008
#define REG_DEVICE_FEATURES 0x010
#define REG_DEVICE_FEATURES_SEL 0x014
#define REG_DRIVER_FEATURES 0x020
#define REG_DRIVER_FEATURES_SEL 0x024
#define REG_QUEUE_SEL 0x030
#define REG_QUEUE_NUM_MAX 0x034
#define REG_QUEUE_NUM 0x038
#define REG_QUEUE_READY 0x044
#define REG_QUEUE_NOTIFY 0x050
#define REG_INTERRUPT_STATUS 0x060
#define REG_INTERRUPT_ACK 0x064
#define REG_STATUS 0x070
#define REG_QUEUE_DESC_LOW 0x080
#define REG_QUEUE_DESC_HIGH 0x084
#define REG_QUEUE_DRIVER_LOW 0x090
#define REG_QUEUE_DRIVER_HIGH 0x094
#define REG_QUEUE_DEVICE_LOW 0x0a0
#define REG_QUEUE_DEVICE_HIGH 0x0a4
#define REG_CONFIG_GENERATION 0x0fc
#define REG_NUM_PAGES 0x100 /* balloon config (§5.5.4) */
#define REG_ACTUAL 0x104

#define MAGIC 0x74726976 /* "virt" */
#define DEVICE_BALLOON 5

#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8

#define QUEUE_SIZE 16
#define BUFFER_PFNS 256
#define SPIN_CYCLES (1ul << 34) /* several seconds of TSC */

/* Split virtqueue layout (§2.7). */
struct desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
};
struct avail {
    u16 flags;
    u16 idx;
    u16 ring[QUEUE_SIZE];
    u16 used_event;
};
struct used_elem {
    u32 id;
    u32 len;
};
struct used {
    u16 flags;
    u16 idx;
    struct used_elem ring[QUEUE_SIZE];
    u16 avail_event;
};

struct queue {
    u32 index;
    u16 size;
    u16 next_avail; /* our copy of avail->idx */
    volatile struct desc* desc;
    volatile struct avail* avail;
    volatile struct used* used;
};

static struct desc descs[2][QUEUE_SIZE] __attribute__((aligned(16)));
static struct avail avails[2] __attribute__((aligned(2)));
static struct used useds[2] __attribute__((aligned(4)));
static struct queue queues[2];
static u32 pfns[BUFFER_PFNS];
static u64 mmio;

static u32 reg_read(u32 offset) { return *(volatile u32*)(mmio + offset); }
static void reg_write(u32 offset, u32 v) { *(volatile u32*)(mmio + offset) = v; }

static void barrier(void) { __asm__ volatile("" ::: "memory"); }
static void fence(void) { __asm__ volatile("mfence" ::: "memory"); }

static u64 rdtsc(void) {
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

static int streq(const char* a, const char* b) {
    while (*a && *a == *b) ++a, ++b;
    return *a == *b;
}

static int find_device(void) {
    for (u64 i = 0; i < MMIO_WINDOWS; ++i) {
        mmio = MMIO_FIRST + i * MMIO_WINDOW;
        if (reg_read(REG_MAGIC) == MAGIC && reg_read(REG_VERSION) == 2 &&
            reg_read(REG_DEVICE_ID) == DEVICE_BALLOON)
            return 1;
    }
    return 0;
}

/* Sets up queue q (0 inflateq, 1 deflateq); 0 if the device has no such queue. */
static int setup_queue(u32 q) {
    struct queue* vq = &queues[q];
    reg_write(REG_QUEUE_SEL, q);
    u32 max = reg_read(REG_QUEUE_NUM_MAX);
    if (max == 0) return 0;
    vq->index = q;
    vq->size = (u16)(max < QUEUE_SIZE ? max : QUEUE_SIZE);
    vq->next_avail = 0;
    vq->desc = descs[q];
    vq->avail = &avails[q];
    vq->used = &useds[q];
    reg_write(REG_QUEUE_NUM, vq->size);
    u64 desc = (u64)descs[q], avail = (u64)&avails[q], used = (u64)&useds[q];
    reg_write(REG_QUEUE_DESC_LOW, (u32)desc);
    reg_write(REG_QUEUE_DESC_HIGH, (u32)(desc >> 32));
    reg_write(REG_QUEUE_DRIVER_LOW, (u32)avail);
    reg_write(REG_QUEUE_DRIVER_HIGH, (u32)(avail >> 32));
    reg_write(REG_QUEUE_DEVICE_LOW, (u32)used);
    reg_write(REG_QUEUE_DEVICE_HIGH, (u32)(used >> 32));
    reg_write(REG_QUEUE_READY, 1);
    return 1;
}

/* Initialisation (§3.1.1); returns 0 or the exit status for a failure. */
static int init_device(void) {
    reg_write(REG_STATUS, 0);
    reg_write(REG_STATUS, STATUS_ACKNOWLEDGE);
    reg_write(REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    reg_write(REG_DEVICE_FEATURES_SEL, 0);
    (void)reg_read(REG_DEVICE_FEATURES);
    reg_write(REG_DEVICE_FEATURES_SEL, 1);
    u32 high = reg_read(REG_DEVICE_FEATURES);
    /* Accept VIRTIO_F_VERSION_1 (bit 32) and nothing else. */
    reg_write(REG_DRIVER_FEATURES_SEL, 0);
    reg_write(REG_DRIVER_FEATURES, 0);
    reg_write(REG_DRIVER_FEATURES_SEL, 1);
    reg_write(REG_DRIVER_FEATURES, 1);
    reg_write(REG_STATUS, reg_read(REG_STATUS) | STATUS_FEATURES_OK);
    if (!(high & 1) || !(reg_read(REG_STATUS) & STATUS_FEATURES_OK)) {
        puts("features refused\n");
        return 5;
    }
    if (!setup_queue(0) || !setup_queue(1)) {
        puts("no queue\n");
        return 5;
    }
    reg_write(REG_STATUS, reg_read(REG_STATUS) | STATUS_DRIVER_OK);
    return 0;
}

/* Sends pfns[0, n) as one device-readable buffer on queue q and waits until
 * the device has used it; 0 on timeout. */
static int send(u32 q, u32 n) {
    struct queue* vq = &queues[q];
    u16 slot = (u16)(vq->next_avail % vq->size);
    vq->desc[slot].addr = (u64)pfns;
    vq->desc[slot].len = n * 4;
    vq->desc[slot].flags = 0;
    vq->desc[slot].next = 0;
    vq->avail->ring[slot] = slot;
    barrier(); /* descriptor and ring entry before the index */
    u16 used_before = vq->used->idx;
    vq->avail->idx = ++vq->next_avail;
    fence(); /* the index before the notification */
    reg_write(REG_QUEUE_NOTIFY, vq->index);
    u64 start = rdtsc();
    while (vq->used->idx == used_before) {
        if (rdtsc() - start > SPIN_CYCLES) return 0;
        __asm__ volatile("pause");
    }
    fence(); /* the device's writes before anything we read after */
    reg_write(REG_INTERRUPT_ACK, reg_read(REG_INTERRUPT_STATUS));
    return 1;
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
    if (!find_device()) {
        puts("no balloon\n");
        return 4;
    }
    int status = init_device();
    if (status) return status;
    puts("balloon ready\n");

    for (;;) {
        puts("ready\n");
        /* A line is "WORD [N]": the word (truncated to fit) and a number. */
        char word[16];
        u32 len = 0;
        u64 n = 0;
        int c = read_char();
        for (; c != '\n' && c != ' '; c = read_char())
            if (c != '\r' && len < sizeof(word) - 1) word[len++] = (char)c;
        word[len] = 0;
        for (; c != '\n'; c = read_char())
            if (c >= '0' && c <= '9') n = n * 10 + (u64)(c - '0');

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
