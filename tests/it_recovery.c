/* it_recovery.c - fault injection: workers killed with SIGKILL at random moments while 20
 * sessions run through an app whose output depends on the interleaving; every byte each
 * side receives must equal a run without kills. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "t_helpers.h"

#define SESSIONS 20
#define ROUNDS   400

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

/* One client: ROUNDS messages in lockstep (send, then wait for the answer), so the order of
 * events is the same in every run and so is every byte the app produces. */
static void *client_session(void *p)
{
    struct cli_arg *a = p;
    struct run *run = a->run;
    char err[256], msg[128];
    const void *got;
    struct cessna_ep *ep = cessna_ep_connect(run->edge->sup.addr, err, sizeof(err));

    if (!ep) {
        run->failed[a->index] = 1;
        snprintf(run->why[a->index], 256, "connect: %s", err);
        goto out;
    }
    for (int i = 0; i < ROUNDS; i++) {
        int len = snprintf(msg, sizeof(msg), "client %d message %d %.*s", a->index, i,
                           (i * 7) % 60, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        long n;
        if (cessna_ep_send(ep, msg, (size_t)len) < 0 || (n = cessna_ep_recv(ep, &got)) < 0) {
            run->failed[a->index] = 1;
            snprintf(run->why[a->index], 256, "round %d: %s", i, cessna_ep_error(ep));
            goto out;
        }
        keep(&run->client[a->index], got, (size_t)n);
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

/* Run the 20 sessions, with or without the killer; returns how many kills landed. */
static int run_sessions(struct run *run, const char *extra, int with_kills)
{
    struct t_edge e;
    char err[256], addr[64], stats[1024];
    pthread_t srv, kil, cli[SESSIONS];
    struct cli_arg args[SESSIONS];
    void *kills = 0;

    memset(run, 0, sizeof(*run));
    run->server_lfd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(run->server_lfd >= 0, "%s", err);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", addr_local_port(run->server_lfd));
    pthread_create(&srv, NULL, server_accept, run);
    pthread_detach(srv);
    t_edge_start(&e, t_app("sequencer"), addr, extra);
    run->edge = &e;
    if (with_kills)
        pthread_create(&kil, NULL, killer, run);
    for (int i = 0; i < SESSIONS; i++) {
        args[i] = (struct cli_arg){ run, i };
        pthread_create(&cli[i], NULL, client_session, &args[i]);
    }
    for (int i = 0; i < SESSIONS; i++)
        pthread_join(cli[i], NULL);
    if (with_kills)
        pthread_join(kil, &kills);
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

static void compare_runs(const char *extra)
{
    static struct run clean, faulty;

    run_sessions(&clean, extra, 0);
    int kills = run_sessions(&faulty, extra, 1);
    cr_log_info("kills: %d", kills);
    for (int i = 0; i < SESSIONS; i++) {
        cr_assert(!clean.failed[i], "clean run, session %d: %s", i, clean.why[i]);
        cr_assert(!faulty.failed[i], "run with kills, session %d: %s", i, faulty.why[i]);
        cr_assert(clean.client[i].len > 0 && clean.server[i].len > 0);
        cr_assert_eq(faulty.client[i].len, clean.client[i].len, "session %d: client bytes", i);
        cr_assert(memcmp(faulty.client[i].buf, clean.client[i].buf, clean.client[i].len) == 0,
                  "session %d: the client received other bytes than without kills", i);
        cr_assert_eq(faulty.server[i].len, clean.server[i].len, "session %d: server bytes", i);
        cr_assert(memcmp(faulty.server[i].buf, clean.server[i].buf, clean.server[i].len) == 0,
                  "session %d: the server received other bytes than without kills", i);
    }
}

Test(recovery, random_kills_cold_standby, .timeout = 180)
{
    compare_runs("standby = cold\nsnapshot_interval_ms = 20\n");
}

Test(recovery, random_kills_hot_standby, .timeout = 180)
{
    compare_runs("standby = hot\nsnapshot_interval_ms = 20\n");
}

/* Without snapshots the replacement replays every event from the start. */
Test(recovery, random_kills_without_snapshots, .timeout = 180)
{
    compare_runs("snapshot_interval_ms = 0\n");
}
