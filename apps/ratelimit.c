/* ratelimit.c - a token bucket per session in front of redis.
 *
 * Run both proxies with --framing resp: then every client message is one Redis command and
 * every server message one reply. A command takes a token and goes to redis; with no token
 * left it waits in a queue, released by a timer as tokens come back; with the queue full it
 * is refused with the RESP error "-ERR rate limited". The bucket starts full.
 *
 * A client pairs replies with its commands by their order, so a refusal waits for the
 * replies to the commands before it: every command not answered yet stays in one list, in
 * order (sent ones until their reply, waiting ones until a token, refused ones until their
 * turn). A client that keeps sending while redis does not answer fills the session's memory
 * (max_session_memory) and gets its session closed.
 *
 * [app] keys: rate_per_s (tokens back per second, default 100), burst (the bucket's size,
 * default 10), queue (commands waiting for a token at most, default 100).
 *
 * Build: cc -shared -fPIC -I include ratelimit.c -o ratelimit.so
 */
#include <string.h>

#include "cessna.h"

#define REFUSED "-ERR rate limited\r\n"

struct cmd { struct cmd *next; int refused; size_t len; char data[]; };   /* in the arena */

static long long rate, burst, qmax;    /* from [app] */
static long long milli, queued;        /* tokens in the bucket x 1000; commands waiting */
static uint64_t refilled_ms, timer;
static struct cmd *head, *tail;        /* every command not answered yet, oldest first */
static struct cmd *waiting;            /* the first one waiting for a token (never a refused one) */

static int init(void)
{
    rate = cessna_config_int("rate_per_s", 100);
    burst = cessna_config_int("burst", 10);
    qmax = cessna_config_int("queue", 100);
    if (rate < 1 || burst < 1 || qmax < 0) {
        cessna_log(CESSNA_LOG_ERROR, "bad [app] rate_per_s, burst or queue");
        return -1;
    }
    milli = burst * 1000;
    refilled_ms = cessna_now_ms();
    return 0;
}

static void release(void *arg);

/* Refill by the time passed, send the waiting commands the tokens allow, and wake up when
 * the next token is due. */
static void pump(void)
{
    milli += (long long)(cessna_now_ms() - refilled_ms) * rate;   /* ms x tokens/s */
    if (milli > burst * 1000)
        milli = burst * 1000;
    refilled_ms = cessna_now_ms();
    while (waiting && milli >= 1000) {
        cessna_send_msg_to_server(waiting->data, waiting->len);
        milli -= 1000;
        queued--;
        do
            waiting = waiting->next;
        while (waiting && waiting->refused);
    }
    if (waiting && !timer)
        timer = cessna_set_timeout(release, NULL, (uint64_t)((1000 - milli + rate - 1) / rate));
}

static void release(void *arg)
{
    (void)arg;
    timer = 0;
    pump();
}

/* The oldest command was answered: forget it, then answer the refused ones behind it. */
static void answered(void)
{
    for (int behind = 0; head && (!behind || head->refused); behind = 1) {
        struct cmd *c = head;
        if (behind)
            cessna_send_msg_to_client(REFUSED, strlen(REFUSED));
        if (!(head = c->next))
            tail = NULL;
        cessna_free(c);
    }
}

static void recv_client_msg(const void *data, size_t len)
{
    pump();                                    /* the queue moves first: it came first */
    int refused = queued >= qmax && milli < 1000;   /* no token now, no room to wait */
    struct cmd *c = cessna_malloc(sizeof(*c) + (refused ? 0 : len));
    if (!c) {
        cessna_close_session(1, "out of memory for waiting commands");
        return;
    }
    *c = (struct cmd){ .refused = refused, .len = refused ? 0 : len };
    memcpy(c->data, data, c->len);
    *(tail ? &tail->next : &head) = c;
    tail = c;
    if (c->refused && c == head) {             /* nothing before it: refused at once */
        cessna_send_msg_to_client(REFUSED, strlen(REFUSED));
        answered();
    } else if (!c->refused) {
        queued++;
        if (!waiting)
            waiting = c;
        pump();
    }
}

static void recv_server_msg(const void *data, size_t len)
{
    cessna_send_msg_to_client(data, len);
    if (head && head != waiting)               /* the reply to the oldest command sent */
        answered();
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "ratelimit",
    .init = init,
    .recv_client_msg = recv_client_msg,
    .recv_server_msg = recv_server_msg,
};
