/* passthrough.c - the smallest CESSNA app: a transparent relay.
 *
 * Every client message goes to the server and every server message to the client,
 * unchanged. It keeps no state, so its snapshots hold nothing but the runtime's own.
 *
 * Build: cc -shared -fPIC -I include passthrough.c -o passthrough.so
 */
#include "cessna.h"

static void recv_client_msg(const void *data, size_t len)
{
    cessna_send_msg_to_server(data, len);
}

static void recv_server_msg(const void *data, size_t len)
{
    cessna_send_msg_to_client(data, len);
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "passthrough",
    .recv_client_msg = recv_client_msg,
    .recv_server_msg = recv_server_msg,
};
