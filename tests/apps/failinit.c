/* failinit.c - a test app whose init() fails. */
#include "cessna.h"

static int init(void) { return 7; }
static void ignore(const void *data, size_t len) { (void)data; (void)len; }

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "failinit",
    .init = init,
    .recv_client_msg = ignore,
    .recv_server_msg = ignore,
};
