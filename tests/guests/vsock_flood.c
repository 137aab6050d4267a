/* Hostile vsock driver: finds virtio-vsock (none: exits 4) and sets up its
 * rx and tx queues, but never posts an rx buffer, so nothing the device has
 * to say can reach the guest. It prints "vsock found", then "ready", reads a
 * command line "WORD N" and answers with one line:
 *   rst N       N packets for connections nobody made (each earns a RST)
 *   credit N    a REQUEST from guest port 3000 to host port 9, then N
 *               CREDIT_REQUESTs on it (each asks for a CREDIT_UPDATE)
 *   connect N   N REQUESTs from guest ports 5000.. to host port 9
 *               -> "sent S status=T": packets the device took, its status
 *   q           exits 0
 * A packet the device does not take in time ends the answer early. */
#include "virtio.h"

#define DEVICE_VSOCK 19
#define OP_REQUEST 1
#define OP_RW 5
#define OP_CREDIT_REQUEST 7
#define TYPE_STREAM 1

struct packet {
    u64 src_cid, dst_cid;
    u32 src_port, dst_port, len;
    u16 type, op;
    u32 flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

static struct packet packets[QUEUE_SIZE] __attribute__((aligned(16)));

/* One header-only packet on the tx queue; 0 if the device did not take it. */
static int send(u32 src_port, u32 dst_port, u16 op) {
    struct queue* vq = &queues[1];
    u16 slot = (u16)(vq->next_avail % vq->size);
    volatile struct packet* p = &packets[slot];
    p->src_cid = 3;
    p->dst_cid = 2;
    p->src_port = src_port;
    p->dst_port = dst_port;
    p->len = 0;
    p->type = TYPE_STREAM;
    p->op = op;
    p->flags = 0;
    p->buf_alloc = 65536;
    p->fwd_cnt = 0;
    vq->desc[slot].addr = (u64)&packets[slot];
    vq->desc[slot].len = sizeof(struct packet);
    vq->desc[slot].flags = 0;
    vq->desc[slot].next = 0;
    u16 before = vq->used->idx;
    publish(1, slot);
    return wait_used(1, before);
}

static void answer(u64 sent) {
    puts("sent ");
    put_dec(sent);
    puts(" status=");
    put_dec(reg_read(REG_STATUS));
    putc('\n');
}

int guest_main(void) {
    if (!find_device(DEVICE_VSOCK)) {
        puts("no vsock device\n");
        return 4;
    }
    int failed = init_device(2); /* rx and tx; the event queue stays off */
    if (failed) return failed;
    puts("vsock found\n");
    for (;;) {
        puts("ready\n");
        char word[16];
        u64 n = 0, sent = 0;
        read_command(word, sizeof word, &n);
        if (streq(word, "q")) return 0;
        if (streq(word, "rst")) {
            while (sent < n && send(10000 + (u32)sent, 7, OP_RW)) ++sent;
        } else if (streq(word, "credit")) {
            if (send(3000, 9, OP_REQUEST))
                while (sent < n && send(3000, 9, OP_CREDIT_REQUEST)) ++sent;
        } else if (streq(word, "connect")) {
            while (sent < n && send(5000 + (u32)sent, 9, OP_REQUEST)) ++sent;
        } else {
            puts("unknown command\n");
            continue;
        }
        answer(sent);
    }
}
