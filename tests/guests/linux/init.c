/* A tiny PID 1 for boot tests of the Linux guest: marks the boot timer,
 * reports the CPU count, then does what its arguments say:
 *
 *   (none) | reboot     reboot (husk-vmm exits 0)
 *   poweroff            power off (husk-vmm exits 0)
 *   panic               exit, so the kernel panics (husk-vmm exits 2)
 *   exit N              exit the VM with status N through the debug port
 *   cpus=N              first check that N CPUs are online (else exit status 9)
 *
 * Arguments come from the kernel command line after "--". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/reboot.h>
#include <unistd.h>

#define DEBUG_PORT 0x440

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

    const char* action = "reboot";
    int status = 0;
    for (int i = 1; i < argc; ++i) {
        if (strncmp(argv[i], "cpus=", 5) == 0) {
            long want = atol(argv[i] + 5);
            if (want != cpus) {
                printf("husk-test-init: expected %ld cpus\n", want);
                fflush(stdout);
                debug_exit(9);
            }
        } else if (strcmp(argv[i], "exit") == 0 && i + 1 < argc) {
            action = "exit";
            status = atoi(argv[++i]);
        } else {
            action = argv[i];
        }
    }
    sync();
    if (strcmp(action, "exit") == 0) debug_exit(status);
    if (strcmp(action, "panic") == 0) return 3;
    if (strcmp(action, "poweroff") == 0) reboot(RB_POWER_OFF);
    reboot(RB_AUTOBOOT);
    return 1;
}
