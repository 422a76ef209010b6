/* framecount.c - a test app that shows how the proxies cut messages (tests/it_framing.c).
 *
 * Every client message goes to the server unchanged and its length is queued. Every server
 * message goes to the client after a header naming it and the client message it answers:
 *
 *     "#<n> c=<length of the oldest unanswered client message> s=<its length>\n" + message
 *
 * So one message per frame on both sides shows in the lengths: a frame cut in two, or two
 * frames merged, changes them. Lengths wait in a ring in static memory (part of snapshots).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cessna.h"

#define QUEUE 65536

static uint32_t queued[QUEUE];
static uint64_t head, tail, nserver;

static void recv_client_msg(const void *data, size_t len)
{
    if (tail - head < QUEUE)
        queued[tail++ % QUEUE] = (uint32_t)len;
    cessna_send_msg_to_server(data, len);
}

static void recv_server_msg(const void *data, size_t len)
{
    uint32_t c = head < tail ? queued[head++ % QUEUE] : 0;
    char hdr[80];
    int n = snprintf(hdr, sizeof(hdr), "#%" PRIu64 " c=%u s=%zu\n", ++nserver, c, len);
    char *out = cessna_malloc((size_t)n + len + 1);

    if (!out)
        return;
    memcpy(out, hdr, (size_t)n);
    memcpy(out + n, data, len);
    cessna_send_msg_to_client(out, (size_t)n + len);
    cessna_free(out);
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "framecount",
    .recv_client_msg = recv_client_msg,
    .recv_server_msg = recv_server_msg,
};
