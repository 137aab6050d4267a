/* Hostile-driver test guest: drives virtio-rng (one queue; the device writes
 * random bytes into the buffers it is given) the way a broken or malicious
 * driver would, over the serial console. It finds the device (none: exits 4),
 * sets it up (VERSION_1 only) and prints "rng found". Then it prints "ready",
 * reads a line and answers with one line:
 *   good     one 64-byte writable buffer    -> "good LEN" (LEN bytes written)
 *   loop     descriptors 0 -> 1 -> 0 ...            (a chain that never ends)
 *   long     an indirect table of 32 chained entries (longer than the queue)
 *   outside  a buffer at 4 GiB, past the guest's RAM
 *   wrap     a buffer at 2^64 - 4 KiB of 8 KiB (wraps around the address space)
 *   huge     a buffer at 1 MiB of 4 GiB - 1 bytes
 *   hole     a buffer in the MMIO hole (the debug device at 0xd0000000)
 *   index    a descriptor whose next is 200 (the queue has 16)
 *   avail    the available index moved by 1000 at once
 *            -> each "status=S used=U": the device status and used index
 *   regs     unknown registers, wrong widths, writes past the window; then
 *            a good request                 -> "status=S good LEN"
 *   early    device reset; a buffer published and notified before any
 *            feature is negotiated          -> "status=S used=U"
 *   reset    device reset and set up again  -> "reset ok"
 *   q        exits 0
 * A good request the device does not complete in time prints "timeout", exits 6. */
#include "virtio.h"

#define DEVICE_RNG 4
#define SHORT_WAIT (1ul << 28) /* a tenth of a second or so of TSC */

static u8 buffer[256] __attribute__((aligned(16)));
static struct desc table[32] __attribute__((aligned(16)));

static void put_status(void) {
    puts("status=");
    put_dec(reg_read(REG_STATUS));
    puts(" used=");
    put_dec(queues[0].used->idx);
}

/* Waits until the device says NEEDS_RESET (or a short while passes). */
static void wait_needs_reset(void) {
    u64 start = rdtsc();
    while (!(reg_read(REG_STATUS) & STATUS_NEEDS_RESET) && rdtsc() - start < SPIN_CYCLES) __asm__ volatile("pause");
}

static void set_desc(u16 i, u64 addr, u32 len, u16 flags, u16 next) {
    queues[0].desc[i].addr = addr;
    queues[0].desc[i].len = len;
    queues[0].desc[i].flags = flags;
    queues[0].desc[i].next = next;
}

/* One writable buffer; returns the bytes the device wrote, or -1 on timeout. */
static long good(void) {
    u16 before = queues[0].used->idx;
    set_desc(0, (u64)buffer, 64, DESC_WRITE, 0);
    publish(0, 0);
    if (!wait_used(0, before)) return -1;
    return queues[0].used->ring[(u16)(queues[0].used->idx - 1) % queues[0].size].len;
}

static void hostile(const char* word) {
    if (streq(word, "loop")) {
        set_desc(0, (u64)buffer, 16, DESC_WRITE | DESC_NEXT, 1);
        set_desc(1, (u64)buffer + 16, 16, DESC_WRITE | DESC_NEXT, 0);
        publish(0, 0);
    } else if (streq(word, "long")) {
        for (u16 i = 0; i < 32; ++i) {
            table[i].addr = (u64)buffer + 8 * i;
            table[i].len = 8;
            table[i].flags = DESC_WRITE | (i + 1 < 32 ? DESC_NEXT : 0);
            table[i].next = (u16)(i + 1);
        }
        set_desc(0, (u64)table, sizeof table, DESC_INDIRECT, 0);
        publish(0, 0);
    } else if (streq(word, "outside")) {
        set_desc(0, 0x100000000ul, 64, DESC_WRITE, 0);
        publish(0, 0);
    } else if (streq(word, "wrap")) {
        set_desc(0, 0xfffffffffffff000ul, 0x2000, DESC_WRITE, 0);
        publish(0, 0);
    } else if (streq(word, "huge")) {
        set_desc(0, 0x100000ul, 0xffffffffu, DESC_WRITE, 0);
        publish(0, 0);
    } else if (streq(word, "hole")) {
        set_desc(0, DEBUG_MMIO, 64, DESC_WRITE, 0);
        publish(0, 0);
    } else if (streq(word, "index")) {
        set_desc(0, (u64)buffer, 16, DESC_WRITE | DESC_NEXT, 200);
        publish(0, 0);
    } else if (streq(word, "avail")) {
        set_desc(0, (u64)buffer, 16, DESC_WRITE, 0);
        queues[0].next_avail = (u16)(queues[0].next_avail + 999);
        publish(0, 0);
    }
    wait_needs_reset();
    put_status();
    putc('\n');
}

/* Register accesses no driver makes: each must be ignored. */
static void bad_registers(void) {
    volatile u8* b = (volatile u8*)mmio;
    b[REG_STATUS] = 0xff;                                      /* 1-byte status write */
    *(volatile u16*)(mmio + REG_QUEUE_SEL) = 7;                /* 2-byte write */
    *(volatile u64*)(mmio + REG_QUEUE_DESC_LOW) = 0xdeadbeef0; /* 8-byte write */
    reg_write(0x0f0, 0xffffffff);                              /* unknown register */
    reg_write(0x062, 1);                                       /* misaligned */
    reg_write(0xffc, 0xffffffff);                              /* end of the window */
    reg_write(REG_DEVICE_FEATURES, 0);                         /* read-only register */
    reg_write(REG_QUEUE_NUM_MAX, 4);                           /* read-only register */
    (void)reg_read(0x0f0);
    (void)*(volatile u16*)(mmio + REG_MAGIC);
    (void)*(volatile u64*)(mmio + REG_STATUS);
}

int guest_main(void) {
    mark_init_reached();
    if (!find_device(DEVICE_RNG)) {
        puts("no rng\n");
        return 4;
    }
    int status = init_device(1);
    if (status) return status;
    puts("rng found\n");

    for (;;) {
        puts("ready\n");
        char word[16];
        u64 n;
        read_command(word, sizeof word, &n);
        if (streq(word, "good") || streq(word, "regs")) {
            if (word[0] == 'r') {
                bad_registers();
                puts("status=");
                put_dec(reg_read(REG_STATUS));
                putc(' ');
            }
            long got = good();
            if (got < 0) {
                puts("timeout\n");
                return 6;
            }
            puts("good ");
            put_dec((u64)got);
            putc('\n');
        } else if (streq(word, "early")) {
            reg_write(REG_STATUS, 0);
            queues[0].next_avail = 0;
            queues[0].used->idx = 0;
            set_desc(0, (u64)buffer, 64, DESC_WRITE, 0);
            publish(0, 0);
            u64 start = rdtsc();
            while (rdtsc() - start < SHORT_WAIT) __asm__ volatile("pause");
            put_status();
            putc('\n');
        } else if (streq(word, "reset")) {
            status = init_device(1);
            if (status) return status;
            puts("reset ok\n");
        } else if (streq(word, "q")) {
            return 0;
        } else if (word[0]) {
            hostile(word);
        }
    }
}
