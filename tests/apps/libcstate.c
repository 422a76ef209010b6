/* libcstate.c - a test app that keeps its state the ordinary way: malloc, realloc, strdup,
 * time(), clock_gettime(), rand(), getrandom(). Under CESSNA every one of them must be
 * deterministic (docs/determinism.md), so its answers survive any number of worker kills.
 *
 * Every client message gets one answer "STATE|CHAIN":
 *   STATE  the same in every run of the same messages: a counter and a list in malloc memory,
 *          the last message (strdup), a history buffer grown with realloc, rand() draws after
 *          srand(7), and how far each libc clock is from the event's time (0 when virtualized).
 *   CHAIN  "prev->cur": a running hash of getrandom() and random() draws, seeded by the
 *          session. A replay that drew other numbers breaks the chain: the next answer's
 *          prev differs from the last answer's cur.
 * Commands: "HOG" allocates 1 MiB blocks (at most 64) until malloc fails and answers how
 * many it got; "FREE" frees them; "CACHE NAME" answers the cache object's content. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>

#include "cessna.h"

struct node {
    struct node *next;
    char *text;              /* strdup */
    long value;
};

struct state {
    long *counter;           /* a separate malloc block */
    struct node *head;
    char *last;
    char *hist;              /* grows with realloc */
    size_t hist_len;
    time_t t0;
    uint64_t chain;
    void *hog[64];
    int nhog;
};

static struct state state;  /* the only static: the rest is in malloc memory */
static struct state *const S = &state;

static int init(void)
{
    S->counter = malloc(sizeof(long));
    if (!S->counter)
        return -1;
    *S->counter = 0;
    S->t0 = time(NULL);
    srand(7);
    getrandom(&S->chain, sizeof(S->chain), 0);
    return 0;
}

/* How far each clock is from the event's time (sub-millisecond digits count too): all 0
 * when the clocks are the event's. */
static void clock_offsets(char *buf, size_t len)
{
    int64_t now = (int64_t)cessna_now_ms();
    struct timespec rt, mono;
    struct timeval tv;
    time_t t = time(NULL);

    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    gettimeofday(&tv, NULL);
    snprintf(buf, len, "time=%lld rt_ns=%lld tod_us=%lld mono_subms=%ld t0_past=%d",
             (long long)(t - (time_t)(now / 1000)),
             (long long)((int64_t)rt.tv_sec * 1000000000 + rt.tv_nsec - now * 1000000),
             (long long)(((int64_t)tv.tv_sec * 1000000 + tv.tv_usec) - now * 1000),
             mono.tv_nsec % 1000000, S->t0 <= (time_t)(now / 1000));
}

static void reply(const char *state)
{
    uint64_t prev = S->chain, r;
    char out[1024];

    getrandom(&r, sizeof(r), 0);
    S->chain = (S->chain ^ r) * 0x100000001b3ull ^ (uint64_t)random();
    int n = snprintf(out, sizeof(out), "%s|%016llx->%016llx", state, (unsigned long long)prev,
                     (unsigned long long)S->chain);
    cessna_send_msg_to_client(out, (size_t)n);
}

static void on_client(const void *data, size_t len)
{
    char msg[256], state[900], clocks[200];

    if (len >= sizeof(msg))
        len = sizeof(msg) - 1;
    memcpy(msg, data, len);
    msg[len] = 0;

    if (strcmp(msg, "HOG") == 0) {
        int got = 0;
        while (S->nhog < 64) {
            void *p = malloc(1u << 20);
            if (!p)
                break;
            S->hog[S->nhog++] = p;
            got++;
        }
        snprintf(state, sizeof(state), "hog=%d held=%d", got, S->nhog);
        reply(state);
        return;
    }
    if (strcmp(msg, "FREE") == 0) {
        while (S->nhog)
            free(S->hog[--S->nhog]);
        reply("freed");
        return;
    }
    if (strncmp(msg, "CACHE ", 6) == 0) {
        size_t clen = 0;
        const char *c = cessna_cache_read(msg + 6, &clen);
        snprintf(state, sizeof(state), "cache=%.*s", c ? (int)clen : 4, c ? c : "miss");
        reply(state);
        return;
    }

    /* The ordinary state: a counter, a list with strdup'd text, a realloc'd history. */
    ++*S->counter;
    struct node *nd = malloc(sizeof(*nd));
    if (!nd)
        return;
    nd->text = strdup(msg);
    nd->value = rand() % 1000;
    nd->next = S->head;
    S->head = nd;
    free(S->last);
    S->last = strdup(msg);
    char *h = realloc(S->hist, S->hist_len + len + 2);
    if (!h)
        return;
    S->hist = h;
    memcpy(S->hist + S->hist_len, msg, len);
    S->hist_len += len;
    S->hist[S->hist_len++] = ';';
    S->hist[S->hist_len] = 0;

    long count = 0, sum = 0;
    size_t textlen = 0;
    for (struct node *p = S->head; p; p = p->next) {
        count++;
        sum += p->value;
        textlen += strlen(p->text);
    }
    uint64_t hh = 1469598103934665603ull;
    for (size_t i = 0; i < S->hist_len; i++)
        hh = (hh ^ (unsigned char)S->hist[i]) * 0x100000001b3ull;
    clock_offsets(clocks, sizeof(clocks));
    snprintf(state, sizeof(state), "n=%ld list=%ld sum=%ld text=%zu hist=%zu/%016llx rand=%d "
             "last=%s %s", *S->counter, count, sum, textlen, S->hist_len,
             (unsigned long long)hh, rand() % 100000, S->last, clocks);
    reply(state);
}

static void on_server(const void *data, size_t len)
{
    (void)data;
    (void)len;
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "libcstate",
    .init = init,
    .recv_client_msg = on_client,
    .recv_server_msg = on_server,
};
