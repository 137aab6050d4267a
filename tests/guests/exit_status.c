/* Asks the VMM to exit with status 42. */
#include "guest.h"

int guest_main(void) {
    puts("exiting with 42\n");
    return 42;
}
