/* Helpers for the tiny test guests (freestanding: no libc). */
#pragma once

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

#define COM1 0x3f8
#define DEBUG_PORT 0x440 /* +0 boot timer, +1 exit status, +4 scratch */
#define DEBUG_MMIO 0xd0000000ul

static inline void outb(u16 port, u8 v) {
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline u8 inb(u16 port) {
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline void outl(u16 port, u32 v) {
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline u32 inl(u16 port) {
    u32 v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline void putc(char c) {
    while (!(inb(COM1 + 5) & 0x20)) {
    }
    outb(COM1, (u8)c);
}
static inline void puts(const char* s) {
    while (*s) putc(*s++);
}
static inline void put_hex(u64 v) {
    const char* digits = "0123456789abcdef";
    puts("0x");
    for (int i = 60; i >= 0; i -= 4) putc(digits[(v >> i) & 0xf]);
}

/* Waits for and returns the next byte on the serial console. */
static inline int read_char(void) {
    while (!(inb(COM1 + 5) & 1)) {
    }
    return inb(COM1);
}
static inline void put_dec(u64 v) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) putc(digits[--n]);
}

static inline void mark_init_reached(void) {
    outb(DEBUG_PORT, 1);
}

/* Ends the VM with this exit status. */
void guest_exit(int status);
