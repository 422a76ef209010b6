/* crashy.c - a test app: passthrough, except that a client message "CRASH" makes it
 * dereference NULL (a deterministic bug). */
#include <string.h>
#include "cessna.h"

static void on_client(const void *data, size_t len)
{
    if (len == 5 && memcmp(data, "CRASH", 5) == 0)
        *(volatile int *)0 = 1;
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
