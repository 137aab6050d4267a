// husk-dns-query NAME [udp|tcp]: asks the first nameserver of
// /etc/resolv.conf for NAME's IPv4 address and prints it, or the answer's
// RCODE. The rig tests run it inside containers under runc and husk alike:
// busybox's own resolver is glibc's, which a static busybox cannot use (NSS).
// Static, no resolver library: the query and the answer are read by hand.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int nameserver(struct in_addr* out) {
    FILE* f = fopen("/etc/resolv.conf", "r");
    if (!f) return -1;
    char line[512], addr[64];
    int found = -1;
    while (found < 0 && fgets(line, sizeof line, f))
        if (sscanf(line, " nameserver %63s", addr) == 1 && inet_pton(AF_INET, addr, out) == 1) found = 0;
    fclose(f);
    return found;
}

// Skips a (possibly compressed) name at `at`; the offset after it, or -1.
static int skip_name(const unsigned char* m, int len, int at) {
    while (at < len) {
        if ((m[at] & 0xc0) == 0xc0) return at + 2 <= len ? at + 2 : -1;
        if (m[at] == 0) return at + 1;
        at += 1 + m[at];
    }
    return -1;
}

static int exchange(int tcp, struct sockaddr_in* to, const unsigned char* q, int qlen, unsigned char* a, int cap) {
    int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr*)to, sizeof *to) < 0) return close(fd), -1;
    int n;
    if (!tcp) {
        if (send(fd, q, qlen, 0) != qlen) return close(fd), -1;
        n = (int)recv(fd, a, cap, 0);
    } else {
        unsigned char framed[514] = {(unsigned char)(qlen >> 8), (unsigned char)qlen};
        memcpy(framed + 2, q, qlen);
        if (send(fd, framed, qlen + 2, 0) != qlen + 2) return close(fd), -1;
        unsigned char l[2];
        if (recv(fd, l, 2, MSG_WAITALL) != 2) return close(fd), -1;
        n = l[0] << 8 | l[1];
        if (n > cap || recv(fd, a, n, MSG_WAITALL) != n) n = -1;
    }
    close(fd);
    return n;
}

int main(int argc, char** argv) {
    if (argc < 2 || strlen(argv[1]) > 200) {
        fprintf(stderr, "usage: husk-dns-query NAME [udp|tcp]\n");
        return 2;
    }
    int tcp = argc > 2 && strcmp(argv[2], "tcp") == 0;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(53)};
    if (nameserver(&to.sin_addr) < 0) {
        fprintf(stderr, "husk-dns-query: no IPv4 nameserver in /etc/resolv.conf\n");
        return 2;
    }
    unsigned char q[512] = {0x4b, 0x1d, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    int at = 12;
    for (const char* label = argv[1]; *label;) {
        const char* dot = strchr(label, '.');
        int n = dot ? (int)(dot - label) : (int)strlen(label);
        if (n == 0 || n > 63) return 2;
        q[at++] = (unsigned char)n;
        memcpy(q + at, label, n);
        at += n;
        label += n + (dot ? 1 : 0);
    }
    q[at++] = 0;
    q[at++] = 0, q[at++] = 1;  // A
    q[at++] = 0, q[at++] = 1;  // IN
    unsigned char a[4096];
    int n = exchange(tcp, &to, q, at, a, sizeof a);
    if (n < 12 || a[0] != q[0] || a[1] != q[1]) {
        printf("no answer\n");
        return 1;
    }
    if (a[3] & 0x0f) {
        printf("rcode %d\n", a[3] & 0x0f);
        return 1;
    }
    int answers = a[6] << 8 | a[7], p = skip_name(a, n, 12);
    p = p < 0 ? -1 : p + 4;
    for (int i = 0; i < answers && p >= 0 && p < n; ++i) {
        p = skip_name(a, n, p);
        if (p < 0 || p + 10 > n) break;
        int type = a[p] << 8 | a[p + 1], rdlen = a[p + 8] << 8 | a[p + 9];
        p += 10;
        if (p + rdlen > n) break;
        if (type == 1 && rdlen == 4) {
            printf("%d.%d.%d.%d\n", a[p], a[p + 1], a[p + 2], a[p + 3]);
            return 0;
        }
        p += rdlen;
    }
    printf("no address\n");
    return 1;
}
