/* it_framing.c - the proxies' --framing (endpoint/framing.c) with real processes: frames
 * split across TCP writes at random byte boundaries and many coalesced into one write reach
 * the app (tests/apps/framecount.c) one message per frame, also while workers are killed
 * with SIGKILL; RESP against a real redis-server; bad frames end only their own session. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../endpoint/framing.h"
#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "t_redis.h"

TestSuite(framing, .timeout = 120);

static int log_has(const char *path, const char *needle);

/* target <- server proxy <- edge <- client proxy, each proxy with its own --framing; with
 * two_edges, a second edge B behind A in the client proxy's list, for A's loss. */
struct chain {
    struct t_proc sproxy, cproxy;
    struct t_edge edge, edge_b;
    char dir[256], edges[160];
};

struct chain_opts {
    const char *app;             /* a path */
    const char *target;
    const char *cframing;        /* NULL: no --framing */
    const char *sframing;
    const char *cmax, *smax;     /* --max-message-bytes, or NULL */
    const char *edge_extra;
    int two_edges;
};

/* An edge node in a process group of its own (setsid), so that its loss takes its workers
 * too. */
static void node_start(struct chain *c, struct t_edge *e, const char *name, const char *app)
{
    char cfg[512];

    snprintf(e->dir, sizeof(e->dir), "%s/%s", c->dir, name);
    mkdir(e->dir, 0700);
    snprintf(e->control, sizeof(e->control), "%s/control.sock", e->dir);
    snprintf(cfg, sizeof(cfg), "%s/edge.ini", e->dir);
    FILE *f = fopen(cfg, "w");
    cr_assert(f);
    fprintf(f, "[edge]\nlisten = 127.0.0.1:0\nserver = %s\napp = %s\nstate_dir = %s/state\n"
               "control = %s\nsnapshot_interval_ms = 20\nheartbeat_interval_ms = 100\n",
            c->sproxy.addr, app, e->dir, e->control);
    fclose(f);
    char *argv[] = { "/usr/bin/setsid", (char *)t_bin("cessna-supervisor"), "-c", cfg, NULL };
    t_start(&e->sup, e->dir, "supervisor", argv);
}

/* Edge A's node dies at once: supervisor and workers, SIGKILL. */
static void node_kill(struct t_edge *e)
{
    kill(-e->sup.pid, SIGKILL);
    t_stop(&e->sup);
}

/* Append --framing and --max-message-bytes (when given) to argv. */
static void proxy_opts(char **argv, const char *framing, const char *max)
{
    if (framing) {
        *argv++ = "--framing";
        *argv++ = (char *)framing;
    }
    if (max) {
        *argv++ = "--max-message-bytes";
        *argv++ = (char *)max;
    }
}

static void chain_start(struct chain *c, const struct chain_opts *o)
{
    char *sargv[12] = { (char *)t_bin("cessna-server-proxy"), "--listen", "127.0.0.1:0",
                        "--target", (char *)o->target };
    char *cargv[12] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0",
                        "--edge" };

    snprintf(c->dir, sizeof(c->dir), "%s", t_tmpdir());
    proxy_opts(sargv + 5, o->sframing, o->smax);
    t_start(&c->sproxy, c->dir, "server-proxy", sargv);
    if (o->two_edges) {
        node_start(c, &c->edge, "a", o->app);
        node_start(c, &c->edge_b, "b", o->app);
        snprintf(c->edges, sizeof(c->edges), "%s,%s", c->edge.sup.addr, c->edge_b.sup.addr);
    } else {
        t_edge_start(&c->edge, o->app, c->sproxy.addr, o->edge_extra);
        snprintf(c->edges, sizeof(c->edges), "%s", c->edge.sup.addr);
    }
    cargv[4] = c->edges;
    proxy_opts(cargv + 5, o->cframing, o->cmax);
    t_start(&c->cproxy, c->dir, "client-proxy", cargv);
}

static void chain_stop(struct chain *c)
{
    t_stop(&c->cproxy);
    if (c->edge_b.sup.pid)
        t_edge_stop(&c->edge_b);
    t_edge_stop(&c->edge);
    t_stop(&c->sproxy);
}

/* ---- byte strings ---- */

struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 4096;
        b->p = realloc(b->p, b->cap);
        cr_assert(b->p);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void putf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    put(b, tmp, (size_t)n);
}

static void put_be32(struct buf *b, size_t n)
{
    uint8_t p[4] = { (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };
    put(b, p, 4);
}

/* What framecount sends the client for its n-th server message m, answering a client
 * message of c bytes; u32be adds the prefix the client proxy writes. */
static void put_record(struct buf *b, int u32be, unsigned n, size_t c, const void *m,
                       size_t mlen)
{
    struct buf rec = { 0 };

    putf(&rec, "#%u c=%zu s=%zu\n", n, c, mlen);
    put(&rec, m, mlen);
    if (u32be)
        put_be32(b, rec.len);
    put(b, rec.p, rec.len);
    free(rec.p);
}

/* ---- a client: writes the stream in random pieces while reading what comes back ---- */

struct writer {
    int fd;
    const struct buf *stream;
    unsigned seed;
    size_t cap;              /* 0, or the largest piece */
    int pause_us;            /* 0, or a pause after every piece (to give kills time) */
    struct t_edge *lose;     /* NULL, or the edge node to kill a third of the way in */
};

/* Pieces of 1 to 7 bytes (cutting frames anywhere), up to 3000, or 64 KiB (many frames in
 * one write), with short pauses so the pieces reach the proxy as separate reads. */
static void *write_pieces(void *p)
{
    struct writer *w = p;
    size_t off = 0;
    int one = 1;

    setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    while (off < w->stream->len) {
        unsigned r = rand_r(&w->seed) % 10;
        size_t n = r < 4 ? 1 + rand_r(&w->seed) % 7 : r < 9 ? 1 + rand_r(&w->seed) % 3000
                                                           : 65536;
        if (w->cap && n > w->cap)
            n = w->cap;
        if (n > w->stream->len - off)
            n = w->stream->len - off;
        t_write_all(w->fd, w->stream->p + off, n);
        off += n;
        if (w->lose && off >= w->stream->len / 3) {
            node_kill(w->lose);
            w->lose = NULL;
        }
        if (w->pause_us)
            usleep((useconds_t)w->pause_us);
        else if (rand_r(&w->seed) % 4 == 0)
            usleep(200);
    }
    return NULL;
}

/* Send stream through the client proxy at addr and expect exactly `want` back. */
static void exchange(const char *addr, const struct buf *stream, const struct buf *want,
                     unsigned seed, size_t cap, int pause_us, struct t_edge *lose)
{
    int fd = t_connect(addr);
    struct writer w = { fd, stream, seed, cap, pause_us, lose };
    pthread_t th;
    char *got = malloc(want->len + 1);

    pthread_create(&th, NULL, write_pieces, &w);
    long n = t_read_n(fd, got, want->len, 60000);
    pthread_join(th, NULL);
    cr_assert_eq(n, (long)want->len, "got %ld of %zu bytes back", n, want->len);
    size_t i = 0;
    while (i < want->len && got[i] == want->p[i])
        i++;
    cr_assert_eq(i, want->len, "the output differs at byte %zu of %zu: got \"%.40s\", want "
                 "\"%.40s\"", i, want->len, got + (i > 20 ? i - 20 : 0),
                 want->p + (i > 20 ? i - 20 : 0));
    /* nothing more: one record per frame */
    char extra;
    cr_assert_eq(t_read_n(fd, &extra, 1, 300), -ETIMEDOUT, "more output than frames");
    close(fd);
    free(got);
}

/* ---- killing workers ---- */

struct killer {
    const struct t_edge *edge;
    volatile int stop;
    int kills;
};

static void *kill_workers(void *p)
{
    struct killer *k = p;
    unsigned seed = 4242;
    char out[8192];

    while (!k->stop) {
        usleep(10000 + rand_r(&seed) % 30000);
        t_ctl(k->edge, "sessions", out, sizeof(out));
        for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
            if (t_field(line, "worker") > 0 && strstr(line, "state=live") &&
                kill((pid_t)t_field(line, "worker"), SIGKILL) == 0)
                k->kills++;
    }
    return NULL;
}

static void start_killer(struct killer *k, pthread_t *th, const struct t_edge *e)
{
    *k = (struct killer){ .edge = e };
    pthread_create(th, NULL, kill_workers, k);
}

static void stop_killer(struct killer *k, pthread_t th, int min_kills)
{
    char stats[2048];

    k->stop = 1;
    pthread_join(th, NULL);
    t_ctl(k->edge, "stats", stats, sizeof(stats));
    cr_log_info("kills=%d %s", k->kills, stats);
    cr_assert(k->kills >= min_kills, "only %d kills landed", k->kills);
    cr_assert(t_field(stats, "recoveries") >= (uint64_t)min_kills, "%s", stats);
}

#define KILL_EDGE "snapshot_interval_ms = 20\n"

/* ---- line and u32be against a plain echo server ---- */

/* Frames of random bytes; line: no "\n" inside, ending "\n" or "\r\n"; u32be: a prefix,
 * lengths from 0 up. The echo returns each frame, which the server proxy cuts the same way. */
static void make_frames(int u32be, int count, unsigned seed, struct buf *stream,
                        struct buf *want)
{
    for (int i = 1; i <= count; i++) {
        size_t len = rand_r(&seed) % 8 == 0 ? rand_r(&seed) % 20000 : rand_r(&seed) % 300;
        char *m = malloc(len + 2);
        for (size_t j = 0; j < len; j++) {
            m[j] = (char)(rand_r(&seed) & 0xff);
            if (!u32be && (m[j] == '\n' || m[j] == '\r'))
                m[j] = 'x';
        }
        if (u32be) {
            put_be32(stream, len);
        } else if (rand_r(&seed) % 2) {
            m[len++] = '\r';
            m[len++] = '\n';
        } else {
            m[len++] = '\n';
        }
        put(stream, m, len);
        put_record(want, u32be, (unsigned)i, len, m, len);
        free(m);
    }
}

/* The edge ordered exactly n messages in and out (both sides): one per frame. */
static void expect_messages(const struct t_edge *e, uint64_t n)
{
    char stats[2048];

    t_ctl(e, "stats", stats, sizeof(stats));
    cr_assert_eq(t_field(stats, "msgs_in"), n, "%s", stats);
    cr_assert_eq(t_field(stats, "msgs_out"), n, "%s", stats);
}

#define FRAMES 1500

enum fault { NO_FAULT, KILL_WORKERS, LOSE_EDGE };

/* Run an exchange under a fault; check what the edge counted (one message per frame). */
static void run_faulted(struct chain *c, enum fault fault, const struct buf *stream,
                        const struct buf *want, size_t cap, uint64_t messages)
{
    struct killer k;
    pthread_t th;

    if (fault == KILL_WORKERS)
        start_killer(&k, &th, &c->edge);
    exchange(c->cproxy.addr, stream, want, 99, fault ? cap : 0, fault ? 1000 : 0,
             fault == LOSE_EDGE ? &c->edge : NULL);
    if (fault == KILL_WORKERS)
        stop_killer(&k, th, 10);
    if (fault == LOSE_EDGE) {   /* edge B took the session over: the client proxy resumed */
        char stats[2048];
        t_ctl(&c->edge_b, "stats", stats, sizeof(stats));
        cr_assert_eq(t_field(stats, "resumes"), 1, "%s", stats);
        cr_assert(log_has(c->cproxy.log, "msg=\"session resumed\""), "no resume in %s",
                  c->cproxy.log);
    } else {
        expect_messages(&c->edge, messages);
    }
}

static void echo_framing(const char *framing, enum fault fault)
{
    struct t_echo_tcp echo;
    struct chain c;
    struct buf stream = { 0 }, want = { 0 };
    int u32be = strcmp(framing, "u32be") == 0;

    t_echo_tcp_start(&echo);
    /* The server proxy has no --framing: it takes the client proxy's from the handshake. */
    chain_start(&c, &(struct chain_opts){ .app = t_test_app("framecount"), .target = echo.addr,
                                          .cframing = framing, .two_edges = fault == LOSE_EDGE,
                                          .edge_extra = fault ? KILL_EDGE : NULL });
    make_frames(u32be, FRAMES, 7, &stream, &want);
    run_faulted(&c, fault, &stream, &want, 4096, 2 * FRAMES);
    free(stream.p);
    free(want.p);
    chain_stop(&c);
}

Test(framing, line_frames_split_and_coalesced)   { echo_framing("line", NO_FAULT); }
Test(framing, u32be_frames_split_and_coalesced)  { echo_framing("u32be", NO_FAULT); }
Test(framing, line_frames_while_workers_are_killed, .timeout = 180)
{
    echo_framing("line", KILL_WORKERS);
}
Test(framing, u32be_frames_while_workers_are_killed, .timeout = 180)
{
    echo_framing("u32be", KILL_WORKERS);
}
/* Partial frames wait in the proxies while the session moves to edge B. */
Test(framing, line_frames_across_the_loss_of_the_edge, .timeout = 180)
{
    echo_framing("line", LOSE_EDGE);
}
Test(framing, u32be_frames_across_the_loss_of_the_edge, .timeout = 180)
{
    echo_framing("u32be", LOSE_EDGE);
}

/* ---- RESP against a real redis-server ---- */

/* A RESP command (array of bulk strings) from words separated by spaces. */
static size_t put_command(struct buf *b, const char *words)
{
    size_t start = b->len, n = 1;
    for (const char *p = words; *p; p++)
        n += *p == ' ';
    putf(b, "*%zu\r\n", n);
    for (const char *p = words; *p;) {
        const char *e = strchr(p, ' ');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        putf(b, "$%zu\r\n", len);
        put(b, p, len);
        put(b, "\r\n", 2);
        p += len + (e != NULL);
    }
    return b->len - start;
}

/* Commands of every reply type (simple string, error, integer, bulk, null, arrays nested
 * three deep, an inline command), with the replies redis gives, worked out here. */
static void make_redis(int rounds, struct buf *stream, struct buf *want)
{
    unsigned n = 0;
    long long ctr = 0;

    for (int i = 0; i < rounds; i++) {
        struct buf reply = { 0 };
        char cmd[256], val[128];
        size_t clen;

        for (int kind = 0; kind < 10; kind++) {
            reply.len = 0;
            snprintf(val, sizeof(val), "value-%d-%.*s", i, i % 60,
                     "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij");
            switch (kind) {
            case 0:
                snprintf(cmd, sizeof(cmd), "SET k:%d %s", i, val);
                clen = put_command(stream, cmd);
                putf(&reply, "+OK\r\n");
                break;
            case 1:
                snprintf(cmd, sizeof(cmd), "GET k:%d", i);
                clen = put_command(stream, cmd);
                putf(&reply, "$%zu\r\n%s\r\n", strlen(val), val);
                break;
            case 2:
                clen = put_command(stream, "INCR ctr");
                putf(&reply, ":%lld\r\n", ++ctr);
                break;
            case 3:
                snprintf(cmd, sizeof(cmd), "RPUSH l:%d a bb ccc", i);
                clen = put_command(stream, cmd);
                putf(&reply, ":3\r\n");
                break;
            case 4:
                snprintf(cmd, sizeof(cmd), "LRANGE l:%d 0 -1", i);
                clen = put_command(stream, cmd);
                putf(&reply, "*3\r\n$1\r\na\r\n$2\r\nbb\r\n$3\r\nccc\r\n");
                break;
            case 5:
                put(stream, "PING\r\n", 6);   /* inline */
                clen = 6;
                putf(&reply, "+PONG\r\n");
                break;
            case 6:
                snprintf(cmd, sizeof(cmd), "GET missing:%d", i);
                clen = put_command(stream, cmd);
                putf(&reply, "$-1\r\n");
                break;
            case 7:
                snprintf(cmd, sizeof(cmd), "GET l:%d", i);
                clen = put_command(stream, cmd);
                putf(&reply, "-WRONGTYPE Operation against a key holding the wrong kind of "
                     "value\r\n");
                break;
            case 8:
                snprintf(cmd, sizeof(cmd), "XADD s:%d 1-%d f %s", i, i + 1, val);
                clen = put_command(stream, cmd);
                putf(&reply, "$%d\r\n1-%d\r\n", snprintf(NULL, 0, "1-%d", i + 1), i + 1);
                break;
            default:   /* [[id, [f, val]]] */
                snprintf(cmd, sizeof(cmd), "XRANGE s:%d - +", i);
                clen = put_command(stream, cmd);
                putf(&reply, "*1\r\n*2\r\n$%d\r\n1-%d\r\n*2\r\n$1\r\nf\r\n$%zu\r\n%s\r\n",
                     snprintf(NULL, 0, "1-%d", i + 1), i + 1, strlen(val), val);
                break;
            }
            put_record(want, 0, ++n, clen, reply.p, reply.len);
        }
        free(reply.p);
    }
}

#define ROUNDS 300

static void redis_framing(enum fault fault)
{
    struct t_redis redis;
    struct chain c;
    struct buf stream = { 0 }, want = { 0 };

    t_redis_start(&redis, t_tmpdir());
    chain_start(&c, &(struct chain_opts){ .app = t_test_app("framecount"),
                                          .target = redis.addr, .cframing = "resp",
                                          .sframing = "resp", .two_edges = fault == LOSE_EDGE,
                                          .edge_extra = fault ? KILL_EDGE : NULL });
    make_redis(ROUNDS, &stream, &want);
    /* 10 commands a round, each one reply */
    run_faulted(&c, fault, &stream, &want, 400, 2 * 10 * ROUNDS);
    free(stream.p);
    free(want.p);
    chain_stop(&c);
    t_redis_stop(&redis);
}

Test(framing, resp_commands_and_replies_with_redis) { redis_framing(NO_FAULT); }
Test(framing, resp_with_redis_while_workers_are_killed, .timeout = 180)
{
    redis_framing(KILL_WORKERS);
}
/* redis sees every command once: INCR's counts would show a repeat. */
Test(framing, resp_with_redis_across_the_loss_of_the_edge, .timeout = 180)
{
    redis_framing(LOSE_EDGE);
}

/* ---- bad frames end their own session only ---- */

/* Wait up to 5 s for needle in the file at path. */
static int log_has(const char *path, const char *needle)
{
    for (int i = 0; i < 100; i++) {
        FILE *f = fopen(path, "r");
        char line[2048];
        int found = 0;
        while (f && !found && fgets(line, sizeof(line), f))
            found = strstr(line, needle) != NULL;
        if (f)
            fclose(f);
        if (found)
            return 1;
        usleep(50000);
    }
    return 0;
}

/* Send frame on fd and expect framecount's n-th record of it back (the echo returns it). */
static void round_trip(int fd, int u32be, unsigned n, const void *frame, size_t len,
                       size_t msg_off)
{
    struct buf want = { 0 };
    char got[8192];

    put_record(&want, u32be, n, len - msg_off, (const char *)frame + msg_off, len - msg_off);
    t_write_all(fd, frame, len);
    cr_assert(want.len <= sizeof(got));
    cr_assert_eq(t_read_n(fd, got, want.len, 10000), (long)want.len, "record %u", n);
    cr_assert(!memcmp(got, want.p, want.len), "record %u differs", n);
    free(want.p);
}

/* How many sessions the edge has (its `sessions` answer in out). */
static int count_sessions(const struct t_edge *e, char *out, size_t len)
{
    int n = 0;

    t_ctl(e, "sessions", out, len);
    for (const char *p = out; (p = strstr(p, "id=")); p += 3)
        n += p == out || p[-1] == '\n';
    return n;
}

struct bad_case {
    const char *framing, *cmax, *smax;
    const char *good;  size_t good_len, good_off;   /* a frame, and where its message starts */
    const char *bad;   size_t bad_len;
    int server_log;                                 /* the cause is logged by the server proxy */
    const char *cause;
};

/* Session A sends a bad frame and is closed; session B, open before and after, is not. */
static void bad_frame(const struct bad_case *bc)
{
    struct t_echo_tcp echo;
    struct chain c;
    int u32be = strcmp(bc->framing, "u32be") == 0;
    char stats[2048];

    t_echo_tcp_start(&echo);
    chain_start(&c, &(struct chain_opts){ .app = t_test_app("framecount"), .target = echo.addr,
                                          .cframing = bc->framing, .cmax = bc->cmax,
                                          .smax = bc->smax });
    int good = t_connect(c.cproxy.addr), bad = t_connect(c.cproxy.addr);
    round_trip(good, u32be, 1, bc->good, bc->good_len, bc->good_off);
    round_trip(bad, u32be, 1, bc->good, bc->good_len, bc->good_off);
    t_write_all(bad, bc->bad, bc->bad_len);
    t_expect_eof(bad, 5000, "the session that sent a bad frame is closed");
    round_trip(good, u32be, 2, bc->good, bc->good_len, bc->good_off);
    cr_assert(log_has(bc->server_log ? c.sproxy.log : c.cproxy.log, bc->cause),
              "the %s proxy's log names the cause: %s", bc->server_log ? "server" : "client",
              bc->cause);
    cr_assert(log_has(c.edge.sup.log, "endpoint sent ERROR"), "the edge logs the ERROR");
    cr_assert(log_has(c.edge.sup.log, bc->cause), "the edge's log has the cause: %s", bc->cause);
    for (int i = 0; i < 100 && count_sessions(&c.edge, stats, sizeof(stats)) != 1; i++)
        usleep(50000);   /* the edge ends the bad one a moment after */
    cr_assert(count_sessions(&c.edge, stats, sizeof(stats)) == 1 && strstr(stats, "state=live"),
              "one session (the good one) is left: %s", stats);
    close(good);
    close(bad);
    chain_stop(&c);
}

Test(framing, u32be_length_over_the_limit_ends_only_that_session)
{
    static const char bad[] = { 0, 1, 0, 0, 'x', 'y' };
    bad_frame(&(struct bad_case){ .framing = "u32be", .cmax = "4096", .smax = "4096",
                                  .good = "\0\0\0\5hello", .good_len = 9, .good_off = 4,
                                  .bad = bad, .bad_len = sizeof(bad),
                                  .cause = "a length prefix of 65536, over the message limit of 4096" });
}

Test(framing, line_longer_than_the_limit_ends_only_that_session)
{
    static char bad[5000];
    memset(bad, 'a', sizeof(bad));
    bad_frame(&(struct bad_case){ .framing = "line", .cmax = "4096", .smax = "4096",
                                  .good = "hello\r\n", .good_len = 7,
                                  .bad = bad, .bad_len = sizeof(bad),
                                  .cause = "no whole line message within the message limit of "
                                           "4096 bytes" });
}

Test(framing, malformed_resp_ends_only_that_session)
{
    static const char bad[] = "*2\r\n$3\r\nGET\r\n$abc\r\nkey\r\n";
    static const char good[] = "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
    bad_frame(&(struct bad_case){ .framing = "resp", .good = good, .good_len = sizeof(good) - 1,
                                  .bad = bad, .bad_len = sizeof(bad) - 1,
                                  .cause = "malformed RESP: bad $ length 'abc'" });
}

/* The server proxy's limit is lower: the echo of a 6000-byte line is the server's bad frame. */
Test(framing, server_frame_over_the_limit_ends_only_that_session)
{
    static char bad[6001];
    memset(bad, 'b', sizeof(bad));
    bad[6000] = '\n';
    bad_frame(&(struct bad_case){ .framing = "line", .cmax = "8192", .smax = "4096",
                                  .good = "hello\n", .good_len = 6,
                                  .bad = bad, .bad_len = sizeof(bad), .server_log = 1,
                                  .cause = "the server sent no whole line message within the "
                                           "message limit of 4096 bytes" });
}

/* Both proxies must agree: a client proxy cutting lines and a server proxy told resp. */
Test(framing, mismatched_framing_is_refused_with_a_clear_error)
{
    struct t_echo_tcp echo;
    struct chain c;

    t_echo_tcp_start(&echo);
    chain_start(&c, &(struct chain_opts){ .app = t_test_app("framecount"), .target = echo.addr,
                                          .cframing = "line", .sframing = "resp" });
    int fd = t_connect(c.cproxy.addr);
    t_write_all(fd, "hello\n", 6);
    t_expect_eof(fd, 10000, "a session the proxies disagree on is closed");
    const char *cause = "framing mismatch: the client proxy cuts messages by line, this server "
                        "proxy by resp (--framing)";
    cr_assert(log_has(c.sproxy.log, cause), "server proxy log: %s", cause);
    cr_assert(log_has(c.edge.sup.log, cause), "edge log: %s", cause);
    close(fd);
    chain_stop(&c);
}

/* An unknown --framing is a usage error naming the choices. */
Test(framing, unknown_framing_option_is_refused)
{
    int out;
    char *argv[] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0", "--edge",
                     "127.0.0.1:1", "--framing", "json", NULL };
    const char *dir = t_tmpdir();
    pid_t pid = t_start_raw(dir, "client-proxy", argv, &out);
    int status = t_wait(pid, 5000);
    char path[512];

    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 2, "exit status 2");
    snprintf(path, sizeof(path), "%s/client-proxy.log", dir);
    cr_assert(log_has(path, "bad --framing 'json' (raw, line, u32be or resp)"));
    close(out);
}

/* ---- apps/ratelimit.c: a token bucket per session in front of redis ---- */

TestSuite(ratelimit, .timeout = 120);

#define RL_RATE  10   /* per second: a token every 100 ms */
#define RL_BURST 5
#define RL_QUEUE 10
#define RL_SENT  25
#define RL_APP   "[app]\nrate_per_s = 10\nburst = 5\nqueue = 10\n"

/* A burst of RL_SENT INCRs in one write: RL_BURST answered at once, RL_QUEUE released one
 * per token, in order, the rest refused after them; redis counted only the accepted ones. */
static void ratelimit_burst(int with_kills)
{
    static const char incr[] = "*2\r\n$4\r\nINCR\r\n$4\r\nhits\r\n";
    struct t_redis redis;
    struct chain c;
    struct buf stream = { 0 }, want = { 0 };
    char extra[256], got[4096];
    long at[RL_SENT];
    size_t have = 0, cut_at = 0;
    int n = 0;

    for (int i = 0; i < RL_SENT; i++)
        put(&stream, incr, sizeof(incr) - 1);
    for (int i = 1; i <= RL_BURST + RL_QUEUE; i++)
        putf(&want, ":%d\r\n", i);
    for (int i = RL_BURST + RL_QUEUE; i < RL_SENT; i++)
        putf(&want, "-ERR rate limited\r\n");
    snprintf(extra, sizeof(extra), "%s%s", with_kills ? KILL_EDGE : "", RL_APP);
    t_redis_start(&redis, t_tmpdir());
    chain_start(&c, &(struct chain_opts){ .app = t_app("ratelimit"), .target = redis.addr,
                                          .cframing = "resp", .sframing = "resp",
                                          .edge_extra = extra });
    struct killer k;
    pthread_t th;
    if (with_kills)
        start_killer(&k, &th, &c.edge);
    int fd = t_connect(c.cproxy.addr);
    long t0 = t_now_ms();
    t_write_all(fd, stream.p, stream.len);
    /* Each reply's arrival time: cut the replies as the proxy does. */
    while (n < RL_SENT) {
        long r = t_read_n(fd, got + have, 1, 10000);
        cr_assert_eq(r, 1, "reply %d of %d did not come (%zu bytes so far)", n + 1, RL_SENT, have);
        have++;
        size_t scan = 0, skip, len;
        char err[200];
        if (framing_cut(FRAMING_RESP, (uint8_t *)got + cut_at, have - cut_at, 4096, &scan,
                        &skip, &len, err, sizeof(err)) == 1) {
            at[n++] = t_now_ms() - t0;
            cut_at += len;
        }
    }
    if (with_kills)
        stop_killer(&k, th, 5);
    cr_assert_eq(have, want.len);
    cr_assert(!memcmp(got, want.p, want.len), "replies in order: got \"%.*s\"", (int)have, got);
    for (int i = 0; i < RL_BURST; i++)
        cr_expect(at[i] < 1500, "reply %d of the burst after %ld ms", i + 1, at[i]);
    for (int i = RL_BURST; i < RL_BURST + RL_QUEUE; i++) {
        long due = (i - RL_BURST + 1) * 1000 / RL_RATE;   /* its token comes back then */
        cr_expect(at[i] >= due - 20, "reply %d after %ld ms, before its token (%ld ms)", i + 1,
                  at[i], due);
        cr_expect(at[i] <= due + (with_kills ? 3000 : 1500), "reply %d after %ld ms (due %ld)",
                  i + 1, at[i], due);
    }
    cr_log_info("replies at (ms): burst %ld..%ld, queued %ld..%ld, refused %ld", at[0],
                at[RL_BURST - 1], at[RL_BURST], at[RL_BURST + RL_QUEUE - 1], at[RL_SENT - 1]);
    /* redis itself counted the accepted commands once each */
    int rfd = t_connect(redis.addr);
    char val[16] = "";
    t_write_all(rfd, "GET hits\r\n", 10);
    cr_assert_eq(t_read_n(rfd, val, 8, 5000), 8);
    cr_assert(!memcmp(val, "$2\r\n15\r\n", 8), "redis counted %.8s", val);
    close(rfd);
    close(fd);
    free(stream.p);
    free(want.p);
    chain_stop(&c);
    t_redis_stop(&redis);
}

Test(ratelimit, burst_at_once_then_the_rate_and_overflow_refused) { ratelimit_burst(0); }
Test(ratelimit, the_same_replies_while_workers_are_killed, .timeout = 180) { ratelimit_burst(1); }

/* A native client (libcessna-endpoint) sends whole messages and says no framing: the server
 * proxy cuts the server's side by its own --framing. One message of two lines comes back
 * from the echo as two messages. */
Test(framing, a_native_client_gets_the_server_proxys_own_framing)
{
    struct t_echo_tcp echo;
    struct t_proc sp;
    struct t_edge edge;
    const void *got;
    char *sargv[] = { (char *)t_bin("cessna-server-proxy"), "--listen", "127.0.0.1:0",
                      "--target", NULL, "--framing", "line", NULL };

    t_echo_tcp_start(&echo);
    sargv[4] = echo.addr;
    t_start(&sp, t_tmpdir(), "server-proxy", sargv);
    t_edge_start(&edge, t_test_app("framecount"), sp.addr, NULL);
    struct cessna_ep *ep = t_ep_connect(&edge);
    cr_assert_eq(cessna_ep_send(ep, "one\ntwo!\n", 9), 0);
    static const char *const want[] = { "#1 c=9 s=4\none\n", "#2 c=0 s=5\ntwo!\n" };
    for (int i = 0; i < 2; i++) {
        long n = cessna_ep_recv(ep, &got);
        cr_assert_eq(n, (long)strlen(want[i]), "message %d: %ld bytes", i + 1, n);
        cr_assert(!memcmp(got, want[i], (size_t)n), "message %d: %.*s", i + 1, (int)n,
                  (const char *)got);
    }
    cr_assert(log_has(sp.log, "epoch=1 framing=line"), "the session uses the server proxy's framing");
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&edge);
    t_stop(&sp);
}

/* Read one framecount record: its header line, then the s= bytes it announces. */
static size_t read_record(int fd, char *msg, size_t cap)
{
    char hdr[128];
    size_t n = 0;

    while (n < sizeof(hdr) - 1) {
        cr_assert_eq(t_read_n(fd, hdr + n, 1, 10000), 1, "a record header");
        if (hdr[n++] == '\n')
            break;
    }
    hdr[n] = 0;
    size_t len = (size_t)t_field(hdr, "s");
    cr_assert(len < cap, "%s", hdr);
    cr_assert_eq(t_read_n(fd, msg, len, 10000), (long)len, "the record of %s", hdr);
    return len;
}

/* After HELLO 3 redis answers in RESP3: maps, nulls, doubles are cut whole too. */
Test(framing, resp3_replies_after_hello_3)
{
    static const struct { const char *cmd, *reply; } steps[] = {
        { "HSET h a 1", ":1\r\n" },
        { "HGETALL h", "%1\r\n$1\r\na\r\n$1\r\n1\r\n" },
        { "GET nope", "_\r\n" },
        { "ZADD z 1.5 m", ":1\r\n" },
        { "ZSCORE z m", ",1.5\r\n" },
        { "SMEMBERS h", "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n" },
    };
    struct t_redis redis;
    struct chain c;
    char msg[4096];

    t_redis_start(&redis, t_tmpdir());
    chain_start(&c, &(struct chain_opts){ .app = t_test_app("framecount"),
                                          .target = redis.addr, .cframing = "resp",
                                          .sframing = "resp" });
    int fd = t_connect(c.cproxy.addr);
    struct buf cmd = { 0 };
    put_command(&cmd, "HELLO 3");
    t_write_all(fd, cmd.p, cmd.len);
    size_t n = read_record(fd, msg, sizeof(msg));
    cr_assert(n > 4 && msg[0] == '%' && strstr(msg, "proto") && !memcmp(msg + n - 2, "\r\n", 2),
              "HELLO 3 answers one map: %.*s", (int)n, msg);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        cmd.len = 0;
        put_command(&cmd, steps[i].cmd);
        t_write_all(fd, cmd.p, cmd.len);
        n = read_record(fd, msg, sizeof(msg));
        cr_assert(n == strlen(steps[i].reply) && !memcmp(msg, steps[i].reply, n),
                  "%s: %.*s", steps[i].cmd, (int)n, msg);
    }
    free(cmd.p);
    close(fd);
    chain_stop(&c);
    t_redis_stop(&redis);
}

/* A last line without its "\n" is still a message when the client ends its stream. */
Test(framing, a_last_line_without_newline_is_a_message_at_eof)
{
    struct t_echo_tcp echo;
    struct chain c;
    char stats[2048];

    t_echo_tcp_start(&echo);
    chain_start(&c, &(struct chain_opts){ .app = t_test_app("framecount"), .target = echo.addr,
                                          .cframing = "line" });
    int fd = t_connect(c.cproxy.addr);
    round_trip(fd, 0, 1, "one\n", 4, 0);
    t_write_all(fd, "two", 3);
    shutdown(fd, SHUT_WR);
    t_expect_eof(fd, 5000, "the session ends after the client's end");
    for (int i = 0; i < 100; i++) {
        t_ctl(&c.edge, "stats", stats, sizeof(stats));
        if (t_field(stats, "sessions") == 0)
            break;
        usleep(50000);
    }
    /* client: "one\n" and "two"; server: the echo of "one\n" */
    cr_assert_eq(t_field(stats, "msgs_in"), 3, "%s", stats);
    cr_assert_eq(t_field(stats, "bytes_in"), 4 + 3 + 4, "%s", stats);
    close(fd);
    chain_stop(&c);
}

/* A client's bad bytes end up quoted in log lines (the proxy's cause, the edge's "endpoint
 * sent ERROR" text): they are escaped, so a client cannot end the value, add fields or
 * start a line of its own in the operator's log. */
Test(framing, a_bad_frame_cannot_forge_log_fields)
{
    static const char bad[] = "$1\" end=client_close\tforged=1\r\n";
    static const char good[] = "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
    bad_frame(&(struct bad_case){ .framing = "resp", .good = good, .good_len = sizeof(good) - 1,
                                  .bad = bad, .bad_len = sizeof(bad) - 1,
                                  .cause = "malformed RESP: bad $ length '1\\\" end=client_close"
                                           "\\tforged=1'" });
    /* bad_frame found the cause escaped, as above, in the proxy's and the edge's logs. */
}
