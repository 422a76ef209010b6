/* hog.c - a test app that misbehaves on request, for the watchdog and the OOM tests.
 * Every client message is echoed to the client, except:
 *   "SPIN"        loop for ever inside the event
 *   "HOG <MiB>"   allocate and touch that much memory, 1 MiB at a time, keeping it
 * Build: cc -shared -fPIC -I include hog.c -o hog.so */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cessna.h"

static volatile uint64_t spins;

static void recv_client_msg(const void *data, size_t len)
{
    if (len == 4 && memcmp(data, "SPIN", 4) == 0) {
        for (;;)
            spins++;
    }
    if (len > 4 && memcmp(data, "HOG ", 4) == 0) {
        char num[16] = { 0 };
        memcpy(num, (const char *)data + 4, len - 4 < 15 ? len - 4 : 15);
        long mib = atol(num);
        for (long i = 0; i < mib; i++) {
            char *p = cessna_malloc(1 << 20);
            if (!p) {
                cessna_send_msg_to_client("HOG refused", 11);
                return;
            }
            memset(p, (int)i, 1 << 20);
        }
        cessna_send_msg_to_client("HOG done", 8);
        return;
    }
    cessna_send_msg_to_client(data, len);
}

static void recv_server_msg(const void *data, size_t len)
{
    (void)data;
    (void)len;
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "hog",
    .recv_client_msg = recv_client_msg,
    .recv_server_msg = recv_server_msg,
};
