/* A tiny PID 1 for boot tests of the Linux guest: marks the boot timer,
 * reports the CPU count, then does what its arguments say:
 *
 *   (none) | reboot     reboot (husk-vmm exits 0)
 *   poweroff            power off (husk-vmm exits 0)
 *   panic               exit, so the kernel panics (husk-vmm exits 2)
 *   exit N              exit the VM with status N through the debug port
 *   cpus=N              first check that N CPUs are online (else exit status 9)
 *   blk                 print the FNV-1a sum of /dev/vda, fill /dev/vdb with a pattern
 *                       (byte i = (i * 31 + i / 4096) & 0xff), sync, then reboot
 *   blk-ro              try to write /dev/vda: print whether the write was refused
 *   rng                 read 64 bytes from /dev/hwrng and print them in hex
 *   fs                  mount virtio-fs tag "husk" on /mnt; print /mnt's listing and
 *                       /mnt/rw/in; write /mnt/rw/out (3 MiB of byte i = (i * 13 + 7) & 0xff),
 *                       make /mnt/rw/d, rename it to /mnt/rw/e, link out to hard, symlink
 *                       sym -> out; read out back and print its FNV-1a sum; try to create
 *                       /mnt/ro/x and print the error; then reboot
 *   ping A.B.C.D        send ICMP echo requests to A.B.C.D (eth0 configured by ip=) until
 *                       one is answered; print "ping reply from A.B.C.D"
 *   randread QD SECS    4 KiB random O_DIRECT reads from /dev/vda at queue depth QD
 *                       (io_uring) for SECS seconds; print "randread qd=QD iops=N"
 *   vsock-echo P        listen on vsock port P, echo one connection until EOF, reboot
 *   vsock-send P N      connect to the host (CID 2) port P, send N pattern bytes
 *                       (byte i = (i * 7 + 3) & 0xff), close, reboot
 *   memory              print "memory ready", then take commands on stdin, one line each:
 *                         fill N     map N MiB and write every page -> "filled N"
 *                         free       unmap what fill mapped         -> "freed"
 *                         hold N     a child maps and writes N MiB and keeps it
 *                                    -> "held N", or "hold failed" if it was killed
 *                         release    ends that child                -> "released"
 *                         exit       reboot
 *
 * Arguments come from the kernel command line after "--". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <dirent.h>
#include <liburing.h>
#include <time.h>
#include <sys/reboot.h>
#include <sys/random.h>
#include <unistd.h>

#define DEBUG_PORT 0x440

static void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static void say(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("husk-test-init: ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

static void do_blk(void) {
    int fd = open("/dev/vda", O_RDONLY);
    if (fd < 0) {
        say("open /dev/vda: %s", strerror(errno));
        return;
    }
    uint64_t h = 1469598103934665603ull, total = 0;
    static unsigned char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; ++i) h = (h ^ buf[i]) * 1099511628211ull;
        total += (uint64_t)n;
    }
    close(fd);
    say("vda bytes=%llu fnv=%016llx", (unsigned long long)total, (unsigned long long)h);

    fd = open("/dev/vdb", O_WRONLY);
    if (fd < 0) {
        say("open /dev/vdb: %s", strerror(errno));
        return;
    }
    uint64_t off = 0;
    for (;;) {
        for (size_t i = 0; i < sizeof buf; ++i) buf[i] = (unsigned char)(((off + i) * 31 + (off + i) / 4096) & 0xff);
        n = write(fd, buf, sizeof buf);
        if (n <= 0) break;
        off += (uint64_t)n;
    }
    fsync(fd);
    close(fd);
    say("vdb written=%llu", (unsigned long long)off);
}

static void do_blk_ro(void) {
    int fd = open("/dev/vda", O_WRONLY);
    if (fd < 0) {
        say("vda write refused at open: %s", strerror(errno));
        return;
    }
    static unsigned char buf[4096];
    ssize_t n = write(fd, buf, sizeof buf);
    int sync_failed = fsync(fd) != 0;
    close(fd);
    if (n < 0 || sync_failed)
        say("vda write refused");
    else
        say("vda write accepted");
}

static uint64_t fnv(const unsigned char* p, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void do_fs(void) {
    mkdir("/mnt", 0755);
    if (mount("husk", "/mnt", "virtiofs", 0, NULL) != 0) {
        say("fs mount failed: %s", strerror(errno));
        return;
    }
    char names[256] = "";
    DIR* d = opendir("/mnt");
    size_t used = 0;
    for (struct dirent* e; d && (e = readdir(d));)
        if (e->d_name[0] != '.' && used < sizeof names - 70)
            used += (size_t)snprintf(names + used, sizeof names - used, " %.64s", e->d_name);
    if (d) closedir(d);
    say("fs root:%s", names);
    char in[128] = "";
    int fd = open("/mnt/rw/in", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, in, sizeof in - 1) : -1;
    if (fd >= 0) close(fd);
    if (n > 0 && in[n - 1] == '\n') in[n - 1] = 0;
    say("fs in: %s", n >= 0 ? in : strerror(errno));
    enum { kSize = 3 << 20 };
    static unsigned char buf[kSize];
    for (size_t i = 0; i < kSize; ++i) buf[i] = (unsigned char)((i * 13 + 7) & 0xff);
    fd = open("/mnt/rw/out", O_WRONLY | O_CREAT | O_TRUNC, 0640);
    if (fd < 0 || write(fd, buf, kSize) != kSize || fsync(fd) != 0) say("fs write failed: %s", strerror(errno));
    if (fd >= 0) close(fd);
    if (mkdir("/mnt/rw/d", 0700) != 0 || rename("/mnt/rw/d", "/mnt/rw/e") != 0) say("fs mkdir/rename: %s", strerror(errno));
    if (link("/mnt/rw/out", "/mnt/rw/hard") != 0 || symlink("out", "/mnt/rw/sym") != 0) say("fs links: %s", strerror(errno));
    memset(buf, 0, kSize);
    fd = open("/mnt/rw/sym", O_RDONLY);
    size_t got = 0;
    while (fd >= 0 && got < kSize && (n = read(fd, buf + got, kSize - got)) > 0) got += (size_t)n;
    if (fd >= 0) close(fd);
    say("fs out bytes=%zu fnv=%016llx", got, (unsigned long long)fnv(buf, got, 1469598103934665603ull));
    fd = open("/mnt/ro/x", O_WRONLY | O_CREAT, 0644);
    say("fs ro create: %s", fd < 0 ? strerror(errno) : "allowed");
    if (fd >= 0) close(fd);
    umount("/mnt");
}

static void do_rng(void) {
    int fd = open("/dev/hwrng", O_RDONLY);
    if (fd < 0) {
        say("open /dev/hwrng: %s", strerror(errno));
        return;
    }
    unsigned char b[64];
    ssize_t n = read(fd, b, sizeof b);
    close(fd);
    char hex[129] = {0};
    for (ssize_t i = 0; i < n && i < 64; ++i) sprintf(hex + 2 * i, "%02x", b[i]);
    say("hwrng %zd bytes %s", n, hex);
}

static void do_vsock_echo(unsigned port) {
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY};
    if (s < 0 || bind(s, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(s, 1) != 0) {
        say("vsock listen: %s", strerror(errno));
        return;
    }
    say("vsock listening on %u", port);
    int c = accept(s, NULL, NULL);
    if (c < 0) {
        say("vsock accept: %s", strerror(errno));
        return;
    }
    static char buf[65536];
    unsigned long long total = 0;
    ssize_t n;
    while ((n = read(c, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(c, buf + off, (size_t)(n - off));
            if (w <= 0) break;
            off += w;
        }
        total += (unsigned long long)n;
    }
    /* The host half-closed first, so there is no end of its to wait for (as
     * vsock-send does): a lingering close returns once husk-vmm, having
     * written everything to the host socket, resets the connection. Without
     * it the reboot below could lose the tail still queued in the guest. */
    struct linger lg = {.l_onoff = 1, .l_linger = 60};
    if (setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0) say("vsock SO_LINGER: %s", strerror(errno));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    close(c);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    close(s);
    say("vsock close took %ld ms", (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
    say("vsock echoed %llu bytes", total);
}

/* Serves one-line commands on a vsock port, one per connection, forever:
 * "write" creates /probe-file (the initramfs root is memory), "check" answers
 * "present|absent <CLOCK_REALTIME seconds> <16 random hex digits>". For
 * snapshot tests: after a reset the file is gone and the clock is sane. */
static void do_vsock_probe(unsigned port) {
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY};
    if (s < 0 || bind(s, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(s, 4) != 0) {
        say("vsock listen: %s", strerror(errno));
        return;
    }
    say("vsock probe listening on %u", port);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) {
            say("vsock probe accept: %s", strerror(errno));
            continue;
        }
        say("vsock probe: accepted");
        char cmd[64] = {0};
        ssize_t n = read(c, cmd, sizeof cmd - 1);
        say("vsock probe: read %zd", n);
        char reply[128];
        if (n > 0 && strncmp(cmd, "write", 5) == 0) {
            int fd = open("/probe-file", O_WRONLY | O_CREAT | O_TRUNC, 0644);
            snprintf(reply, sizeof reply, "%s\n", fd >= 0 ? "written" : strerror(errno));
            if (fd >= 0) close(fd);
        } else {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            unsigned long long r = 0;
            if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = 0;
            snprintf(reply, sizeof reply, "%s %lld %016llx\n", access("/probe-file", F_OK) == 0 ? "present" : "absent",
                     (long long)now.tv_sec, r);
        }
        ssize_t w = write(c, reply, strlen(reply));
        (void)w;
        close(c);
    }
}

static void do_vsock_send(unsigned port, unsigned long long bytes) {
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_HOST};
    if (s < 0 || connect(s, (struct sockaddr*)&addr, sizeof addr) != 0) {
        say("vsock connect: %s", strerror(errno));
        return;
    }
    static unsigned char buf[65536];
    unsigned long long sent = 0;
    while (sent < bytes) {
        size_t n = sizeof buf;
        if (bytes - sent < n) n = (size_t)(bytes - sent);
        for (size_t i = 0; i < n; ++i) buf[i] = (unsigned char)(((sent + i) * 7 + 3) & 0xff);
        ssize_t w = write(s, buf, n);
        if (w <= 0) break;
        sent += (unsigned long long)w;
    }
    /* close() does not wait for queued data to leave the guest; a reboot right
     * after it could lose the tail. Half-close and wait for the host's end. */
    shutdown(s, SHUT_WR);
    struct pollfd p = {.fd = s, .events = POLLIN};
    char sink[256];
    while (poll(&p, 1, 10000) > 0 && read(s, sink, sizeof sink) > 0) {
    }
    close(s);
    say("vsock sent %llu bytes", sent);
}

static unsigned short icmp_checksum(const void* data, size_t len) {
    const unsigned short* p = data;
    unsigned long sum = 0;
    for (; len > 1; len -= 2) sum += *p++;
    if (len) sum += *(const unsigned char*)p;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (unsigned short)~sum;
}

static void do_ping(const char* ip) {
    int s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (s < 0) {
        say("ping socket: %s", strerror(errno));
        return;
    }
    struct sockaddr_in to = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &to.sin_addr);
    for (int seq = 1; seq <= 20; ++seq) {
        struct icmphdr req = {.type = ICMP_ECHO};
        req.un.echo.id = 0x4855;
        req.un.echo.sequence = (unsigned short)seq;
        req.checksum = icmp_checksum(&req, sizeof req);
        sendto(s, &req, sizeof req, 0, (struct sockaddr*)&to, sizeof to);
        struct pollfd p = {.fd = s, .events = POLLIN};
        while (poll(&p, 1, 1000) > 0) {
            unsigned char buf[1500];
            ssize_t n = recv(s, buf, sizeof buf, 0);
            if (n < (ssize_t)(sizeof(struct iphdr) + sizeof(struct icmphdr))) continue;
            struct iphdr* iph = (struct iphdr*)buf;
            struct icmphdr* rep = (struct icmphdr*)(buf + iph->ihl * 4);
            if (rep->type == ICMP_ECHOREPLY && rep->un.echo.id == 0x4855) {
                say("ping reply from %s (seq %d)", ip, seq);
                close(s);
                return;
            }
        }
    }
    say("ping: no reply from %s", ip);
    close(s);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void do_randread(int qd, int secs) {
    int fd = open("/dev/vda", O_RDONLY | O_DIRECT);
    if (fd < 0) {
        say("randread open: %s", strerror(errno));
        return;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    unsigned long long blocks = (unsigned long long)size / 4096, x = 88172645463325252ull, done = 0;
    if (qd < 1) qd = 1;
    if (qd > 256) qd = 256;
    struct io_uring ring;
    if (io_uring_queue_init((unsigned)qd, &ring, 0) != 0) {
        say("randread: io_uring_queue_init failed");
        return;
    }
    static char bufs[256][4096] __attribute__((aligned(4096)));
    double start = now_s(), end = start + secs;
    for (int i = 0; i < qd; ++i) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        struct io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        io_uring_prep_read(sqe, fd, bufs[i], 4096, (off_t)((x % blocks) * 4096));
        sqe->user_data = (unsigned long long)i;
    }
    io_uring_submit(&ring);
    int inflight = qd;
    while (inflight > 0) {
        struct io_uring_cqe* cqe;
        if (io_uring_wait_cqe(&ring, &cqe) != 0) break;
        int slot = (int)cqe->user_data;
        if (cqe->res != 4096) {
            say("randread: read returned %d", cqe->res);
            break;
        }
        io_uring_cqe_seen(&ring, cqe);
        ++done;
        --inflight;
        if (now_s() < end) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            struct io_uring_sqe* sqe = io_uring_get_sqe(&ring);
            io_uring_prep_read(sqe, fd, bufs[slot], 4096, (off_t)((x % blocks) * 4096));
            sqe->user_data = (unsigned long long)slot;
            io_uring_submit(&ring);
            ++inflight;
        }
    }
    double elapsed = now_s() - start;
    io_uring_queue_exit(&ring);
    close(fd);
    say("randread qd=%d iops=%.0f reads=%llu seconds=%.2f", qd, (double)done / elapsed, done, elapsed);
}

static void do_memory(void) {
    say("memory ready");
    char line[64];
    char* filled = NULL;
    size_t filled_bytes = 0;
    pid_t holder = -1;
    while (fgets(line, sizeof line, stdin)) {
        unsigned long mib = 0;
        if (sscanf(line, "fill %lu", &mib) == 1) {
            filled_bytes = mib << 20;
            filled = mmap(NULL, filled_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (filled == MAP_FAILED) {
                say("fill failed: %s", strerror(errno));
                filled = NULL;
                continue;
            }
            for (size_t off = 0; off < filled_bytes; off += 4096) filled[off] = 1;
            say("filled %lu", mib);
        } else if (strncmp(line, "free", 4) == 0) {
            if (filled) munmap(filled, filled_bytes);
            filled = NULL;
            say("freed");
        } else if (sscanf(line, "hold %lu", &mib) == 1) {
            int fds[2];
            if (pipe(fds) != 0) continue;
            holder = fork();
            if (holder == 0) {
                char* p = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (p == MAP_FAILED) _exit(1);
                for (size_t off = 0; off < (mib << 20); off += 4096) p[off] = 1;
                if (write(fds[1], "x", 1) != 1) _exit(1);
                for (;;) pause();
            }
            close(fds[1]);
            char c;
            if (holder > 0 && read(fds[0], &c, 1) == 1)
                say("held %lu", mib);
            else
                say("hold failed");
            close(fds[0]);
        } else if (strncmp(line, "release", 7) == 0) {
            if (holder > 0) kill(holder, SIGKILL), waitpid(holder, NULL, 0);
            holder = -1;
            say("released");
        } else if (strncmp(line, "exit", 4) == 0) {
            return;
        }
    }
}

static void debug_exit(int status) {
    outb((unsigned char)status, DEBUG_PORT + 1);
    for (;;) pause();
}

int main(int argc, char** argv) {
    if (ioperm(DEBUG_PORT, 2, 1) != 0) {
        perror("husk-test-init: ioperm");
        return 1;
    }
    outb(1, DEBUG_PORT); /* boot timer: init reached */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("husk-test-init: init reached, %ld cpus online\n", cpus);
    fflush(stdout);

    mkdir("/dev", 0755);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    const char* action = "reboot";
    int status = 0;
    unsigned long long vsock_bytes = 0;
    const char* ping_target = NULL;
    for (int i = 1; i < argc; ++i) {
        if (strncmp(argv[i], "cpus=", 5) == 0) {
            long want = atol(argv[i] + 5);
            if (want != cpus) {
                printf("husk-test-init: expected %ld cpus\n", want);
                fflush(stdout);
                debug_exit(9);
            }
        } else if (strcmp(argv[i], "randread") == 0 && i + 2 < argc) {
            action = "randread";
            status = atoi(argv[++i]);
            vsock_bytes = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "ping") == 0 && i + 1 < argc) {
            action = "ping";
            ping_target = argv[++i];
        } else if (strcmp(argv[i], "vsock-echo") == 0 && i + 1 < argc) {
            action = "vsock-echo";
            status = atoi(argv[++i]);
        } else if (strcmp(argv[i], "vsock-probe") == 0 && i + 1 < argc) {
            action = argv[i];
            status = atoi(argv[++i]);
        } else if (strcmp(argv[i], "vsock-send") == 0 && i + 2 < argc) {
            action = "vsock-send";
            status = atoi(argv[++i]);
            vsock_bytes = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "exit") == 0 && i + 1 < argc) {
            action = "exit";
            status = atoi(argv[++i]);
        } else {
            action = argv[i];
        }
    }
    if (strcmp(action, "blk") == 0) do_blk();
    if (strcmp(action, "blk-ro") == 0) do_blk_ro();
    if (strcmp(action, "rng") == 0) do_rng();
    if (strcmp(action, "fs") == 0) do_fs();
    if (strcmp(action, "ping") == 0) do_ping(ping_target), action = "reboot";
    if (strcmp(action, "randread") == 0) do_randread(status, (int)vsock_bytes), status = 0, action = "reboot";
    if (strcmp(action, "vsock-echo") == 0) do_vsock_echo((unsigned)status);
    if (strcmp(action, "vsock-send") == 0) do_vsock_send((unsigned)status, vsock_bytes);
    if (strcmp(action, "vsock-probe") == 0) do_vsock_probe((unsigned)status);
    if (strcmp(action, "memory") == 0) do_memory(), action = "reboot";
    if (strncmp(action, "vsock", 5) == 0) status = 0, action = "reboot";
    sync();
    if (strcmp(action, "exit") == 0) debug_exit(status);
    if (strcmp(action, "panic") == 0) return 3;
    if (strcmp(action, "poweroff") == 0) reboot(RB_POWER_OFF);
    reboot(RB_AUTOBOOT);
    return 1;
}
