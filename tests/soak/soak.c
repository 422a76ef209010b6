/* soak.c - the long runs behind `make soak` (not part of `make test`):
 *
 *   soak/kill_storm_{cold,hot}   the random-kill comparison of tests/t_storm.c (timers,
 *                                cancels, PRNG, slow readers) again and again for
 *                                CESSNA_SOAK_SECONDS each (default 300)
 *   soak/ten_thousand_sessions   10,000 short sessions, 20 at a time, 20 ms snapshots, hot
 *                                standby, random worker kills throughout: every session
 *                                byte-exact, none failed, no zombie and no stray child left
 *   soak/node_losses             three edges behind the proxies (tests/t_world.h); the edge
 *                                holding the sessions SIGKILLed as a whole node and
 *                                restarted empty, every 60-160 ms, run after run for
 *                                CESSNA_SOAK_SECONDS: every byte equal to a run without faults
 *   soak/ten_thousand_at_once    CESSNA_SOAK_SESSIONS (10,000) sessions open together on one
 *                                supervisor, a message a second each through the sequencer
 *                                for CESSNA_SOAK_SECONDS, snapshots every second, random
 *                                worker kills: every reply byte-exact
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "../t_helpers.h"
#include "../t_storm.h"
#include "../t_world.h"

static long soak_seconds(void)
{
    const char *v = getenv("CESSNA_SOAK_SECONDS");

    return v ? atol(v) : 300;
}

static long s_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static void storm_for(const char *extra)
{
    long end = s_now() + soak_seconds();
    int runs = 0, kills = 0;

    while (s_now() < end) {
        kills += t_storm_compare(extra);
        runs++;
    }
    cr_log_info("soak: %d runs, %d kills, every byte equal to the runs without kills", runs, kills);
    printf("soak %s: %d runs, %d kills, 0 divergences\n", extra, runs, kills);
}

Test(soak, kill_storm_cold, .timeout = 7200)
{
    storm_for("standby = cold\nsnapshot_interval_ms = 20\n");
}

Test(soak, kill_storm_hot, .timeout = 7200)
{
    storm_for("standby = hot\nsnapshot_interval_ms = 20\n");
}

#define THREADS 20
#define PER_THREAD 500

struct shorts { const struct t_edge *e; int index, failed; char why[200]; };

static void *short_sessions(void *p)
{
    struct shorts *a = p;
    char err[256], msg[64];

    for (int i = 0; i < PER_THREAD; i++) {
        struct cessna_ep *ep = cessna_ep_connect(a->e->sup.addr, err, sizeof(err));
        if (!ep) {
            a->failed++;
            snprintf(a->why, sizeof(a->why), "connect: %s", err);
            continue;
        }
        for (int k = 0; k < 3; k++) {
            const void *got;
            int len = snprintf(msg, sizeof(msg), "thread %d session %d message %d", a->index, i, k);
            if (cessna_ep_send(ep, msg, (size_t)len) < 0 || cessna_ep_recv(ep, &got) != len ||
                memcmp(got, msg, (size_t)len) != 0) {
                a->failed++;
                snprintf(a->why, sizeof(a->why), "session %d message %d: %s", i, k,
                         cessna_ep_error(ep));
                break;
            }
            usleep(5000);
        }
        cessna_ep_close(ep, 10000);
        cessna_ep_free(ep);
    }
    return NULL;
}

struct killer { const struct t_edge *e; volatile int stop; int kills; };

static void *killer(void *p)
{
    struct killer *k = p;
    static char out[1 << 16];
    unsigned seed = 4242;

    while (!k->stop) {
        usleep(5000 + rand_r(&seed) % 15000);
        t_ctl(k->e, "sessions", out, sizeof(out));
        pid_t pids[64];
        int n = 0;
        for (char *line = strtok(out, "\n"); line && n < 64; line = strtok(NULL, "\n"))
            if (t_field(line, "worker") > 0 && strstr(line, "state=live"))
                pids[n++] = (pid_t)t_field(line, "worker");
        if (n && kill(pids[rand_r(&seed) % (unsigned)n], SIGKILL) == 0)
            k->kills++;
    }
    return NULL;
}

Test(soak, ten_thousand_sessions, .timeout = 3600)
{
    struct t_echo_ep srv;
    struct t_edge e;
    pthread_t t[THREADS], kt;
    struct shorts a[THREADS];
    struct killer k = { .e = &e };
    char out[4096];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "snapshot_interval_ms = 20\nstandby = hot\n");
    pthread_create(&kt, NULL, killer, &k);
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct shorts){ .e = &e, .index = i };
        pthread_create(&t[i], NULL, short_sessions, &a[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    k.stop = 1;
    pthread_join(kt, NULL);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(a[i].failed, 0, "thread %d: %s", i, a[i].why);
    usleep(500000);
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "sessions_total"), THREADS * PER_THREAD, "%s", out);
    cr_assert_eq(t_field(out, "sessions_failed"), 0, "%s", out);
    pid_t skip[1] = { (pid_t)t_field(out, "zygote_pid") }, live[64];
    int nlive, zombies = t_children(e.sup.pid, skip, 1, live, 64, &nlive);
    printf("soak ten_thousand_sessions: %d kills; %s\nzombies=%d other_children=%d\n", k.kills,
           out, zombies, nlive);
    for (int i = 0; i < nlive && i < 8; i++) {
        char path[64], line[256], cmd[64] = "";
        snprintf(path, sizeof(path), "/proc/%d/stat", live[i]);
        FILE *f = fopen(path, "r");
        if (f && fgets(line, sizeof(line), f))
            printf("left: %.80s\n", line);
        if (f)
            fclose(f);
        snprintf(path, sizeof(path), "/proc/%d/wchan", live[i]);
        if ((f = fopen(path, "r"))) {
            if (fgets(cmd, sizeof(cmd), f))
                printf("  wchan %s\n", cmd);
            fclose(f);
        }
    }
    fflush(stdout);
    cr_assert_eq(zombies, 0);
    cr_assert_eq(nlive, 0);
    t_edge_stop(&e);
}

/* One run of the world; with kills, the edge holding the sessions dies again and again until
 * the clients are done. Returns the node kills. */
static int world_run(struct world *w, int kill_nodes)
{
    struct w_clients c;
    int kills = 0;

    run_clients(w, &c);
    while (kill_nodes) {
        usleep((useconds_t)(60 + (kills * 37) % 100) * 1000);
        int i = busiest_edge(w);
        if (i < 0)
            break;   /* every session ended */
        edge_kill(w, i);
        edge_start(w, i);
        kills++;
    }
    join_clients(w, &c);
    wait_server_transcripts(w);
    return kills;
}

Test(soak, node_losses, .timeout = 7200)
{
    static struct world clean, faulty;
    struct w_opts o = { .standby = "cold", .rounds = 2000 };
    long end = s_now() + soak_seconds();
    int runs = 0, kills = 0;

    world_start(&clean, &o);
    world_run(&clean, 0);
    world_stop(&clean);
    while (s_now() < end) {
        memset(&faulty, 0, sizeof(faulty));
        world_start(&faulty, &o);
        kills += world_run(&faulty, 1);
        world_stop(&faulty);
        compare(&clean, &faulty);
        runs++;
    }
    cr_log_info("soak: %d runs, %d node kills, every byte equal to the run without faults",
                runs, kills);
    printf("soak node losses: %d runs, %d node kills, 0 divergences\n", runs, kills);
}

/* ---- soak/ten_thousand_at_once: CESSNA_SOAK_SESSIONS (10,000) sessions open together on
 * one supervisor, each sending a message a second through the sequencer app for
 * CESSNA_SOAK_SECONDS, with snapshots every second and random workers SIGKILLed meanwhile.
 * Every reply is checked byte for byte against what the client computes on its own (the
 * sequencer's counts and hash chain: a lost, repeated or reordered event shows). ---- */

/* The server endpoint, in a child process: 10,000 sockets on each side would not fit in
 * one process's descriptor limit. One thread, epoll, every message echoed. */
static void many_echo(int lfd)
{
    int efd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL }, evs[256];
    char err[256];

    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
    epoll_ctl(efd, EPOLL_CTL_ADD, lfd, &ev);
    for (;;) {
        int n = epoll_wait(efd, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct cessna_ep *c = evs[i].data.ptr;
            if (!c) {
                while ((c = cessna_ep_accept(lfd, err, sizeof(err)))) {
                    cessna_ep_set_nonblocking(c, 1);
                    struct epoll_event cev = { .events = EPOLLIN, .data.ptr = c };
                    epoll_ctl(efd, EPOLL_CTL_ADD, cessna_ep_fd(c), &cev);
                }
                continue;
            }
            const void *m;
            long len;
            while ((len = cessna_ep_recv(c, &m)) >= 0)
                cessna_ep_send(c, m, (size_t)len);
            if (len != -EAGAIN) {
                epoll_ctl(efd, EPOLL_CTL_DEL, cessna_ep_fd(c), NULL);
                cessna_ep_free(c);
            }
        }
    }
}

static pid_t many_echo_start(char *addr, size_t len)
{
    char err[256];
    int lfd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));

    cr_assert(lfd >= 0, "%s", err);
    snprintf(addr, len, "127.0.0.1:%d", addr_local_port(lfd));
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        many_echo(lfd);
        _exit(0);
    }
    close(lfd);
    return pid;
}

struct seq_client {
    struct cessna_ep *ep;
    uint64_t id, c, s, hash;
    int sent, got, waiting;
    long next_ms;
    char want[192];
    int want_len;
};

static uint64_t fnv(uint64_t h, const void *data, size_t len, unsigned char tag)
{
    const unsigned char *p = data;

    h = (h ^ tag) * 0x100000001b3ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Send message k and compute the one reply it must bring: the sequencer forwards
 * "[c s h]\n" + message to the server, the server echoes it, and that comes back with
 * the sequencer's header after it. */
static int seq_send(struct seq_client *q, int index)
{
    char msg[64], fwd[160];
    int n = snprintf(msg, sizeof(msg), "session %d message %d", index, q->sent + 1);

    q->c++;
    q->hash = fnv(q->hash, msg, (size_t)n, 'c');
    int f = snprintf(fwd, sizeof(fwd), "[c=%" PRIu64 " s=%" PRIu64 " h=%016" PRIx64 "]\n%s",
                     q->c, q->s, q->hash, msg);
    q->s++;
    q->hash = fnv(q->hash, fwd, (size_t)f, 's');
    q->want_len = snprintf(q->want, sizeof(q->want),
                           "[c=%" PRIu64 " s=%" PRIu64 " h=%016" PRIx64 "]\n%s", q->c, q->s,
                           q->hash, fwd);
    q->sent++;
    q->waiting = 1;
    return cessna_ep_send(q->ep, msg, (size_t)n);
}

struct many_killer { const struct t_edge *e; struct seq_client *q; int n; volatile int stop;
                     int kills; };

static void *many_kill(void *p)
{
    struct many_killer *k = p;
    char cmd[64], out[256];
    unsigned seed = 777;
    int last = 0;

    while (!k->stop) {
        usleep(20000 + rand_r(&seed) % 50000);
        snprintf(cmd, sizeof(cmd), "kill-worker %" PRIu64, k->q[rand_r(&seed) % (unsigned)k->n].id);
        t_ctl(k->e, cmd, out, sizeof(out));
        const char *w = strstr(out, "worker=");
        int worker = strncmp(out, "ok", 2) == 0 && w ? atoi(w + 7) : 0;
        k->kills += worker && worker != last;
        last = worker ? worker : last;
    }
    return NULL;
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);

    return v && *v ? atol(v) : dflt;
}

Test(soak, ten_thousand_at_once, .timeout = 7200)
{
    int n = (int)env_long("CESSNA_SOAK_SESSIONS", 10000);
    long seconds = soak_seconds();
    struct seq_client *q = calloc((size_t)n, sizeof(*q));
    struct rlimit rl;
    struct t_edge e;
    char addr[64], err[256], extra[128], out[4096];
    pthread_t kt;

    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    pid_t echo = many_echo_start(addr, sizeof(addr));
    snprintf(extra, sizeof(extra), "max_sessions = %d\nsnapshot_interval_ms = 1000\n", n);
    t_edge_start(&e, t_app("sequencer"), addr, extra);
    long t0 = t_now_ms();
    for (int i = 0; i < n; i++) {
        q[i].ep = cessna_ep_connect(e.sup.addr, err, sizeof(err));
        cr_assert(q[i].ep, "session %d of %d: %s", i, n, err);
        cessna_ep_set_nonblocking(q[i].ep, 1);
        q[i].id = cessna_ep_session_id(q[i].ep);
        q[i].hash = 0xcbf29ce484222325ull;
    }
    long opened_ms = t_now_ms() - t0;
    int efd = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
        cr_assert_eq(epoll_ctl(efd, EPOLL_CTL_ADD, cessna_ep_fd(q[i].ep), &ev), 0);
        q[i].next_ms = t_now_ms() + (long)i * 1000 / n;   /* spread over a second */
    }
    struct many_killer k = { .e = &e, .q = q, .n = n };
    pthread_create(&kt, NULL, many_kill, &k);
    long end = t_now_ms() + seconds * 1000, replies = 0;
    int bad = 0;
    char why[512] = "";
    while (t_now_ms() < end + 30000) {
        long now = t_now_ms();
        int busy = 0;
        for (int i = 0; i < n; i++) {
            busy += q[i].waiting;
            if (!q[i].waiting && now < end && now >= q[i].next_ms) {
                cr_assert_eq(seq_send(&q[i], i), 0, "session %d: %s", i, cessna_ep_error(q[i].ep));
                q[i].next_ms += 1000;
                busy++;
            }
        }
        if (now >= end && !busy)
            break;
        struct epoll_event evs[512];
        int m = epoll_wait(efd, evs, 512, 10);
        for (int j = 0; j < m; j++) {
            struct seq_client *c = &q[evs[j].data.u32];
            const void *msg;
            long len;
            while ((len = cessna_ep_recv(c->ep, &msg)) >= 0) {
                if (!c->waiting || len != c->want_len || memcmp(msg, c->want, (size_t)len)) {
                    if (!bad++)
                        snprintf(why, sizeof(why), "session %u reply %d: got %.*s, want %s",
                                 evs[j].data.u32, c->got + 1, (int)(len > 150 ? 150 : len),
                                 (const char *)msg, c->want);
                }
                c->waiting = 0;
                c->got++;
                replies++;
            }
            cr_assert_eq(len, -EAGAIN, "session %u: %s", evs[j].data.u32,
                         cessna_ep_error(c->ep));
        }
    }
    k.stop = 1;
    pthread_join(kt, NULL);
    int sent = 0, got = 0;
    for (int i = 0; i < n; i++) {
        sent += q[i].sent;
        got += q[i].got;
    }
    /* The last kill may not be reaped yet: wait for its recovery. */
    for (long t = t_now_ms(); t_now_ms() - t < 10000; usleep(50000)) {
        t_ctl(&e, "stats", out, sizeof(out));
        if (t_field(out, "recoveries") >= (uint64_t)k.kills)
            break;
    }
    printf("soak ten_thousand_at_once: %d sessions opened in %ld ms, %d messages, %d replies, "
           "%d wrong, %d kills; %s\n", n, opened_ms, sent, got, bad, k.kills, out);
    fflush(stdout);
    cr_assert_eq(bad, 0, "%d replies differ from what the sequencer must say: %s", bad, why);
    cr_assert_eq(got, sent, "every message got its reply");
    cr_assert_geq(t_field(out, "recoveries"), (uint64_t)k.kills, "%s", out);
    cr_assert_eq(t_field(out, "sessions_failed"), 0, "%s", out);
    for (int i = 0; i < n; i++) {
        cessna_ep_close(q[i].ep, 10000);
        cessna_ep_free(q[i].ep);
    }
    close(efd);
    t_edge_stop(&e);
    kill(echo, SIGKILL);
    waitpid(echo, NULL, 0);
    free(q);
}
