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
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
