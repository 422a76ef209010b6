/* t_storm.c - the random-kill harness shared by the recovery tests and the soak: workers
 * killed with SIGKILL at random moments while 20 sessions run through the sequencer app;
 * every byte each side receives must equal a run without kills.
 *
 * Lockstep sessions also arm timers (and wait for them), arm long timers and cancel them,
 * and draw from the session's PRNG. Every fifth session is a slow reader: it pipelines 400
 * requests for 16 KiB of PRNG output each and reads nothing for 1.5 s, so more than 4 MiB
 * waits for it and the supervisor stops draining its worker while kills go on. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "t_storm.h"
#include "t_world.h"

#define SESSIONS 20
#define ROUNDS   400
#define SLOW_EVERY 5       /* session i is a slow reader when i % SLOW_EVERY == SLOW_EVERY - 1 */
#define SLOW_MSGS  400
#define SLOW_BYTES 16384

/* What one side of one session received, all of it, in order. */
struct transcript {
    char *buf;
    size_t len, cap;
};

static void keep(struct transcript *t, const void *data, size_t len)
{
    if (t->len + len + 1 > t->cap) {
        t->cap = (t->len + len + 1) * 2;
        t->buf = realloc(t->buf, t->cap);
    }
    memcpy(t->buf + t->len, data, len);
    t->len += len;
    t->buf[t->len] = 0;
}

struct run {
    const struct t_edge *edge;
    struct transcript client[SESSIONS], server[SESSIONS];
    int failed[SESSIONS];
    char why[SESSIONS][256];
    volatile int clients_done;
    int server_lfd;
    char server_addr[64], extra[512];
};

/* The server endpoint: answers every message with a reply derived from what it got, and
 * files what it received under the client index the first message names. */
struct srv_arg { struct run *run; struct cessna_ep *ep; };

static void *server_session(void *p)
{
    struct srv_arg *a = p;
    struct transcript t = { 0 };
    const void *msg;
    long n;
    int index = -1, k = 0;
    char reply[96];

    while ((n = cessna_ep_recv(a->ep, &msg)) >= 0) {
        keep(&t, msg, (size_t)n);
        if (index < 0) {
            const char *c = memmem(t.buf, t.len, "client ", 7);
            if (c)
                index = atoi(c + 7);
        }
        if (memmem(msg, (size_t)n, "]\nBIG ", 6))
            continue;   /* a slow reader's request: only the client hears from the app */
        int len = snprintf(reply, sizeof(reply), "reply %d to %ld bytes", ++k, n);
        if (cessna_ep_send(a->ep, reply, (size_t)len) < 0)
            break;
    }
    if (index >= 0 && index < SESSIONS)
        a->run->server[index] = t;
    else
        free(t.buf);
    cessna_ep_free(a->ep);
    free(a);
    return NULL;
}

static void *server_accept(void *p)
{
    struct run *run = p;
    char err[256];

    for (;;) {
        struct cessna_ep *ep = cessna_ep_accept(run->server_lfd, err, sizeof(err));
        if (!ep)
            continue;
        struct srv_arg *a = malloc(sizeof(*a));
        pthread_t t;
        *a = (struct srv_arg){ run, ep };
        pthread_create(&t, NULL, server_session, a);
        pthread_detach(t);
    }
    return NULL;
}

struct cli_arg { struct run *run; int index; };

/* The sequencer's PRNG (splitmix64 seeded with the session id): what RAND and BIG must
 * answer, whatever happened to the worker. Answers are checked against it and kept as a
 * marker, so transcripts of runs with different session ids compare. */
static uint64_t prng_next(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Receive one message within 10 s (a lost timer or output must fail, not hang). */
static long recv_within(struct cessna_ep *ep, const void **got)
{
    for (int waited = 0; waited < 10000; waited += 10) {
        long n = cessna_ep_recv(ep, got);
        if (n != -EAGAIN)
            return n;
        struct pollfd pfd = { .fd = cessna_ep_fd(ep), .events = POLLIN };
        poll(&pfd, 1, 10);
    }
    return -ETIMEDOUT;
}

/* What round i sends, and how many messages come back: the server's reply (forwarded with
 * the sequencer's header) and, for commands, the app's own answer. */
static int round_msg(int index, int i, char *msg, size_t cap, int *answers)
{
    static const char pad[] = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

    *answers = 1;
    switch (i % 10) {
    case 3:  /* a short timer, waited for: TOCK n comes, in either order with the reply */
        *answers = 2;
        return snprintf(msg, cap, "TICK %d client %d message %d", 1 + i % 5, index, i);
    case 6:  /* a long timer, cancelled by the next round: it must never fire */
        return snprintf(msg, cap, "TICK 5000 client %d message %d", index, i);
    case 7:
        *answers = 2;
        return snprintf(msg, cap, "CANCEL client %d message %d", index, i);
    case 8:
        *answers = 2;
        return snprintf(msg, cap, "RAND client %d message %d", index, i);
    default:
        return snprintf(msg, cap, "client %d message %d %.*s", index, i, (i * 7) % 60, pad);
    }
}

static int cmp_msgs(const void *a, const void *b)
{
    const struct transcript *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->buf, y->buf, n);

    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Lockstep: ROUNDS rounds of send, then receive every answer of that round, so the state
 * after each round is the same in every run. Within a round the two answers may come in
 * either order (a timer races the server's reply): they are kept sorted. */
static int lockstep(struct run *run, int index, struct cessna_ep *ep)
{
    char msg[128];
    uint64_t prng = cessna_ep_session_id(ep);

    for (int i = 0; i < ROUNDS; i++) {
        int answers;
        int len = round_msg(index, i, msg, sizeof(msg), &answers);
        struct transcript got[2] = { { 0 } };
        if (cessna_ep_send(ep, msg, (size_t)len) < 0) {
            snprintf(run->why[index], 256, "round %d send: %s", i, cessna_ep_error(ep));
            return -1;
        }
        for (int k = 0; k < answers; k++) {
            const void *m;
            long n = recv_within(ep, &m);
            if (n < 0) {
                snprintf(run->why[index], 256, "round %d answer %d: %ld %s", i, k, n,
                         cessna_ep_error(ep));
                return -1;
            }
            if (n == 22 && memcmp(m, "RAND ", 5) == 0) {
                char want[32];
                snprintf(want, sizeof(want), "RAND %016llx\n", (unsigned long long)prng_next(&prng));
                if (memcmp(m, want, 22) != 0) {
                    snprintf(run->why[index], 256, "round %d: %.21s, the PRNG says %.21s", i,
                             (const char *)m, want);
                    return -1;
                }
                m = "RAND ok\n";
                n = 8;
            }
            keep(&got[k], m, (size_t)n);
        }
        qsort(got, (size_t)answers, sizeof(got[0]), cmp_msgs);
        for (int k = 0; k < answers; k++) {
            keep(&run->client[index], got[k].buf, got[k].len);
            free(got[k].buf);
        }
    }
    return 0;
}

struct slow_send { struct cessna_ep *ep; int index, failed; };

static void *slow_sender(void *p)
{
    struct slow_send *a = p;
    char msg[64];

    for (int i = 0; i < SLOW_MSGS && !a->failed; i++) {
        int len = snprintf(msg, sizeof(msg), "BIG %d client %d message %d", SLOW_BYTES, a->index, i);
        if (cessna_ep_send(a->ep, msg, (size_t)len) < 0)
            a->failed = 1;
    }
    return NULL;
}

/* A slow reader: requests go out from another thread while this one reads nothing for
 * 1.5 s; then every answer must come, in order. */
static int slow_reader(struct run *run, int index, struct cessna_ep *ep)
{
    struct slow_send a = { ep, index, 0 };
    uint64_t prng = cessna_ep_session_id(ep), want[SLOW_BYTES / 8];
    pthread_t t;

    cessna_ep_set_nonblocking(ep, 1);
    pthread_create(&t, NULL, slow_sender, &a);
    usleep(1500000);
    for (int i = 0; i < SLOW_MSGS; i++) {
        const void *m;
        long n = recv_within(ep, &m);
        if (n != SLOW_BYTES) {
            snprintf(run->why[index], 256, "answer %d: %ld %s", i, n, cessna_ep_error(ep));
            a.failed = 1;
            break;
        }
        for (int k = 0; k < SLOW_BYTES / 8; k++)
            want[k] = prng_next(&prng);
        if (memcmp(m, want, SLOW_BYTES) != 0) {
            snprintf(run->why[index], 256, "answer %d is not the PRNG's next %d bytes", i,
                     SLOW_BYTES);
            a.failed = 1;
            break;
        }
        char mark[32];
        keep(&run->client[index], mark, (size_t)snprintf(mark, sizeof(mark), "BIG %d ok\n", i));
    }
    pthread_join(t, NULL);
    cessna_ep_set_nonblocking(ep, 0);
    return a.failed ? -1 : 0;
}

static void *client_session(void *p)
{
    struct cli_arg *a = p;
    struct run *run = a->run;
    char err[256];
    struct cessna_ep *ep = cessna_ep_connect(run->edge->sup.addr, err, sizeof(err));
    int rc;

    if (!ep) {
        run->failed[a->index] = 1;
        snprintf(run->why[a->index], 256, "connect: %s", err);
        goto out;
    }
    if (a->index % SLOW_EVERY == SLOW_EVERY - 1) {
        /* the first message names the session for the server side */
        char hello[64];
        const void *got;
        int len = snprintf(hello, sizeof(hello), "client %d slow", a->index);
        rc = cessna_ep_send(ep, hello, (size_t)len) < 0 || cessna_ep_recv(ep, &got) < 0 ? -1 :
             slow_reader(run, a->index, ep);
    } else {
        cessna_ep_set_nonblocking(ep, 1);
        rc = lockstep(run, a->index, ep);
        cessna_ep_set_nonblocking(ep, 0);
    }
    if (rc < 0) {
        run->failed[a->index] = 1;
        goto out;
    }
    if (cessna_ep_close(ep, 10000) < 0) {
        run->failed[a->index] = 1;
        snprintf(run->why[a->index], 256, "close: %s", cessna_ep_error(ep));
    }
out:
    if (ep)
        cessna_ep_free(ep);
    __atomic_add_fetch(&run->clients_done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* Kill a random session's worker every few milliseconds until the clients are done. */
static void *killer(void *p)
{
    struct run *run = p;
    char out[8192];
    unsigned seed = 12345;
    int kills = 0;

    while (run->clients_done < SESSIONS) {
        usleep(1000 + rand_r(&seed) % 5000);
        t_ctl(run->edge, "sessions", out, sizeof(out));
        uint64_t pids[64];
        int n = 0;
        for (char *line = strtok(out, "\n"); line && n < 64; line = strtok(NULL, "\n"))
            if (t_field(line, "worker") > 0 && strstr(line, "state=live"))
                pids[n++] = t_field(line, "worker");
        if (n && kill((pid_t)pids[rand_r(&seed) % (unsigned)n], SIGKILL) == 0)
            kills++;
    }
    return (void *)(intptr_t)kills;
}

/* Run-time keys a reload changes while kills go on: snapshots every 5 ms or none, held
 * caps that snapshot at once, snapshot timeouts short enough to fail snapshots in flight,
 * hibernation after 30 ms. None of them may change what a session sees. */
static const char *const reload_sets[] = {
    "snapshot_interval_ms = 5\nsnapshot_max_events = 10\n",
    "snapshot_interval_ms = 200\nlog_level = warn\n",
    "snapshot_interval_ms = 0\nmax_held_bytes = 1048576\n",
    "snapshot_interval_ms = 20\nhibernate_after_ms = 30\n",
    "snapshot_interval_ms = 10\nsnapshot_timeout_ms = 2\nsnapshot_max_bytes = 65536\n",
};

/* Rewrite edge.ini (atomically, by rename) with the next set, then SIGHUP the supervisor,
 * every 30-80 ms until the clients are done; returns how many reloads were sent. */
static void *reloader(void *p)
{
    struct run *run = p;
    const struct t_edge *e = run->edge;
    char path[400], tmp[420];
    unsigned seed = 777;
    int sent = 0;

    snprintf(path, sizeof(path), "%s/edge.ini", e->dir);
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    while (run->clients_done < SESSIONS) {
        usleep(30000 + rand_r(&seed) % 50000);
        FILE *f = fopen(tmp, "w");
        if (!f)
            break;
        fprintf(f, "[edge]\nlisten = 127.0.0.1:0\nserver = %s\napp = %s\nstate_dir = %s/state\n"
                   "control = %s\n%s%s", run->server_addr, t_app("sequencer"), e->dir, e->control,
                run->extra, reload_sets[sent % (int)(sizeof(reload_sets) / sizeof(reload_sets[0]))]);
        fclose(f);
        if (rename(tmp, path) == 0 && kill(e->sup.pid, SIGHUP) == 0)
            sent++;
    }
    return (void *)(intptr_t)sent;
}

/* Run the 20 sessions, with or without the killer (and the reloader); returns how many
 * kills landed. */
static int run_sessions(struct run *run, const char *extra, int with_kills, int with_reloads)
{
    struct t_edge e;
    char err[256], addr[64], stats[1024];
    pthread_t srv, kil, rel, cli[SESSIONS];
    struct cli_arg args[SESSIONS];
    void *kills = 0, *reloads = 0;

    memset(run, 0, sizeof(*run));
    run->server_lfd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(run->server_lfd >= 0, "%s", err);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", addr_local_port(run->server_lfd));
    snprintf(run->server_addr, sizeof(run->server_addr), "%s", addr);
    snprintf(run->extra, sizeof(run->extra), "%s", extra);
    pthread_create(&srv, NULL, server_accept, run);
    pthread_detach(srv);
    t_edge_start(&e, t_app("sequencer"), addr, extra);
    run->edge = &e;
    if (with_kills)
        pthread_create(&kil, NULL, killer, run);
    if (with_reloads)
        pthread_create(&rel, NULL, reloader, run);
    for (int i = 0; i < SESSIONS; i++) {
        args[i] = (struct cli_arg){ run, i };
        pthread_create(&cli[i], NULL, client_session, &args[i]);
    }
    for (int i = 0; i < SESSIONS; i++)
        pthread_join(cli[i], NULL);
    if (with_kills)
        pthread_join(kil, &kills);
    if (with_reloads) {
        pthread_join(rel, &reloads);
        cr_log_info("reloads sent: %d", (int)(intptr_t)reloads);
        char log[600];
        snprintf(log, sizeof(log), "%s", e.sup.log);
        cr_assert_geq(file_count(log, "msg=\"configuration reloaded\""), 10,
                      "reloads must land for the test to mean anything (%d sent)",
                      (int)(intptr_t)reloads);
    }
    /* the server side finishes when the session's CLOSE arrives */
    for (int i = 0; i < 500; i++) {
        int all = 1;
        for (int k = 0; k < SESSIONS; k++)
            all &= run->server[k].len > 0 || run->failed[k];
        if (all)
            break;
        usleep(10000);
    }
    /* every session ends and is freed: workers, standbys and snapshot children included */
    for (int i = 0; i < 500; i++) {
        t_ctl(&e, "stats", stats, sizeof(stats));
        if (t_field(stats, "sessions") == 0)
            break;
        usleep(10000);
    }
    cr_log_info("%s: %s", with_kills ? "with kills" : "without kills", stats);
    cr_assert_eq(t_field(stats, "sessions"), 0, "sessions left open: %s", stats);
    if (with_kills)
        cr_assert(t_field(stats, "recoveries") >= 20, "kills must land for the test to mean "
                  "anything: %s", stats);
    cr_assert_eq(t_field(stats, "sessions_failed"), 0, "%s", stats);
    t_edge_stop(&e);
    return (int)(intptr_t)kills;
}

static int storm_compare(const char *extra, int with_reloads)
{
    static struct run clean, faulty;

    run_sessions(&clean, extra, 0, 0);
    int kills = run_sessions(&faulty, extra, 1, with_reloads);
    cr_log_info("kills: %d", kills);
    for (int i = 0; i < SESSIONS; i++) {
        cr_assert(!clean.failed[i], "clean run, session %d: %s", i, clean.why[i]);
        cr_assert(!faulty.failed[i], "run with kills, session %d: %s", i, faulty.why[i]);
        cr_assert(clean.client[i].len > 0 && clean.server[i].len > 0);
        cr_assert_eq(faulty.client[i].len, clean.client[i].len, "session %d: client bytes", i);
        size_t at = 0;
        while (at < clean.client[i].len && faulty.client[i].buf[at] == clean.client[i].buf[at])
            at++;
        cr_assert(at == clean.client[i].len, "session %d: the client received other bytes than "
                  "without kills, from byte %zu: clean \"%.60s\" faulty \"%.60s\"", i, at,
                  clean.client[i].buf + (at > 20 ? at - 20 : 0),
                  faulty.client[i].buf + (at > 20 ? at - 20 : 0));
        cr_assert_eq(faulty.server[i].len, clean.server[i].len, "session %d: server bytes", i);
        cr_assert(memcmp(faulty.server[i].buf, clean.server[i].buf, clean.server[i].len) == 0,
                  "session %d: the server received other bytes than without kills", i);
    }
    return kills;
}


int t_storm_compare(const char *extra)
{
    return storm_compare(extra, 0);
}

int t_storm_compare_reloads(const char *extra)
{
    return storm_compare(extra, 1);
}
