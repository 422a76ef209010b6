/* it_bigmsg.c - integration: messages larger than a ring record cross the worker's rings
 * in pieces, both ways, with rings of a fixed size (ring_bytes), whatever max_message_bytes
 * is: byte-exact echoes around the piece boundary and up to 8 MiB, workers killed while
 * large messages are in flight (cold and hot standby), and the memory a worker keeps. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "ring.h"
#include "shm.h"
#include "t_helpers.h"

TestSuite(bigmsg, .timeout = 120);

/* The ringbreaker app reads /proc/self/maps, which a sandboxed worker may not. */
#define RINGBREAKER_CONFIG "sandbox = off\n"

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

    nanosleep(&ts, NULL);
}

/* ---- a server endpoint echoing messages up to max bytes --------------------------------- */

struct big_srv {
    int lfd;
    size_t max;
    char addr[64];
};

static void *big_echo(void *p)
{
    struct cessna_ep *ep = p;
    const void *msg;
    long n;

    while ((n = cessna_ep_recv(ep, &msg)) >= 0)
        if (cessna_ep_send(ep, msg, (size_t)n) < 0)
            break;
    cessna_ep_free(ep);
    return NULL;
}

static void *big_accept(void *p)
{
    struct big_srv *s = p;
    char err[256];

    for (;;) {
        struct cessna_ep *ep = cessna_ep_accept(s->lfd, err, sizeof(err));
        pthread_t t;
        if (!ep)
            continue;
        cessna_ep_set_max_message(ep, s->max);
        pthread_create(&t, NULL, big_echo, ep);
        pthread_detach(t);
    }
    return NULL;
}

static void big_srv_start(struct big_srv *s, size_t max)
{
    char err[256];
    pthread_t t;

    s->max = max;
    s->lfd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));
    if (s->lfd < 0)
        cr_assert_fail("cessna_ep_listen: %s", err);
    snprintf(s->addr, sizeof(s->addr), "127.0.0.1:%d", addr_local_port(s->lfd));
    pthread_create(&t, NULL, big_accept, s);
    pthread_detach(t);
}

static struct cessna_ep *connect_big(const struct t_edge *e, size_t max)
{
    struct cessna_ep *ep = t_ep_connect(e);

    cessna_ep_set_max_message(ep, max);
    return ep;
}

/* Message i of len bytes: its index, then a pattern derived from it. */
static void make_msg(uint8_t *buf, size_t len, uint32_t i)
{
    t_fill(buf, len, (uint64_t)i * 7919 + len);
    if (len >= sizeof(i))
        memcpy(buf, &i, sizeof(i));
}

static void expect_echo(struct cessna_ep *ep, uint32_t i, size_t len, uint8_t *want)
{
    const void *got;
    long n = cessna_ep_recv(ep, &got);

    cr_assert_eq(n, (long)len, "echo %u: %ld bytes, want %zu (%s)", i, n, len, cessna_ep_error(ep));
    make_msg(want, len, i);
    if (memcmp(got, want, len) != 0) {
        size_t k = 0;
        while (((const uint8_t *)got)[k] == want[k])
            k++;
        cr_assert_fail("echo %u of %zu bytes differs at byte %zu", i, len, k);
    }
}

/* The largest message whose event (struct shm_rec + message) fits one ring record of a
 * ring of `size` bytes, and the message bytes a middle piece carries. */
static void ring_limits(uint32_t size, size_t *one, size_t *piece)
{
    void *mem = calloc(1, ring_mem_size(size));
    struct ring r;

    cr_assert(mem);
    ring_format(mem, size);
    cr_assert_eq(ring_attach(&r, mem), 0);
    *one = ring_max_payload(&r) - sizeof(struct shm_rec);
    *piece = ring_put_need(&r, 64u << 20, 1);
    free(mem);
}

/* Round trips of sizes around where events and outputs start to go in pieces. */
static void sizes_around_the_boundary(uint32_t ring_bytes)
{
    struct big_srv srv;
    struct t_edge e;
    char extra[128];
    size_t m, piece;
    const size_t max = 1u << 20;

    ring_limits(ring_bytes, &m, &piece);
    /* first piece: 8 bytes of length + 32 of shm_rec + message bytes */
    const size_t first = piece - RING_PIECE_HDR - sizeof(struct shm_rec);
    const size_t sizes[] = {
        1, 64, m - 1, m, m + 1, m + 2, m + 8, 2 * m, 2 * m + 1, first + piece - 1,
        first + piece, first + piece + 1, first + 2 * piece, first + 3 * piece + 1,
        16384, 4 * m - 1, 4 * m, 4 * m + 1, max / 2, max - 1, max, 3,
    };
    const unsigned n = sizeof(sizes) / sizeof(sizes[0]);
    uint8_t *buf = malloc(max), *want = malloc(max);

    big_srv_start(&srv, max);
    snprintf(extra, sizeof(extra), "ring_bytes = %u\n", ring_bytes);
    t_edge_start(&e, t_app("passthrough"), srv.addr, extra);
    struct cessna_ep *ep = connect_big(&e, max);
    /* one at a time, then all of them pipelined */
    for (unsigned i = 0; i < n; i++) {
        make_msg(buf, sizes[i], i);
        cr_assert_eq(cessna_ep_send(ep, buf, sizes[i]), 0);
        expect_echo(ep, i, sizes[i], want);
    }
    for (unsigned i = 0; i < n; i++) {
        make_msg(buf, sizes[i], n + i);
        cr_assert_eq(cessna_ep_send(ep, buf, sizes[i]), 0);
    }
    for (unsigned i = 0; i < n; i++)
        expect_echo(ep, n + i, sizes[i], want);
    cr_assert_eq(cessna_ep_last_out(ep), 2 * n, "one OUT frame per message");
    cr_assert_eq(cessna_ep_close(ep, 5000), 0, "close: %s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    t_edge_stop(&e);
    free(buf);
    free(want);
}

Test(bigmsg, sizes_around_the_piece_boundary_default_rings)
{
    sizes_around_the_boundary(SHM_RING_BYTES);
}

Test(bigmsg, sizes_around_the_piece_boundary_smallest_rings)
{
    sizes_around_the_boundary(64u << 10);
}

/* ---- 8 MiB messages --------------------------------------------------------------------- */

struct sender {
    struct cessna_ep *ep;
    const size_t *lens;
    unsigned count;
    const volatile unsigned *echoed;   /* if set: at most `window` messages ahead of it */
    unsigned window;
    int failed;
};

static void *send_all(void *p)
{
    struct sender *s = p;
    size_t max = 0;

    for (unsigned i = 0; i < s->count; i++)
        if (s->lens[i] > max)
            max = s->lens[i];
    uint8_t *buf = malloc(max);
    for (unsigned i = 0; i < s->count && !s->failed; i++) {
        while (s->echoed && i >= *s->echoed + s->window)
            sleep_ms(1);
        make_msg(buf, s->lens[i], i);
        if (cessna_ep_send(s->ep, buf, s->lens[i]) < 0)
            s->failed = 1;
    }
    free(buf);
    return NULL;
}

Test(bigmsg, eight_mebibyte_messages_with_max_message_raised)
{
    struct big_srv srv;
    struct t_edge e;
    const size_t max = 8u << 20;
    const size_t lens[] = { max, 10, max - 1, 1u << 20, max, 77777, max };
    const unsigned n = sizeof(lens) / sizeof(lens[0]);
    pthread_t t;
    uint8_t *want = malloc(max);

    big_srv_start(&srv, max);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "max_message_bytes = 8388608\n");
    struct sender snd = { .ep = connect_big(&e, max), .lens = lens, .count = n };
    pthread_create(&t, NULL, send_all, &snd);
    for (unsigned i = 0; i < n; i++)
        expect_echo(snd.ep, i, lens[i], want);
    pthread_join(t, NULL);
    cr_assert_not(snd.failed);
    cr_assert_eq(cessna_ep_last_out(snd.ep), n);
    cr_assert_eq(cessna_ep_close(snd.ep, 5000), 0, "close: %s", cessna_ep_error(snd.ep));
    cessna_ep_free(snd.ep);
    t_edge_stop(&e);
    free(want);
}

/* ---- workers killed while large messages are in flight ---------------------------------- */

struct receiver {
    struct cessna_ep *ep;
    const size_t *lens;
    volatile unsigned got;
    unsigned count;
    volatile int done;
    char why[256];
};

static void *recv_all(void *p)
{
    struct receiver *r = p;
    uint8_t *want = malloc(1u << 20);

    for (; r->got < r->count; r->got++) {
        const void *got;
        size_t len = r->lens[r->got];
        long n = cessna_ep_recv(r->ep, &got);
        make_msg(want, len, r->got);
        if (n != (long)len || memcmp(got, want, len) != 0) {
            snprintf(r->why, sizeof(r->why), "echo %u: %ld bytes, want %zu%s (%s)", r->got, n,
                     len, n == (long)len ? ", contents differ" : "", cessna_ep_error(r->ep));
            break;
        }
    }
    free(want);
    r->done = 1;
    return NULL;
}

static void kill_in_flight(const char *extra)
{
    enum { COUNT = 120 };
    struct big_srv srv;
    struct t_edge e;
    size_t lens[COUNT];
    pthread_t ts, tr;
    char cmd[96], out[512];
    int kills = 0;

    /* 100 KiB .. 1 MiB, most of them many pieces in each direction */
    for (unsigned i = 0; i < COUNT; i++)
        lens[i] = i % 8 == 7 ? 1u << 20 : 100000 + (size_t)i * 19391 % 900000;
    big_srv_start(&srv, 1u << 20);
    t_edge_start(&e, t_app("passthrough"), srv.addr, extra);
    struct cessna_ep *ep = connect_big(&e, 1u << 20);
    uint64_t id = cessna_ep_session_id(ep);
    /* At most 8 messages (8 MiB) in flight: an echo server that waits to write stops
     * reading, so a client that pipelines without bound deadlocks any relay with bounded
     * buffers (docs/design.md, Backpressure); the old rings only moved where that happens. */
    struct receiver rcv = { .ep = ep, .lens = lens, .count = COUNT };
    struct sender snd = { .ep = ep, .lens = lens, .count = COUNT, .echoed = &rcv.got, .window = 8 };
    pthread_create(&tr, NULL, recv_all, &rcv);
    pthread_create(&ts, NULL, send_all, &snd);

    /* Kill the worker while echoes are under way, each time once the session has a snapshot
     * newer than the last recovery's (and, hot, a standby holding it): the new worker
     * starts from it, with pieces of large messages in both rings. */
    int hot = strstr(extra, "standby = hot") != NULL;
    uint64_t last_snap = 0;
    long deadline = t_now_ms() + 60000;
    while (!rcv.done && kills < 6 && t_now_ms() < deadline) {
        sleep_ms(20);
        uint64_t snap = t_session_field(&e, id, "snapshot");
        if (snap <= last_snap || (hot && !t_session_field(&e, id, "standby")))
            continue;
        snprintf(cmd, sizeof(cmd), "kill-worker %llu", (unsigned long long)id);
        t_ctl(&e, cmd, out, sizeof(out));
        if (strncmp(out, "ok", 2) == 0 && !rcv.done) {
            kills++;
            last_snap = snap;
        }
    }
    pthread_join(tr, NULL);
    /* (a failed receiver leaves the sender blocked: fail before joining it) */
    cr_assert_eq(rcv.got, COUNT, "%s", rcv.why);
    pthread_join(ts, NULL);
    cr_assert_not(snd.failed, "send failed");
    cr_assert_eq(rcv.got, COUNT, "%s", rcv.why);
    cr_assert_eq(cessna_ep_last_out(ep), COUNT, "no output lost or repeated");
    cr_assert_geq(kills, 3, "workers killed while echoes were under way: %d", kills);
    cr_assert_geq(t_session_field(&e, id, "recoveries"), 3);
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_geq(t_field(out, hot ? "hot_takeovers" : "cold_restores"), 2,
                  "recoveries from a snapshot: %s", out);
    cr_log_info("%s standby: %d kills while 1 MiB-scale messages were in flight",
                strstr(extra, "standby = hot") ? "hot" : "cold", kills);
    cr_assert_eq(cessna_ep_close(ep, 5000), 0, "close: %s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

Test(bigmsg, worker_killed_with_large_messages_in_flight_cold)
{
    kill_in_flight("standby = cold\nsnapshot_interval_ms = 20\n");
}

Test(bigmsg, worker_killed_with_large_messages_in_flight_hot)
{
    kill_in_flight("standby = hot\nsnapshot_interval_ms = 20\n");
}

/* ---- what a worker keeps resident ------------------------------------------------------- */

/* `key:` in kB from /proc/PID/smaps_rollup. */
static long rollup_kb(uint64_t pid, const char *key)
{
    char path[64], line[256];
    size_t klen = strlen(key);
    long v = -1;

    snprintf(path, sizeof(path), "/proc/%llu/smaps_rollup", (unsigned long long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':')
            v = atol(line + klen + 1);
    fclose(f);
    return v;
}

/* Size and Rss in kB of a process's mappings of session memory (the rings), summed, and
 * the largest Size; returns how many there are. */
static int session_mappings_kb(uint64_t pid, long *size, long *rss, long *largest)
{
    char path[64], line[512];
    int in = 0, n = 0;

    *size = *rss = *largest = 0;
    snprintf(path, sizeof(path), "/proc/%llu/smaps", (unsigned long long)pid);
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s", path);
    while (fgets(line, sizeof(line), f)) {
        if (strstr(line, "memfd:cessna-session")) {   /* a mapping's header line */
            in = 1;
            n++;
        } else if (in && strncmp(line, "Size:", 5) == 0) {
            long v = atol(line + 5);
            *size += v;
            if (v > *largest)
                *largest = v;
        } else if (in && strncmp(line, "Rss:", 4) == 0) {
            *rss += atol(line + 4);
            in = 0;
        }
    }
    fclose(f);
    return n;
}

Test(bigmsg, worker_memory_stays_near_the_ring_size_after_one_mebibyte_messages)
{
    struct big_srv srv;
    struct t_edge e;
    const size_t max = 1u << 20;
    uint8_t *buf = malloc(max), *want = malloc(max);

    big_srv_start(&srv, max);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);

    /* A session with small messages, and one with 1 MiB messages both ways. */
    struct cessna_ep *small = connect_big(&e, max), *big = connect_big(&e, max);
    for (uint32_t i = 0; i < 20; i++) {
        make_msg(buf, 64, i);
        cr_assert_eq(cessna_ep_send(small, buf, 64), 0);
        expect_echo(small, i, 64, want);
        make_msg(buf, max, i);
        cr_assert_eq(cessna_ep_send(big, buf, max), 0);
        expect_echo(big, i, max, want);
    }
    uint64_t wsmall = t_session_field(&e, cessna_ep_session_id(small), "worker");
    uint64_t wbig = t_session_field(&e, cessna_ep_session_id(big), "worker");
    cr_assert(wsmall > 0 && wbig > 0);
    long rss_small = rollup_kb(wsmall, "Rss"), rss_big = rollup_kb(wbig, "Rss");
    long pss_small = rollup_kb(wsmall, "Pss"), pss_big = rollup_kb(wbig, "Pss");
    long map_size, map_rss, largest, sup_size, sup_rss, sup_largest;
    cr_assert_eq(session_mappings_kb(wbig, &map_size, &map_rss, &largest), 1,
                 "the worker maps its session memory once");
    cr_assert_eq(session_mappings_kb((uint64_t)e.sup.pid, &sup_size, &sup_rss, &sup_largest), 2,
                 "the supervisor maps both sessions' memory");
    cr_log_info("worker after 64 B messages: Rss %ld kB Pss %ld kB; after 1 MiB messages: "
                "Rss %ld kB Pss %ld kB; its session memory: %ld kB mapped, %ld kB resident; "
                "the supervisor's mappings of both sessions: %ld kB, %ld kB resident",
                rss_small, pss_small, rss_big, pss_big, map_size, map_rss, sup_size, sup_rss);
    cr_assert(rss_small > 0 && rss_big > 0 && pss_big > 0);
    cr_assert(map_size > 0 && sup_size > 0);

    /* The session memory is the control page and two rings of ring_bytes, whatever
     * max_message_bytes is (it was 4 x 1 MiB per ring). */
    const long ring_kb = SHM_RING_BYTES / 1024;
    cr_assert_leq(map_size, (long)(shm_total_size(SHM_RING_BYTES) + 4095) / 1024,
                  "session memory of %ld kB", map_size);
    cr_assert_leq(map_rss, map_size);
    cr_assert_leq(sup_largest, (long)(shm_total_size(SHM_RING_BYTES) + 4095) / 1024,
                  "session memory of %ld kB in the supervisor", sup_largest);
    cr_assert_leq(sup_rss, sup_size);
    /* 20 MiB went through each way: what stays resident beyond the small session's worker
     * is at most the rings and some slack, not the 8 MiB of the old rings. */
    cr_assert_lt(rss_big - rss_small, 2 * ring_kb + 1024,
                 "the 1 MiB worker keeps %ld kB more than the 64 B one", rss_big - rss_small);
    cr_assert_lt(pss_big - pss_small, 2 * ring_kb + 1024,
                 "Pss: the 1 MiB worker keeps %ld kB more", pss_big - pss_small);

    cessna_ep_close(small, 5000);
    cessna_ep_free(small);
    cessna_ep_close(big, 5000);
    cessna_ep_free(big);
    t_edge_stop(&e);
    free(buf);
    free(want);
}

/* ---- a worker whose pieces do not add up ------------------------------------------------ */

/* Two sessions of a ringbreaker edge: `cmd` makes the app write nonsense into its own
 * output ring; that session must fail with an ERROR naming `why1` (and `why2`), while the
 * other echoes messages of `size` bytes before and after, and the supervisor goes on. */
static void one_breaks_the_other_goes_on(const char *cmd, size_t size, const char *why1,
                                         const char *why2)
{
    struct big_srv srv;
    struct t_edge e;
    const void *got;
    char out[2048];
    static uint8_t buf[300000], want[300000];

    cr_assert(size <= sizeof(buf));
    big_srv_start(&srv, 1u << 20);
    t_edge_start(&e, t_test_app("ringbreaker"), srv.addr, RINGBREAKER_CONFIG);
    struct cessna_ep *good = connect_big(&e, 1u << 20), *bad = connect_big(&e, 1u << 20);
    make_msg(buf, size, 1);
    cr_assert_eq(cessna_ep_send(good, buf, size), 0);
    expect_echo(good, 1, size, want);

    cr_assert_eq(cessna_ep_send(bad, cmd, strlen(cmd)), 0);
    long n = cessna_ep_recv(bad, &got);
    cr_assert_eq(n, -ECONNABORTED, "recv: %ld %s", n, cessna_ep_error(bad));
    cr_assert(strstr(cessna_ep_error(bad), why1) && strstr(cessna_ep_error(bad), why2),
              "error: %s", cessna_ep_error(bad));

    for (uint32_t i = 2; i < 6; i++) {
        make_msg(buf, size, i);
        cr_assert_eq(cessna_ep_send(good, buf, size), 0);
        expect_echo(good, i, size, want);
    }
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "sessions_failed"), 1, "%s", out);
    cessna_ep_free(bad);
    cr_assert_eq(cessna_ep_close(good, 5000), 0);
    cessna_ep_free(good);
    t_edge_stop(&e);
}

/* The app writes the first piece of a 100000-byte output, then a whole record in its
 * middle, straight into its output ring. */
Test(bigmsg, pieces_that_do_not_add_up_fail_their_session_only)
{
    one_breaks_the_other_goes_on("PIECES", 300000, "bad long record",
                                 "in the middle of a long record");
}

/* A snapshot report in the output ring (OUT_SNAP_DONE: what a worker writing its own small
 * snapshot sends) is checked like any record from the worker: one of the wrong size. */
Test(bigmsg, a_bad_snapshot_report_in_the_ring_fails_its_session_only)
{
    one_breaks_the_other_goes_on("SNAPBAD", 1000, "snapshot report of 10 bytes", "");
}
