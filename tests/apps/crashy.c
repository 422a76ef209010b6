/* crashy.c - a test app: passthrough, except that a client message "CRASH" makes it
 * dereference NULL (a deterministic bug), and so does "CACHE NAME" when the cache object
 * NAME holds "boom" (a crash that only a replay with the same cache finds). */
#include <string.h>
#include "cessna.h"

static void on_client(const void *data, size_t len)
{
    if (len == 5 && memcmp(data, "CRASH", 5) == 0)
        *(volatile int *)0 = 1;
    if (len > 6 && len < 64 && memcmp(data, "CACHE ", 6) == 0) {
        char name[64];
        size_t n;
        memcpy(name, (const char *)data + 6, len - 6);
        name[len - 6] = 0;
        const char *c = cessna_cache_read(name, &n);
        if (c && n == 4 && memcmp(c, "boom", 4) == 0)
            *(volatile int *)0 = 1;
    }
    cessna_send_msg_to_server(data, len);
}

static void on_server(const void *data, size_t len)
{
    cessna_send_msg_to_client(data, len);
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "crashy",
    .recv_client_msg = on_client,
    .recv_server_msg = on_server,
};
