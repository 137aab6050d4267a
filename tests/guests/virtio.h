/* A minimal polled virtio-mmio (version 2) driver for the tiny guests: the
 * registers (virtio 1.2 §4.2.2), split rings of 16 entries (§2.7), device
 * discovery in the MMIO windows from 0xd0001000 up, queue set-up, and the
 * console's "WORD [N]" command lines. One device per guest (`mmio`). */
#pragma once

#include "guest.h"

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

#define MAGIC 0x74726976 /* "virt" */

#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define STATUS_NEEDS_RESET 64

#define DESC_NEXT 1
#define DESC_WRITE 2
#define DESC_INDIRECT 4

#define QUEUE_SIZE 16
#define MAX_QUEUES 2
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

static struct desc descs[MAX_QUEUES][QUEUE_SIZE] __attribute__((aligned(16)));
static struct avail avails[MAX_QUEUES] __attribute__((aligned(2)));
static struct used useds[MAX_QUEUES] __attribute__((aligned(4)));
static struct queue queues[MAX_QUEUES];
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

/* Points `mmio` at the first window holding a device of this type; 0 if none. */
static int find_device(u32 type) {
    for (u64 i = 0; i < MMIO_WINDOWS; ++i) {
        mmio = MMIO_FIRST + i * MMIO_WINDOW;
        if (reg_read(REG_MAGIC) == MAGIC && reg_read(REG_VERSION) == 2 && reg_read(REG_DEVICE_ID) == type)
            return 1;
    }
    return 0;
}

/* Sets up queue q on our rings; 0 if the device has no such queue. */
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
    for (u32 i = 0; i < sizeof(useds[q]); ++i) ((volatile u8*)&useds[q])[i] = 0;
    for (u32 i = 0; i < sizeof(avails[q]); ++i) ((volatile u8*)&avails[q])[i] = 0;
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

/* Initialisation (§3.1.1) accepting VIRTIO_F_VERSION_1 only, queues [0, n)
 * set up; returns 0 or the exit status for a failure (5). */
static int init_device(u32 n) {
    reg_write(REG_STATUS, 0);
    reg_write(REG_STATUS, STATUS_ACKNOWLEDGE);
    reg_write(REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    reg_write(REG_DEVICE_FEATURES_SEL, 0);
    (void)reg_read(REG_DEVICE_FEATURES);
    reg_write(REG_DEVICE_FEATURES_SEL, 1);
    u32 high = reg_read(REG_DEVICE_FEATURES);
    reg_write(REG_DRIVER_FEATURES_SEL, 0);
    reg_write(REG_DRIVER_FEATURES, 0);
    reg_write(REG_DRIVER_FEATURES_SEL, 1);
    reg_write(REG_DRIVER_FEATURES, 1);
    reg_write(REG_STATUS, reg_read(REG_STATUS) | STATUS_FEATURES_OK);
    if (!(high & 1) || !(reg_read(REG_STATUS) & STATUS_FEATURES_OK)) {
        puts("features refused\n");
        return 5;
    }
    for (u32 q = 0; q < n; ++q) {
        if (!setup_queue(q)) {
            puts("no queue\n");
            return 5;
        }
    }
    reg_write(REG_STATUS, reg_read(REG_STATUS) | STATUS_DRIVER_OK);
    return 0;
}

/* Publishes the chain at descriptor `head` on queue q and notifies. */
static void publish(u32 q, u16 head) {
    struct queue* vq = &queues[q];
    vq->avail->ring[vq->next_avail % vq->size] = head;
    barrier(); /* descriptors and ring entry before the index */
    vq->avail->idx = ++vq->next_avail;
    fence(); /* the index before the notification */
    reg_write(REG_QUEUE_NOTIFY, vq->index);
}

/* Waits until the device moves queue q's used index past `before`; 0 on timeout. */
static int wait_used(u32 q, u16 before) {
    struct queue* vq = &queues[q];
    u64 start = rdtsc();
    while (vq->used->idx == before) {
        if (rdtsc() - start > SPIN_CYCLES) return 0;
        __asm__ volatile("pause");
    }
    fence(); /* the device's writes before anything we read after */
    reg_write(REG_INTERRUPT_ACK, reg_read(REG_INTERRUPT_STATUS));
    return 1;
}

/* Reads a console line "WORD [N]": the word (truncated to fit) into `word`, the number into *n. */
static void read_command(char* word, u32 size, u64* n) {
    u32 len = 0;
    *n = 0;
    int c = read_char();
    for (; c != '\n' && c != ' '; c = read_char())
        if (c != '\r' && len < size - 1) word[len++] = (char)c;
    word[len] = 0;
    for (; c != '\n'; c = read_char())
        if (c >= '0' && c <= '9') *n = *n * 10 + (u64)(c - '0');
}
