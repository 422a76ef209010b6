/* it_watchdog.c - an app that never returns from an event, or that eats memory until the
 * OOM killer comes, fails its own session with an error naming the cause (after one replay
 * hits the same wall), never hangs it for ever and never replays it for ever; a victim
 * session on the same node keeps echoing exact meanwhile. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cessna_endpoint.h"
#include "t_helpers.h"

/* The victim: echoes in a loop until told to stop; any loss or change fails the test. */
struct victim {
    struct cessna_ep *ep;
    volatile int stop;
    int trips, bad;
    long worst_ms;
};

static void *victim_loop(void *p)
{
    struct victim *v = p;
    char msg[64];

    while (!v->stop) {
        int len = snprintf(msg, sizeof(msg), "victim %d", v->trips);
        const void *got;
        long t0 = t_now_ms();
        if (cessna_ep_send(v->ep, msg, (size_t)len) < 0 ||
            cessna_ep_recv(v->ep, &got) != len || memcmp(got, msg, (size_t)len) != 0) {
            v->bad++;
            return NULL;
        }
        if (t_now_ms() - t0 > v->worst_ms)
            v->worst_ms = t_now_ms() - t0;
        v->trips++;
        usleep(2000);
    }
    return NULL;
}

/* The hostile session sends cmd; it must end with ERROR naming `cause` within timeout_ms. */
static void expect_failed_with(struct cessna_ep *ep, const char *cmd, const char *cause,
                               int timeout_ms)
{
    const void *got;
    long n;

    cr_assert_eq(cessna_ep_send(ep, cmd, strlen(cmd)), 0);
    cessna_ep_set_nonblocking(ep, 1);
    long deadline = t_now_ms() + timeout_ms;
    while ((n = cessna_ep_recv(ep, &got)) == -EAGAIN) {
        cr_assert(t_now_ms() < deadline, "no ERROR within %d ms after %s", timeout_ms, cmd);
        struct pollfd pfd = { .fd = cessna_ep_fd(ep), .events = POLLIN };
        poll(&pfd, 1, 50);
    }
    cr_assert_eq(n, -ECONNABORTED, "recv after %s: %ld %s", cmd, n, cessna_ep_error(ep));
    cr_assert(strstr(cessna_ep_error(ep), cause), "error \"%s\" names %s", cessna_ep_error(ep),
              cause);
}

Test(watchdog, endless_event_fails_its_session_only, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct victim v = { 0 };
    pthread_t t;
    char out[2048];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_test_app("hog"), srv.addr, "max_event_ms = 300\nsnapshot_interval_ms = 50\n");
    v.ep = t_ep_connect(&e);
    pthread_create(&t, NULL, victim_loop, &v);
    struct cessna_ep *bad = t_ep_connect(&e);
    long t0 = t_now_ms();
    expect_failed_with(bad, "SPIN", "max_event_ms=300", 10000);
    long took = t_now_ms() - t0;
    v.stop = 1;
    pthread_join(t, NULL);
    cr_assert_eq(v.bad, 0, "the victim lost an echo");
    cr_assert_gt(v.trips, 50);
    cr_assert(strstr(cessna_ep_error(bad), "again at event"), "a crash loop after one replay: %s",
              cessna_ep_error(bad));
    cr_log_info("failed after %ld ms; victim: %d trips, worst %ld ms", took, v.trips, v.worst_ms);
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "sessions_failed"), 1, "%s", out);
    cessna_ep_free(bad);
    cessna_ep_close(v.ep, 5000);
    cessna_ep_free(v.ep);
    t_edge_stop(&e);
}

/* Faults together: the victim's worker is SIGKILLed again and again (hot standby, 50 ms
 * snapshots) while its neighbour spins into the watchdog. The victim recovers byte-exact,
 * the neighbour fails for its own loop, and no recovery of one is taken for the other. */
struct killer { const struct t_edge *e; uint64_t id; volatile int stop; int kills; };

static void *kill_victim(void *p)
{
    struct killer *k = p;
    char cmd[64], out[256];

    snprintf(cmd, sizeof(cmd), "kill-worker %llu", (unsigned long long)k->id);
    while (!k->stop) {
        usleep(150000);
        t_ctl(k->e, cmd, out, sizeof(out));
        k->kills += strncmp(out, "ok", 2) == 0;
    }
    return NULL;
}

Test(watchdog, victim_killed_while_neighbour_spins, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct victim v = { 0 };
    pthread_t t, tk;
    char out[2048];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_test_app("hog"), srv.addr,
                 "max_event_ms = 300\nsnapshot_interval_ms = 50\nstandby = hot\n");
    v.ep = t_ep_connect(&e);
    struct killer k = { .e = &e, .id = cessna_ep_session_id(v.ep) };
    pthread_create(&t, NULL, victim_loop, &v);
    pthread_create(&tk, NULL, kill_victim, &k);
    struct cessna_ep *bad = t_ep_connect(&e);
    expect_failed_with(bad, "SPIN", "max_event_ms=300", 10000);
    usleep(500000);
    k.stop = 1;
    pthread_join(tk, NULL);
    v.stop = 1;
    pthread_join(t, NULL);
    cr_assert_eq(v.bad, 0, "the victim lost an echo");
    cr_assert_geq(k.kills, 3, "kills landed on the victim: %d", k.kills);
    cr_assert(strstr(cessna_ep_error(bad), "again at event"), "%s", cessna_ep_error(bad));
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "sessions_failed"), 1, "only the spinning session: %s", out);
    cr_log_info("victim: %d trips through %d kills", v.trips, k.kills);
    cessna_ep_free(bad);
    cessna_ep_close(v.ep, 5000);
    cessna_ep_free(v.ep);
    t_edge_stop(&e);
}

/* A memory cgroup (v1 or v2) around the node, so that the OOM killer comes for the hog. */
static int cgroup_limit(char *dir, size_t len, const pid_t *pids, int n, long bytes)
{
    const char *v1 = "/sys/fs/cgroup/memory", *v2 = "/sys/fs/cgroup";
    char path[600];
    FILE *f;
    int is_v1 = access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0;

    snprintf(dir, len, "%s/cessna-test-%d", is_v1 ? v1 : v2, (int)getpid());
    if (mkdir(dir, 0755) == -1 && errno != EEXIST)
        return -1;
    snprintf(path, sizeof(path), "%s/%s", dir, is_v1 ? "memory.limit_in_bytes" : "memory.max");
    if (!(f = fopen(path, "w")) || fprintf(f, "%ld\n", bytes) < 0 || fclose(f) != 0)
        return -1;
    if (is_v1) {   /* no swap to escape to */
        snprintf(path, sizeof(path), "%s/memory.memsw.limit_in_bytes", dir);
        if ((f = fopen(path, "w"))) {
            fprintf(f, "%ld\n", bytes);
            fclose(f);
        }
    }
    snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
    for (int i = 0; i < n; i++) {
        if (!(f = fopen(path, "w")) || fprintf(f, "%d\n", (int)pids[i]) < 0 || fclose(f) != 0)
            return -1;
    }
    return 0;
}

Test(watchdog, oom_kill_at_the_same_event_twice_is_a_crash_loop, .timeout = 120)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct victim v = { 0 };
    pthread_t t;
    char out[2048], dir[512];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_test_app("hog"), srv.addr,   /* the cgroup, not the arena cap, stops it */
                 "snapshot_interval_ms = 50\nmax_session_memory = 4293918720\n");
    t_ctl(&e, "stats", out, sizeof(out));
    pid_t pids[2] = { e.sup.pid, (pid_t)t_field(out, "zygote_pid") };
    if (cgroup_limit(dir, sizeof(dir), pids, 2, 300l << 20) < 0) {
        t_edge_stop(&e);
        cr_skip_test("no writable memory cgroup here (%s): %s", dir, strerror(errno));
    }
    v.ep = t_ep_connect(&e);
    pthread_create(&t, NULL, victim_loop, &v);
    struct cessna_ep *bad = t_ep_connect(&e);
    expect_failed_with(bad, "HOG 2000", "OOM killer", 60000);
    v.stop = 1;
    pthread_join(t, NULL);
    cr_assert_eq(v.bad, 0, "the victim lost an echo");
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_leq(t_field(out, "recoveries"), 1, "replayed once, not for ever: %s", out);
    cessna_ep_free(bad);
    cessna_ep_close(v.ep, 5000);
    cessna_ep_free(v.ep);
    t_edge_stop(&e);
    rmdir(dir);
}

/* A record with a bogus length in the worker's own output ring: that session fails with an
 * ERROR, the supervisor neither spins nor crashes, and the victim goes on. */
Test(watchdog, bogus_ring_record_fails_its_session_only, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct victim v = { 0 };
    pthread_t t;
    char out[2048];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_test_app("ringbreaker"), srv.addr, "sandbox = off\n");
    v.ep = t_ep_connect(&e);
    pthread_create(&t, NULL, victim_loop, &v);
    struct cessna_ep *bad = t_ep_connect(&e);
    expect_failed_with(bad, "BREAK", "broke its output ring", 10000);
    usleep(300000);
    v.stop = 1;
    pthread_join(t, NULL);
    cr_assert_eq(v.bad, 0, "the victim lost an echo");
    cr_assert_gt(v.trips, 20);
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "sessions_failed"), 1, "%s", out);
    cessna_ep_free(bad);
    cessna_ep_close(v.ep, 5000);
    cessna_ep_free(v.ep);
    t_edge_stop(&e);
}
