/* sequencer.c - an app whose every output depends on the exact event order.
 *
 * It counts the messages seen from each side and keeps a running 64-bit FNV-1a hash over
 * every byte seen from both, each message preceded by a source tag. Every message is
 * forwarded with a header holding the state right after it:
 *
 *     client -> server:  "[c=3 s=2 h=0123456789abcdef]\n" + message
 *     server -> client:  the same header + message
 *
 * So if a recovery replayed events in another order, or lost or repeated one, the headers
 * would show it. Client messages are also commands (they are forwarded all the same):
 *
 *     "TICK <ms>"  arm a timer; when it fires, "TOCK <n>\n" goes to the client, n being
 *                  the number of tocks so far (timer firings are ordered events too)
 *     "CANCEL"     cancel the most recently armed timer still pending; answers
 *                  "CANCEL ok\n" or "CANCEL none\n" to the client
 *     "RAND"       answers "RAND <16 hex digits>\n" from the session's deterministic PRNG
 *     "BIG <n>"    answers n bytes (at most 65536) drawn from the same PRNG: a way to make
 *                  a lot of output for a reader that falls behind
 *
 * No output depends on wall time. Pending timers are a list in the arena.
 *
 * Build: cc -shared -fPIC -I include sequencer.c -o sequencer.so
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cessna.h"

struct tick {                          /* one pending timer, in the arena */
    uint64_t id;
    struct tick *next;                 /* older pending timers */
};

static uint64_t nclient, nserver, ntocks;
static uint64_t hash = 0xcbf29ce484222325ull;   /* FNV-1a offset basis */
static struct tick *pending;                     /* newest first */

static void mix(const void *data, size_t len, unsigned char tag)
{
    const unsigned char *p = data;
    uint64_t h = hash;

    h = (h ^ tag) * 0x100000001b3ull;            /* FNV-1a prime */
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    hash = h;
}

/* Send header + message in one output. */
static void forward(int to_server, const void *data, size_t len)
{
    char hdr[96];
    int n = snprintf(hdr, sizeof(hdr), "[c=%" PRIu64 " s=%" PRIu64 " h=%016" PRIx64 "]\n",
                     nclient, nserver, hash);
    char *buf = cessna_malloc((size_t)n + len);
    if (!buf)
        return;
    memcpy(buf, hdr, (size_t)n);
    memcpy(buf + n, data, len);
    if (to_server)
        cessna_send_msg_to_server(buf, (size_t)n + len);
    else
        cessna_send_msg_to_client(buf, (size_t)n + len);
    cessna_free(buf);
}

static void reply(const char *text)
{
    cessna_send_msg_to_client(text, strlen(text));
}

static void on_tock(void *arg)
{
    struct tick *t = arg, **pp;
    char msg[48];

    for (pp = &pending; *pp; pp = &(*pp)->next)  /* unlink it */
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    cessna_free(t);
    snprintf(msg, sizeof(msg), "TOCK %" PRIu64 "\n", ++ntocks);
    reply(msg);
}

static void command(const char *data, size_t len)
{
    char line[32];

    /* Messages are bytes, not strings: copy a bounded, terminated prefix. */
    if (len >= sizeof(line))
        len = sizeof(line) - 1;
    memcpy(line, data, len);
    line[len] = 0;

    if (strncmp(line, "TICK ", 5) == 0) {
        char *end;
        uint64_t ms = strtoull(line + 5, &end, 10);
        if (end == line + 5)
            return;
        struct tick *t = cessna_malloc(sizeof(*t));
        if (!t)
            return;
        t->id = cessna_set_timeout(on_tock, t, ms);
        if (!t->id) {                            /* timer table full */
            cessna_free(t);
            return;
        }
        t->next = pending;
        pending = t;
    } else if (strncmp(line, "CANCEL", 6) == 0) {
        struct tick *t = pending;
        if (t && cessna_cancel_timeout(t->id) == 0) {
            pending = t->next;
            cessna_free(t);
            reply("CANCEL ok\n");
        } else {
            reply("CANCEL none\n");
        }
    } else if (strncmp(line, "BIG ", 4) == 0) {
        uint64_t n = strtoull(line + 4, NULL, 10);
        if (n > 65536)
            n = 65536;
        uint64_t *buf = cessna_malloc((n + 7) & ~7ull);
        if (!buf)
            return;
        for (uint64_t i = 0; i < (n + 7) / 8; i++)
            buf[i] = cessna_random();
        cessna_send_msg_to_client(buf, n);
        cessna_free(buf);
    } else if (strncmp(line, "RAND", 4) == 0) {
        char msg[32];
        snprintf(msg, sizeof(msg), "RAND %016" PRIx64 "\n", cessna_random());
        reply(msg);
    }
}

static void recv_client_msg(const void *data, size_t len)
{
    nclient++;
    mix(data, len, 'c');
    forward(1, data, len);
    command(data, len);
}

static void recv_server_msg(const void *data, size_t len)
{
    nserver++;
    mix(data, len, 's');
    forward(0, data, len);
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "sequencer",
    .recv_client_msg = recv_client_msg,
    .recv_server_msg = recv_server_msg,
};
