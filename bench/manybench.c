/* manybench.c - section "sessions" (issue 8 item 5): N concurrent sessions on one edge
 * node against HAProxy with N connections, for each N of --sessions (default 100, 1000,
 * 10000). The same load generator (manyload.c) drives both: native endpoint sessions
 * through cessna-supervisor (passthrough.so) to a native echo server, plain TCP
 * connections through one HAProxy (nbthread 1, maxconn N) to a plain echo server, and the
 * same HAProxy with busy-polling (the edge polls too when it has a core to spare: like with
 * like). --sessions-stacks picks among edge, haproxy, haproxy-busy.
 *
 * Per N and stack, on a stack of its own:
 *   setup     open N with --setup-inflight opens in flight at once (threads), each proven
 *             by one echo: sessions/s over what opened, and one open's p50 / p99
 *   memory    PSS (smaps_rollup) of the edge's whole process tree (supervisor, zygote,
 *             workers) or of HAProxy, plus the kernel's: the change of /proc/meminfo Slab +
 *             PageTables + KernelStack from before the opening to after it. That change is
 *             machine-wide: it holds the client's and the echo server's sockets and threads
 *             too, alike for both stacks, and whatever else the machine did meanwhile.
 *   paced     every session one 64 B message per second for --sessions-seconds
 *   saturating  every session its next message as soon as its echo is back (--seconds)
 *   CPU       user + system time of the edge's tree (reaped children included) during the
 *             paced run, on an edge with snapshot_interval_ms = 1000 and again on one with
 *             0 (no periodic snapshots): the difference is what the snapshots cost.
 *             The supervisor's `stats` snapshots= counter over the run: CPU per snapshot.
 * The edge runs with max_sessions = N (at least 64) under the machine's RLIMIT_NOFILE (not
 * the bench's raised one). HAProxy gets maxconn N, at most what its fd hard limit allows (2
 * per connection). An N that a stack cannot open is reported as refused at the count it
 * reached, with the reason it gave (and the edge's stats counters); the paced and saturating
 * runs are still made with the sessions that opened, marked as such.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

#define SNAP_INTERVAL_MS 1000 /* the supervisor's default */
#define RATE_HZ          1.0  /* paced: messages per session per second */
#define HIBERNATE_AFTER_MS 2000 /* asleep: reloaded after the runs (the default is 30000) */

enum side { SIDE_EDGE = MANY_EDGE, SIDE_HAPROXY = MANY_HAPROXY,
            SIDE_HAPROXY_BUSY = MANY_HAPROXY_BUSY, SIDE_COUNT = MANY_STACKS };

static const char *const side_names[SIDE_COUNT] = { "edge-native", "haproxy1",
                                                    "haproxy1-busy" };

const char *manybench_stack_name(int stack)
{
    return stack >= 0 && stack < SIDE_COUNT ? side_names[stack] : "?";
}

struct side_result {
    int      tried, opened, refused, failed;
    char     why[BENCH_ERRLEN];       /* refused or failed: the reason */
    double   open_s, open_rate;
    int      inflight;
    struct lat_result setup;          /* one open, µs */
    int      capped;                  /* HAProxy: maxconn below N (its fd limit) */
    uint64_t snapshots;               /* edge: snapshots taken during the paced run */
    uint64_t base_pss_kib;            /* before the opening */
    uint64_t pss_kib;                 /* after it */
    int      procs;
    int64_t  kernel_kib;              /* meminfo change over the opening */
    int      paced_ok, sat_ok;
    struct many_result paced, sat;
    double   cpu_s;                   /* during the paced run */
    double   cpu_wall_s;              /* its wall time (warm-up and drain included) */
    double   steal_pct;               /* the machine's time the hypervisor took meanwhile */
    double   others_pct;              /* and what ran outside the bench's processes */
    int      nosnap_ok;               /* edge: the second edge, without snapshots */
    double   cpu_nosnap_s, cpu_nosnap_wall_s, steal_nosnap_pct, others_nosnap_pct;
    struct many_result paced_nosnap;
    uint64_t snapshots_nosnap;
    int      asleep;                  /* edge: sessions hibernated after the runs */
    double   asleep_wait_s;           /* from the end of the saturating run */
    uint64_t asleep_pss_kib;
    int64_t  asleep_kernel_kib;       /* meminfo change from before the opening */
    double   sup_cpu_s;               /* edge: the supervisor's own CPU over the opening */
    double   ahead_s;                 /* edge: making its N session directories ahead */
    int      reopen_ok;               /* edge, --sessions-reopen: the second opening */
    int      reclosed, reopened;      /* closed cleanly; opened again */
    double   reopen_rate, reopen_wait_s, reopen_sup_cpu_s;
    struct lat_result reopen_setup;
    uint64_t reopen_free, reopen_reused; /* stats dirs_free before it, dirs_reused after */
};

struct n_result {
    int                n;
    struct side_result side[SIDE_COUNT];
};

static struct n_result results[BENCH_MAX_MANY];
static int nresults;
static double paced_seconds, sat_seconds;
static int dirs_ahead;   /* the edges made their N session directories ahead (--dirs-ahead) */

static void thousands(char *out, size_t len, double v)
{
    char digits[32];
    int n = snprintf(digits, sizeof(digits), "%.0f", v), lead, o = 0;

    lead = n % 3 ? n % 3 : 3;
    for (int i = 0; i < n && o + 2 < (int)len; i++) {
        if (i > 0 && (i - lead) % 3 == 0 && digits[0] != '-')
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = 0;
}

static long nofile_limit(void)
{
    return proc_nofile_soft();
}

/* A counter of the edge's `stats` line, or 0. */
static uint64_t edge_stat(struct bench_stack *s, const char *key)
{
    char out[2048], err[256];
    uint64_t v = 0;

    if (s->control[0] && ectl_cmd(s->control, "stats", out, sizeof(out), err, sizeof(err)) == 0)
        ectl_field(out, key, &v);
    return v;
}

/* Why the opening stopped: the error, the edge's counters, the stack's last log line or
 * its death. */
static void explain(struct side_result *r, struct bench_stack *s, enum side side, int root,
                    int n, const char *err)
{
    char dead[BENCH_ERRLEN / 2], last[256] = "", at[32], of[32], counters[256] = "";

    thousands(at, sizeof(at), r->opened);
    thousands(of, sizeof(of), n);
    if (stack_check(s, dead, sizeof(dead)) < 0)
        snprintf(last, sizeof(last), "%s", dead);
    else
        proc_log_last(&s->procs[root], last, sizeof(last));
    if (side == SIDE_EDGE && s->control[0]) {
        char out[2048], e2[256];

        if (ectl_cmd(s->control, "stats", out, sizeof(out), e2, sizeof(e2)) == 0) {
            static const char *const keys[] = { "sessions", "sessions_failed",
                                                "accept_fd_limit", "accept_paused",
                                                "hello_timeouts", "worker_deaths" };
            size_t used = 0;

            for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
                uint64_t v;

                if (ectl_field(out, keys[k], &v) == 0)
                    used += (size_t)snprintf(counters + used, sizeof(counters) - used,
                                             "%s%s=%llu", used ? " " : "", keys[k],
                                             (unsigned long long)v);
                if (used >= sizeof(counters))
                    break;
            }
        }
    }
    if (side == SIDE_EDGE)
        snprintf(r->why, sizeof(r->why),
                 "refused at %s of %s sessions (max_sessions %d, the edge's RLIMIT_NOFILE %ld; "
                 "edge stats: %s): %s%s%s", at, of, n > 64 ? n : 64, proc_machine_nofile(),
                 counters[0] ? counters : "unreadable", err,
                 last[0] ? "; last log line: " : "", last);
    else
        snprintf(r->why, sizeof(r->why),
                 "refused at %s of %s connections (maxconn %d%s, RLIMIT_NOFILE hard %ld): %s%s%s",
                 at, of, r->capped ? stack_haproxy_max_conns() : n,
                 r->capped ? ", capped by the fd hard limit: 2 per connection" : "",
                 proc_nofile_hard(), err, last[0] ? "; last log line: " : "", last);
}

/* HAProxy's maxconn for n connections: n, or what its fd hard limit allows. */
static int haproxy_maxconn(int n, int *capped)
{
    int max = stack_haproxy_max_conns();

    *capped = max > 0 && n > max;
    return *capped ? max : n;
}

/* The edge's free session directories (session_dirs_ahead = n): wait until it has made them
 * (stats dirs_ahead_pending=0), as a node that had time to get ready would have; the seconds
 * it took in *ahead_s. Fewer than n (the edge lowered its max_sessions to its descriptor
 * limit, or a mkdir failed: its log says which) is said and not an error. */
static int wait_dirs_ahead(struct bench_stack *s, int n, double *ahead_s, char *err,
                           size_t errlen)
{
    uint64_t t0 = ectl_now_ns(), pending = 1, free_dirs = 0;
    char out[2048], why[256];

    while (pending) {
        if (proc_interrupted())
            return -EINTR;
        if (stack_check(s, err, errlen) < 0)
            return -ESRCH;
        if (ectl_now_ns() - t0 > 120ull * 1000000000ull) {
            snprintf(err, errlen, "the edge had %llu free session directories after 120 s, "
                     "%llu still to make ahead", (unsigned long long)free_dirs,
                     (unsigned long long)pending);
            return -ETIMEDOUT;
        }
        if (ectl_cmd(s->control, "stats", out, sizeof(out), why, sizeof(why)) == 0 &&
            ectl_field(out, "dirs_ahead_pending", &pending) == 0 &&
            ectl_field(out, "dirs_free", &free_dirs) == 0 && !pending)
            break;
        pending = 1;
        usleep(20000);
    }
    *ahead_s = (double)(ectl_now_ns() - t0) / 1e9;
    fprintf(stderr, "cessna-bench: sessions N=%d edge-native: %llu session directories made "
            "ahead in %.1f s%s\n", n, (unsigned long long)free_dirs, *ahead_s,
            free_dirs < (uint64_t)n ? ", fewer than N (see the edge's log)" : "");
    return 0;
}

static int bring_up(struct bench_stack *s, enum side side, int n, unsigned interval_ms,
                    const struct bench_opts *o, int *capped, double *ahead_s, char *err,
                    size_t errlen)
{
    *capped = 0;
    *ahead_s = 0;
    if (side != SIDE_EDGE)
        return stack_up_haproxy(s, o, haproxy_maxconn(n, capped), side == SIDE_HAPROXY_BUSY,
                                err, errlen);
    struct edge_spec e = { .app = "passthrough.so", .snapshot_interval_ms = interval_ms,
                           .many = 1,
                           .max_sessions = (unsigned)(n > 64 ? n : 64),
                           .dirs_ahead = o->many_dirs_ahead_off ? 0 : (unsigned)n };
    snprintf(e.tag, sizeof(e.tag), "sessions-%d-%ums", n, interval_ms);
    int rc = stack_up_edge(s, &e, o, err, errlen);
    if (rc < 0 || !e.dirs_ahead)
        return rc;
    return wait_dirs_ahead(s, n, ahead_s, err, errlen);
}

/* The paced run with the tree's CPU time around it, and the shares of the machine's time
 * that went elsewhere meanwhile: to the hypervisor (steal) and to work outside the bench's
 * processes (kdamond, other programs): on a shared host, what makes one run differ from the
 * next. */
static int paced_with_cpu(struct many_set *m, struct bench_stack *s, struct many_result *res,
                          double *cpu_s, double *wall_s, double *steal_pct, double *others_pct,
                          uint64_t *snapshots, char *err, size_t errlen)
{
    pid_t root = s->procs[1].pid;
    uint64_t n0 = edge_stat(s, "snapshots"), t0 = ectl_now_ns();
    double c0 = ps_tree_cpu_s(root);
    struct ps_machine m0, m1;
    int have_machine = ps_machine_read(&m0) == 0;
    int rc = many_paced(m, RATE_HZ, paced_seconds, res, err, errlen);

    *cpu_s = ps_tree_cpu_s(root) - c0;
    *wall_s = (double)(ectl_now_ns() - t0) / 1e9;
    have_machine = have_machine && ps_machine_read(&m1) == 0;
    *steal_pct = have_machine ? ps_steal_pct(&m0, &m1) : 0.0 / 0.0;
    *others_pct = have_machine ? ps_others_pct(&m0, &m1) : 0.0 / 0.0;
    *snapshots = edge_stat(s, "snapshots") - n0;
    return rc;
}

static void fail(struct side_result *r, struct bench_stack *s, int n, const char *what,
                 const char *err)
{
    char dead[BENCH_ERRLEN / 2];
    int died = s && s->nprocs && stack_check(s, dead, sizeof(dead)) < 0;

    r->failed = 1;
    snprintf(r->why, sizeof(r->why), "%s: %s%s%s", what, err, died ? "; " : "",
             died ? dead : "");
    fprintf(stderr, "cessna-bench: FAILED sessions N=%d: %s\n", n, r->why);
}

/* Asleep: all in per hibernated session (PSS of the tree + kernel growth since before the
 * opening, over the sessions asleep). */
static double kib_asleep(const struct side_result *r)
{
    return r->asleep ? ((double)r->asleep_pss_kib + (double)r->asleep_kernel_kib) / r->asleep
                     : 0.0 / 0.0;
}

/* ... and what they add to the edge before its first session (PSS growth + kernel). */
static double kib_asleep_marginal(const struct side_result *r)
{
    return r->asleep ? ((double)r->asleep_pss_kib - (double)r->base_pss_kib +
                        (double)r->asleep_kernel_kib) / r->asleep : 0.0 / 0.0;
}

/* After the runs, the edge's sessions go quiet: wait until they are all asleep
 * (hibernated: no process, no shared memory) and measure what they hold then. */
static void measure_asleep(struct side_result *r, struct bench_stack *s, uint64_t k0)
{
    struct ps_usage u;
    uint64_t k1, t0 = ectl_now_ns();
    double limit_s = HIBERNATE_AFTER_MS / 1000.0 + 10.0 + r->opened / 200.0;
    char err[BENCH_ERRLEN], ms[16];

    /* The default (30 s) while opening and running: what the paced and saturating rows
     * measure is awake sessions. Now a short one, reloaded (SIGHUP). */
    snprintf(ms, sizeof(ms), "%d", HIBERNATE_AFTER_MS);
    if (stack_edge_reload(s, "hibernate_after_ms", ms, err, sizeof(err)) < 0) {
        fprintf(stderr, "cessna-bench: sessions N=%d edge-native: asleep not measured: %s\n",
                r->opened, err);
        return;
    }
    fprintf(stderr, "cessna-bench: sessions N=%d edge-native: quiet, waiting for %d sessions "
            "to hibernate (hibernate_after_ms = %d)\n", r->opened, r->opened,
            HIBERNATE_AFTER_MS);
    while ((double)(ectl_now_ns() - t0) / 1e9 < limit_s && !proc_interrupted()) {
        r->asleep = (int)edge_stat(s, "hibernated");
        if (r->asleep >= r->opened)
            break;
        usleep(200 * 1000);
    }
    r->asleep_wait_s = (double)(ectl_now_ns() - t0) / 1e9;
    ps_tree_usage(s->procs[1].pid, &u);
    ps_kernel_kib(&k1);
    r->asleep_pss_kib = u.pss_kib;
    r->asleep_kernel_kib = (int64_t)k1 - (int64_t)k0;
    fprintf(stderr, "cessna-bench: sessions N=%d edge-native: %d asleep after %.1f s, %.1f "
            "KiB each all in, %.1f marginal\n", r->opened, r->asleep, r->asleep_wait_s,
            kib_asleep(r), kib_asleep_marginal(r));
}

/* One stack for N: setup, memory, paced (CPU), saturating, and for the edge asleep. */
/* --sessions-reopen: the N sessions closed cleanly (CLOSE each way), the edge left to give
 * their directories back (its stats: sessions=0, dirs_removed up by as many), then N opened
 * again on the same supervisor: with a pool of free session directories it takes those
 * instead of making new ones. -1 when the second opening failed (r->failed says why). */
static int reopen(struct side_result *r, struct bench_stack *s, struct many_set *m, int n,
                  const struct bench_opts *o)
{
    pid_t sup = s->procs[1].pid;
    char err[BENCH_ERRLEN];
    uint64_t removed0 = edge_stat(s, "dirs_removed"), t0;

    fprintf(stderr, "cessna-bench: sessions N=%d edge-native: closing them, then opening %d "
            "again\n", n, n);
    r->reclosed = many_close_clean(m, o->many_inflight, 10000);
    t0 = ectl_now_ns();
    while (!proc_interrupted() && (edge_stat(s, "sessions") != 0 ||
           edge_stat(s, "dirs_removed") < removed0 + (uint64_t)r->reclosed)) {
        if (ectl_now_ns() - t0 > 120ull * 1000000000ull) {
            fail(r, s, n, "reopen", "the closed sessions' directories were not given back "
                 "within 120 s");
            return -1;
        }
        usleep(50000);
    }
    r->reopen_wait_s = (double)(ectl_now_ns() - t0) / 1e9;
    r->reopen_free = edge_stat(s, "dirs_free");
    uint64_t reused0 = edge_stat(s, "dirs_reused");
    double c0 = ps_cpu_s(sup);
    int rc = many_open(m, s->entry, 1, n, o->many_inflight, err, sizeof(err));
    r->reopen_sup_cpu_s = ps_cpu_s(sup) - c0;
    r->reopened = m->proven;
    r->reopen_rate = m->proven_s > 0 ? m->proven / m->proven_s : 0;
    r->reopen_setup = m->setup;
    r->reopen_reused = edge_stat(s, "dirs_reused") - reused0;
    fprintf(stderr, "cessna-bench: sessions N=%d edge-native: first opening %.0f sessions/s "
            "(supervisor CPU %.2f s), closed %d cleanly, given back in %.1f s, %llu free "
            "directories; second opening %.0f sessions/s (supervisor CPU %.2f s), %llu "
            "directories reused\n", n, r->open_rate, r->sup_cpu_s, r->reclosed,
            r->reopen_wait_s, (unsigned long long)r->reopen_free, r->reopen_rate,
            r->reopen_sup_cpu_s, (unsigned long long)r->reopen_reused);
    if (rc < 0) {
        fail(r, s, n, "reopen", err);
        return -1;
    }
    r->reopen_ok = 1;
    return 0;
}

static void measure_side(struct side_result *r, enum side side, int n,
                         const struct bench_opts *o)
{
    struct bench_stack s;
    struct many_set m = { .epfd = -1 };
    char err[BENCH_ERRLEN];
    struct ps_usage u;
    uint64_t k0 = 0, k1 = 0;
    int root = 1; /* procs[0] is the echo server; [1] the supervisor or HAProxy */

    r->tried = 1;
    fprintf(stderr, "cessna-bench: sessions N=%d %s: starting, opening %d, %d in flight\n", n,
            side_names[side], n, o->many_inflight);
    if (bring_up(&s, side, n, SNAP_INTERVAL_MS, o, &r->capped, &r->ahead_s, err,
                 sizeof(err)) < 0) {
        if (side != SIDE_EDGE && !proc_interrupted()) { /* it checks its fd limit first */
            r->refused = 1;
            snprintf(r->why, sizeof(r->why), "refused at 0 connections: HAProxy with maxconn "
                     "%d did not start (RLIMIT_NOFILE %ld / %ld): %s", n, nofile_limit(),
                     proc_nofile_hard(), err);
            fprintf(stderr, "cessna-bench: sessions N=%d %s: %s\n", n, side_names[side], r->why);
        } else {
            fail(r, &s, n, "setup", err);
        }
        goto out;
    }
    ps_tree_usage(s.procs[root].pid, &u);
    r->base_pss_kib = u.pss_kib;
    ps_kernel_kib(&k0);
    double c0 = ps_cpu_s(s.procs[root].pid);
    int rc = many_open(&m, s.entry, side == SIDE_EDGE, n, o->many_inflight, err, sizeof(err));
    r->sup_cpu_s = ps_cpu_s(s.procs[root].pid) - c0;
    ps_kernel_kib(&k1);
    r->opened = m.proven;
    r->inflight = m.inflight;
    r->setup = m.setup;
    r->open_s = m.proven_s; /* the rate of what opened, not the wait for what did not */
    r->open_rate = m.proven_s > 0 ? m.proven / m.proven_s : 0;
    ps_tree_usage(s.procs[root].pid, &u);
    r->pss_kib = u.pss_kib;
    r->procs = u.procs;
    r->kernel_kib = (int64_t)k1 - (int64_t)k0;
    if (rc < 0) {
        r->refused = 1;
        explain(r, &s, side, root, n, err);
        fprintf(stderr, "cessna-bench: sessions N=%d %s: %s\n", n, side_names[side], r->why);
        if (!r->opened || proc_interrupted() || stack_check(&s, err, sizeof(err)) < 0)
            goto out;
        fprintf(stderr, "cessna-bench: sessions N=%d %s: measuring the %d that opened\n", n,
                side_names[side], r->opened);
    }
    if (side == SIDE_EDGE && o->many_reopen && rc == 0 && reopen(r, &s, &m, n, o) < 0)
        goto out;
    fprintf(stderr, "cessna-bench: sessions N=%d %s: paced, %.0f s\n", n, side_names[side],
            paced_seconds);
    if (paced_with_cpu(&m, &s, &r->paced, &r->cpu_s, &r->cpu_wall_s, &r->steal_pct,
                       &r->others_pct, &r->snapshots, err, sizeof(err)) < 0) {
        fail(r, &s, n, "paced run", err);
        goto out;
    }
    r->paced_ok = 1;
    if (side == SIDE_EDGE)
        fprintf(stderr, "cessna-bench: sessions N=%d edge-native: %" PRIu64 " snapshots durable "
                "during the paced run (%.0f/s)\n", n, r->snapshots,
                (double)r->snapshots / paced_seconds);
    fprintf(stderr, "cessna-bench: sessions N=%d %s: saturating, %.1f s\n", n,
            side_names[side], sat_seconds);
    if (many_saturate(&m, sat_seconds, &r->sat, err, sizeof(err)) < 0) {
        fail(r, &s, n, "saturating run", err);
        goto out;
    }
    r->sat_ok = 1;
    if (side == SIDE_EDGE)
        measure_asleep(r, &s, k0);
out:
    many_close(&m);
    stack_down(&s);
}

/* The same paced run on an edge without periodic snapshots: its CPU time. */
static void measure_nosnap(struct side_result *r, int n, const struct bench_opts *o)
{
    struct bench_stack s;
    struct many_set m = { .epfd = -1 };
    char err[BENCH_ERRLEN];
    int capped, want = r->opened; /* as many as the first edge held */
    double ahead_s;

    fprintf(stderr, "cessna-bench: sessions N=%d edge-native without snapshots: %d sessions, "
            "paced, %.0f s\n", n, want, paced_seconds);
    if (bring_up(&s, SIDE_EDGE, n, 0, o, &capped, &ahead_s, err, sizeof(err)) < 0)
        fail(r, &s, n, "setup (no snapshots)", err);
    else if (many_open(&m, s.entry, 1, want, o->many_inflight, err, sizeof(err)) < 0)
        fail(r, &s, n, "opening (no snapshots)", err);
    else if (paced_with_cpu(&m, &s, &r->paced_nosnap, &r->cpu_nosnap_s, &r->cpu_nosnap_wall_s,
                            &r->steal_nosnap_pct, &r->others_nosnap_pct,
                            &r->snapshots_nosnap, err, sizeof(err)) < 0)
        fail(r, &s, n, "paced run (no snapshots)", err);
    else
        r->nosnap_ok = 1;
    many_close(&m);
    stack_down(&s);
}

/* ---- the markdown ---- */

static double kib_all_in(const struct side_result *r)
{
    return r->opened ? ((double)r->pss_kib + (double)r->kernel_kib) / r->opened : 0.0 / 0.0;
}

/* What opening the sessions added: PSS growth + kernel growth, per session. */
static double kib_marginal(const struct side_result *r)
{
    return r->opened ? ((double)r->pss_kib - (double)r->base_pss_kib + (double)r->kernel_kib) /
                       r->opened : 0.0 / 0.0;
}

static void print_row(FILE *f, int n, enum side side, const struct side_result *r)
{
    char nn[32], opened[64], rate[32], pmps[32], smps[32];

    thousands(nn, sizeof(nn), n);
    if (!r->tried) {
        fprintf(f, "| %s | %s | not run | | | | | | | | | | | | | | |\n", nn, side_names[side]);
        return;
    }
    thousands(opened, sizeof(opened), r->opened);
    if (r->refused)
        snprintf(opened + strlen(opened), sizeof(opened) - strlen(opened), " **refused**");
    thousands(rate, sizeof(rate), r->open_rate);
    fprintf(f, "| %s | %s | %s | %s | ", nn, side_names[side], opened, r->opened ? rate : "-");
    if (r->opened)
        fprintf(f, "%.1f / %.1f | ", r->setup.p50_us / 1000.0, r->setup.p99_us / 1000.0);
    else
        fprintf(f, "- | ");
    fprintf(f, "%.1f | %d | %.1f | ", (double)r->pss_kib / 1024.0, r->procs,
            (double)r->kernel_kib / 1024.0);
    if (r->opened)
        fprintf(f, "%.0f | %.0f | ", kib_all_in(r), kib_marginal(r));
    else
        fprintf(f, "- | - | ");
    if (r->paced_ok) {
        thousands(pmps, sizeof(pmps), r->paced.msgs_per_s);
        fprintf(f, "%s | %.0f | %.0f | %" PRIu64 " | ", pmps, r->paced.lat.p50_us,
                r->paced.lat.p99_us, r->paced.late);
    } else {
        fprintf(f, "- | - | - | - | ");
    }
    if (r->sat_ok) {
        thousands(smps, sizeof(smps), r->sat.msgs_per_s);
        fprintf(f, "%s | %.0f | %.0f | ", smps, r->sat.lat.p50_us, r->sat.lat.p99_us);
    } else {
        fprintf(f, "- | - | - | ");
    }
    if (side == SIDE_EDGE && r->asleep)
        fprintf(f, "%d in %.1f s, %.0f / %.0f KiB |\n", r->asleep, r->asleep_wait_s,
                kib_asleep(r), kib_asleep_marginal(r));
    else
        fprintf(f, "- |\n");
}

/* µs of CPU per paced round trip: the CPU of the paced window over the round trips in it. */
static double us_per_rt(double cpu_s, double wall_s, const struct many_result *m)
{
    return m->msgs_per_s > 0 ? 1e6 * cpu_s / (m->msgs_per_s * wall_s) : 0.0 / 0.0;
}

/* µs of CPU per snapshot: what the edge with snapshots spent beyond its round trips at the
 * cost of one without, over its snapshots. */
static double us_per_snapshot(const struct side_result *e)
{
    if (!e->paced_ok || !e->nosnap_ok || !e->snapshots)
        return 0.0 / 0.0;
    double rt_off = us_per_rt(e->cpu_nosnap_s, e->cpu_nosnap_wall_s, &e->paced_nosnap);
    double rts_on = e->paced.msgs_per_s * e->cpu_wall_s;
    return (1e6 * e->cpu_s - rts_on * rt_off) / (double)e->snapshots;
}

/* "; 4% stolen; 16% other work": the machine's time that went elsewhere during a run, each
 * shown from 0.5%. */
static const char *elsewhere(char *buf, size_t len, double steal, double others)
{
    buf[0] = 0;
    if (steal >= 0.5)
        snprintf(buf, len, "; %.0f%% stolen", steal);
    if (others >= 0.5)
        snprintf(buf + strlen(buf), len - strlen(buf), "; %.0f%% other work", others);
    return buf;
}

static void print_cpu(FILE *f, const struct n_result *nr)
{
    const struct side_result *e = &nr->side[SIDE_EDGE];
    char nn[32], mps[32], st[64];

    thousands(nn, sizeof(nn), nr->n);
    fprintf(f, "| %s | ", nn);
    if (!e->paced_ok) {
        fprintf(f, "- | - | - | - | - | - | - | - | - |");
    } else {
        thousands(mps, sizeof(mps), e->paced.msgs_per_s);
        fprintf(f, "%d | %s | %.2f in %.1f s (%.0f%%%s) | %" PRIu64 " | %.0f | ", e->opened, mps,
                e->cpu_s, e->cpu_wall_s, 100.0 * e->cpu_s / e->cpu_wall_s,
                elsewhere(st, sizeof(st), e->steal_pct, e->others_pct), e->snapshots,
                us_per_rt(e->cpu_s, e->cpu_wall_s, &e->paced));
        if (e->nosnap_ok) {
            thousands(mps, sizeof(mps), e->paced_nosnap.msgs_per_s);
            fprintf(f, "%s | %.2f in %.1f s (%.0f%%%s) | %.0f | ", mps, e->cpu_nosnap_s,
                    e->cpu_nosnap_wall_s, 100.0 * e->cpu_nosnap_s / e->cpu_nosnap_wall_s,
                    elsewhere(st, sizeof(st), e->steal_nosnap_pct,
                              e->others_nosnap_pct),
                    us_per_rt(e->cpu_nosnap_s, e->cpu_nosnap_wall_s, &e->paced_nosnap));
            if (e->snapshots)
                fprintf(f, "%.0f |", us_per_snapshot(e));
            else
                fprintf(f, "- |");
        } else {
            fprintf(f, "- | - | - | - |");
        }
    }
    for (int sd = SIDE_HAPROXY; sd < SIDE_COUNT; sd++) {
        const struct side_result *h = &nr->side[sd];

        if (h->paced_ok)
            fprintf(f, " %.2f in %.1f s (%.0f%%%s), %.0f µs |", h->cpu_s, h->cpu_wall_s,
                    100.0 * h->cpu_s / h->cpu_wall_s,
                    elsewhere(st, sizeof(st), h->steal_pct, h->others_pct),
                    us_per_rt(h->cpu_s, h->cpu_wall_s, &h->paced));
        else
            fprintf(f, " - |");
    }
    fprintf(f, "\n");
}

static void print_section(FILE *f, const struct bench_opts *o)
{
    fprintf(f, "## Many sessions: one edge node against HAProxy, %d B messages\n\n", MANY_MSG);
    fprintf(f, "Per N: the edge (cessna-supervisor, passthrough.so, max_sessions = N, "
               "snapshot_interval_ms = %d, busy_poll %s) between native endpoints, one HAProxy "
               "(nbthread 1, maxconn N) before a plain echo server, and the same HAProxy with "
               "busy-polling (haproxy1-busy), all driven by the same one-thread epoll load "
               "generator. Setup: N opened with %d opens in flight at once (threads), each "
               "proven by one echo; sessions/s over what opened; setup ms = one open, "
               "connect to first echo, p50 / p99. %s PSS: smaps_rollup summed over the edge's "
               "tree (supervisor, zygote, workers) or HAProxy alone; procs = processes in it. "
               "Kernel: change of meminfo Slab + PageTables + KernelStack over the opening, "
               "machine-wide (the client's and echo server's sockets included, for every "
               "stack). KiB/session all in = (PSS + kernel) / opened; marginal = (PSS growth + "
               "kernel) / opened. Paced: one message per session per second for %.0f s after "
               "a warm-up second (late = sends skipped because the last echo was still out). "
               "Saturating: one message outstanding per session, %.1f s. RLIMIT_NOFILE: the "
               "edge %ld (the machine's), the load generator and HAProxy %ld / %ld. A refused "
               "row's later columns are measured with the sessions that opened. Asleep "
               "(edge): after the runs the sessions go quiet and hibernate "
               "(hibernate_after_ms = %d): how many did, how long after the saturating run, "
               "and per sleeping session all in / marginal, as above.\n\n",
            SNAP_INTERVAL_MS, o->busy_poll_off ? "off" : "auto", o->many_inflight,
            o->many_dirs_ahead_off
                ? "The edge makes each new session's directory as it opens (--dirs-ahead off)."
                : "The edge runs with session_dirs_ahead = N: the opening starts once it has "
                  "made its N session directories (the time each took is on stderr and in "
                  "--json), so no session makes one (--dirs-ahead off: each does).",
            paced_seconds, sat_seconds, proc_machine_nofile(), nofile_limit(),
            proc_nofile_hard(), HIBERNATE_AFTER_MS);
    fprintf(f, "| N | stack | opened | sessions/s | setup ms p50 / p99 | PSS MiB | procs | "
               "kernel MiB | KiB/session all in | KiB/session marginal | paced msgs/s | "
               "paced p50 µs | paced p99 µs | late | saturating msgs/s | saturating p50 µs | "
               "saturating p99 µs | asleep |\n");
    fprintf(f, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
               "---:|---:|---:|\n");
    for (int i = 0; i < nresults; i++)
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            if (o->many_stacks & (1 << sd))
                print_row(f, results[i].n, (enum side)sd, &results[i].side[sd]);
    fprintf(f, "\nCPU during the paced run, warm-up and drain included (%% of one core; the "
               "edge's tree: supervisor, zygote, workers, reaped snapshot children; each "
               "process's own time from its threads' run times, exact where /proc's clock "
               "ticks round a short-lived worker's few milliseconds down to 0), with snapshots "
               "every %d ms and on a second edge without (as many sessions). Per round trip: "
               "that CPU over the paced round trips. Per snapshot: the CPU beyond the round "
               "trips at the cost of one without snapshots, over the snapshots (the edge's "
               "stats counter over the run). \"stolen\": the share of the machine's time the "
               "hypervisor gave to others during that run (/proc/stat steal); \"other work\": "
               "the share that went to work outside the bench and its stacks (other programs, "
               "kernel threads such as DAMON's kdamond, which walks the mappings of pages "
               "thousands of workers share; /proc/stat's busy time less our processes' run "
               "times); each shown from 0.5%%: the run had that much less machine, which is "
               "what makes runs on a shared host differ:\n\n", SNAP_INTERVAL_MS);
    fprintf(f, "| N | sessions | paced msgs/s, snapshots | edge CPU s, snapshots | snapshots | "
               "µs CPU per round trip | paced msgs/s, none | edge CPU s, none | µs CPU per "
               "round trip, none | µs CPU per snapshot | HAProxy CPU s, per round trip | "
               "HAProxy busy-polling CPU s, per round trip |\n");
    fprintf(f, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < nresults; i++)
        print_cpu(f, &results[i]);
    fprintf(f, "\n");
    if (o->many_reopen) {
        fprintf(f, "Opening twice (--sessions-reopen): the edge's N sessions closed cleanly, "
                   "their directories given back, then N opened again on the same "
                   "supervisor; supervisor CPU = its own user + system over each opening:\n\n");
        fprintf(f, "| N | first sessions/s | first setup ms p50 / p99 | first supervisor CPU s "
                   "| free dirs | second sessions/s | second setup ms p50 / p99 | second "
                   "supervisor CPU s | dirs reused |\n");
        fprintf(f, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (int i = 0; i < nresults; i++) {
            const struct side_result *r = &results[i].side[SIDE_EDGE];
            if (!r->tried || !r->reopened)
                continue;
            fprintf(f, "| %d | %.0f | %.2f / %.2f | %.2f | %llu | %.0f | %.2f / %.2f | %.2f | "
                       "%llu |\n", results[i].n, r->open_rate, r->setup.p50_us / 1000,
                    r->setup.p99_us / 1000, r->sup_cpu_s, (unsigned long long)r->reopen_free,
                    r->reopen_rate, r->reopen_setup.p50_us / 1000,
                    r->reopen_setup.p99_us / 1000, r->reopen_sup_cpu_s,
                    (unsigned long long)r->reopen_reused);
        }
        fprintf(f, "\n");
    }
    for (int i = 0; i < nresults; i++)
        for (int sd = 0; sd < SIDE_COUNT; sd++) {
            const struct side_result *r = &results[i].side[sd];

            if (r->refused || r->failed)
                fprintf(f, "- N=%d %s: %s\n", results[i].n, side_names[sd], r->why);
        }
    fprintf(f, "\n");
}

/* Plot data: memory and throughput against N, one line per stack. */
static void plot_section(const struct bench_opts *o)
{
    FILE *d = plot_data(o, "sessions",
                        "n stack opened setup_per_s kib_all_in kib_marginal paced_msgs_per_s "
                        "paced_p99_us sat_msgs_per_s sat_p99_us");

    if (!d)
        return;
    /* One block per stack (gnuplot: index), rows by N. */
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        if (!(o->many_stacks & (1 << sd)))
            continue;
        fprintf(d, "# %s\n", side_names[sd]);
        for (int i = 0; i < nresults; i++) {
            const struct side_result *r = &results[i].side[sd];

            if (!r->tried || !r->opened)
                continue;
            fprintf(d, "%d %s %d", results[i].n, side_names[sd], r->opened);
            plot_num(d, r->open_rate);
            plot_num(d, kib_all_in(r));
            plot_num(d, kib_marginal(r));
            plot_num(d, r->paced_ok ? r->paced.msgs_per_s : 0.0 / 0.0);
            plot_num(d, r->paced_ok ? r->paced.lat.p99_us : 0.0 / 0.0);
            plot_num(d, r->sat_ok ? r->sat.msgs_per_s : 0.0 / 0.0);
            plot_num(d, r->sat_ok ? r->sat.lat.p99_us : 0.0 / 0.0);
            fputc('\n', d);
        }
        fprintf(d, "\n\n");
    }
    plot_data_close(d);

    char stacks[128] = "", text[2048];
    for (int sd = 0; sd < SIDE_COUNT; sd++)
        if (o->many_stacks & (1 << sd))
            snprintf(stacks + strlen(stacks), sizeof(stacks) - strlen(stacks), "%s%s",
                     stacks[0] ? " " : "", side_names[sd]);
    /* A stack's rows are together: a column is plotted only on its own rows. */
    snprintf(text, sizeof(text),
             "set title \"Memory per session against N (PSS of the stack + kernel growth)\"\n"
             "set xlabel \"N (concurrent sessions / connections)\"\n"
             "set ylabel \"KiB per session\"\n"
             "set logscale x\n"
             "stacks = \"%s\"\n"
             "plot for [i=1:words(stacks)] \"%%D/sessions.dat\" using 1:(strcol(2) eq word(stacks, i) ? $5 : 1/0) "
             "with linespoints lc i title word(stacks, i).\" all in\", "
             "for [i=1:words(stacks)] \"%%D/sessions.dat\" using 1:(strcol(2) eq word(stacks, i) ? $6 : 1/0) "
             "with linespoints lc i dashtype 2 title word(stacks, i).\" marginal\"\n", stacks);
    plot_script(o, "sessions-memory", text);
    snprintf(text, sizeof(text),
             "set title \"Aggregate 64 B messages/s against N (saturating: one outstanding per "
             "session; paced: 1/s per session)\"\n"
             "set xlabel \"N (concurrent sessions / connections)\"\n"
             "set ylabel \"msgs/s\"\n"
             "set logscale xy\n"
             "stacks = \"%s\"\n"
             "plot for [i=1:words(stacks)] \"%%D/sessions.dat\" using 1:(strcol(2) eq word(stacks, i) ? $9 : 1/0) "
             "with linespoints lc i title word(stacks, i).\" saturating\", "
             "for [i=1:words(stacks)] \"%%D/sessions.dat\" using 1:(strcol(2) eq word(stacks, i) ? $7 : 1/0) "
             "with linespoints lc i dashtype 2 title word(stacks, i).\" paced\"\n", stacks);
    plot_script(o, "sessions-throughput", text);
    snprintf(text, sizeof(text),
             "set title \"p99 round trip against N\"\n"
             "set xlabel \"N (concurrent sessions / connections)\"\n"
             "set ylabel \"p99 µs\"\n"
             "set logscale xy\n"
             "stacks = \"%s\"\n"
             "plot for [i=1:words(stacks)] \"%%D/sessions.dat\" using 1:(strcol(2) eq word(stacks, i) ? $10 : 1/0) "
             "with linespoints lc i title word(stacks, i).\" saturating\", "
             "for [i=1:words(stacks)] \"%%D/sessions.dat\" using 1:(strcol(2) eq word(stacks, i) ? $8 : 1/0) "
             "with linespoints lc i dashtype 2 title word(stacks, i).\" paced\"\n", stacks);
    plot_script(o, "sessions-p99", text);
}

int manybench_run(FILE *f, const struct bench_opts *o)
{
    int failed = 0;

    memset(results, 0, sizeof(results));
    paced_seconds = o->many_seconds;
    dirs_ahead = !o->many_dirs_ahead_off;
    sat_seconds = o->seconds;
    nresults = o->nmany;
    for (int i = 0; i < o->nmany && !proc_interrupted(); i++) {
        struct n_result *nr = &results[i];

        nr->n = o->many[i];
        for (int sd = 0; sd < SIDE_COUNT && !proc_interrupted(); sd++) {
            if (!(o->many_stacks & (1 << sd)))
                continue;
            measure_side(&nr->side[sd], (enum side)sd, nr->n, o);
            if (sd == SIDE_EDGE && nr->side[sd].paced_ok && !proc_interrupted())
                measure_nosnap(&nr->side[sd], nr->n, o);
        }
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            failed |= nr->side[sd].failed;
    }
    for (int i = 0; i < o->nmany; i++)
        results[i].n = o->many[i];
    print_section(f, o);
    plot_section(o);
    fflush(f);
    return failed ? -1 : 0; /* a refusal is a result, not a failure */
}

/* ---- the JSON ---- */

static void json_run(struct jsonw *w, const char *key, const struct many_result *r, int ok)
{
    jw_key(w, key);
    if (!ok) {
        jw_str(w, NULL, NULL);
        return;
    }
    jw_obj(w);
    jw_num(w, "seconds", r->seconds);
    jw_num(w, "sent", (double)r->sent);
    jw_num(w, "echoes", (double)r->echoes);
    jw_num(w, "late", (double)r->late);
    jw_num(w, "msgs_per_s", r->msgs_per_s);
    jw_num(w, "p50_us", r->lat.p50_us);
    jw_num(w, "p99_us", r->lat.p99_us);
    jw_num(w, "p999_us", r->lat.p999_us);
    jw_obj_end(w);
}

static void json_side(struct jsonw *w, enum side sd, const struct side_result *r)
{
    jw_key(w, side_names[sd]);
    if (!r->tried) {
        jw_str(w, NULL, NULL);
        return;
    }
    jw_obj(w);
    jw_num(w, "opened", r->opened);
    jw_num(w, "refused", r->refused);
    jw_num(w, "failed", r->failed);
    jw_str(w, "why", r->why[0] ? r->why : NULL);
    jw_num(w, "maxconn_capped", r->capped);
    jw_num(w, "setup_inflight", r->inflight);
    jw_num(w, "setup_s", r->open_s);
    jw_num(w, "setup_per_s", r->open_rate);
    jw_num(w, "setup_p50_us", r->opened ? r->setup.p50_us : 0.0 / 0.0);
    jw_num(w, "setup_p99_us", r->opened ? r->setup.p99_us : 0.0 / 0.0);
    if (sd == SIDE_EDGE)
        jw_num(w, "dirs_ahead_s", dirs_ahead ? r->ahead_s : 0.0 / 0.0);
    jw_num(w, "pss_before_kib", (double)r->base_pss_kib);
    jw_num(w, "pss_kib", (double)r->pss_kib);
    jw_num(w, "procs", r->procs);
    jw_num(w, "kernel_delta_kib", (double)r->kernel_kib);
    jw_num(w, "kib_per_session", kib_all_in(r));
    jw_num(w, "kib_per_session_marginal", kib_marginal(r));
    json_run(w, "paced", &r->paced, r->paced_ok);
    json_run(w, "saturating", &r->sat, r->sat_ok);
    jw_num(w, "cpu_paced_s", r->paced_ok ? r->cpu_s : 0.0 / 0.0);
    jw_num(w, "cpu_paced_wall_s", r->paced_ok ? r->cpu_wall_s : 0.0 / 0.0);
    jw_num(w, "cpu_per_round_trip_us", r->paced_ok ? us_per_rt(r->cpu_s, r->cpu_wall_s, &r->paced)
                                                   : 0.0 / 0.0);
    jw_num(w, "steal_paced_pct", r->paced_ok ? r->steal_pct : 0.0 / 0.0);
    jw_num(w, "others_paced_pct", r->paced_ok ? r->others_pct : 0.0 / 0.0);
    if (sd == SIDE_EDGE) {
        double on = r->paced_ok ? r->cpu_s / r->cpu_wall_s : 0.0 / 0.0;
        double off = r->nosnap_ok ? r->cpu_nosnap_s / r->cpu_nosnap_wall_s : 0.0 / 0.0;

        jw_num(w, "setup_supervisor_cpu_s", r->sup_cpu_s);
        if (r->reopened) {
            jw_num(w, "reopen_closed", r->reclosed);
            jw_num(w, "reopen_opened", r->reopened);
            jw_num(w, "reopen_free_dirs", (double)r->reopen_free);
            jw_num(w, "reopen_dirs_reused", (double)r->reopen_reused);
            jw_num(w, "reopen_setup_per_s", r->reopen_rate);
            jw_num(w, "reopen_setup_p50_us", r->reopen_setup.p50_us);
            jw_num(w, "reopen_setup_p99_us", r->reopen_setup.p99_us);
            jw_num(w, "reopen_supervisor_cpu_s", r->reopen_sup_cpu_s);
        }
        jw_num(w, "snapshots_paced", r->paced_ok ? (double)r->snapshots : 0.0 / 0.0);
        jw_num(w, "cpu_paced_no_snapshots_s", r->nosnap_ok ? r->cpu_nosnap_s : 0.0 / 0.0);
        jw_num(w, "cpu_paced_no_snapshots_wall_s", r->nosnap_ok ? r->cpu_nosnap_wall_s
                                                                : 0.0 / 0.0);
        jw_num(w, "steal_paced_no_snapshots_pct", r->nosnap_ok ? r->steal_nosnap_pct
                                                               : 0.0 / 0.0);
        jw_num(w, "others_paced_no_snapshots_pct", r->nosnap_ok ? r->others_nosnap_pct
                                                                 : 0.0 / 0.0);
        jw_num(w, "asleep", r->asleep);
        jw_num(w, "asleep_wait_s", r->asleep ? r->asleep_wait_s : 0.0 / 0.0);
        jw_num(w, "asleep_pss_kib", r->asleep ? (double)r->asleep_pss_kib : 0.0 / 0.0);
        jw_num(w, "asleep_kernel_delta_kib", r->asleep ? (double)r->asleep_kernel_kib
                                                        : 0.0 / 0.0);
        jw_num(w, "kib_per_session_asleep", kib_asleep(r));
        jw_num(w, "kib_per_session_asleep_marginal", kib_asleep_marginal(r));
        jw_num(w, "snapshots_cores", on - off);
        json_run(w, "paced_no_snapshots", &r->paced_nosnap, r->nosnap_ok);
        jw_num(w, "cpu_per_round_trip_no_snapshots_us", r->nosnap_ok ?
                   us_per_rt(r->cpu_nosnap_s, r->cpu_nosnap_wall_s, &r->paced_nosnap) : 0.0 / 0.0);
        jw_num(w, "cpu_per_snapshot_us", us_per_snapshot(r));
    }
    jw_obj_end(w);
}

void manybench_json(struct jsonw *w)
{
    jw_key(w, "sessions");
    jw_obj(w);
    jw_num(w, "nofile_edge", (double)proc_machine_nofile());
    jw_num(w, "nofile_bench", (double)nofile_limit());
    jw_num(w, "nofile_bench_hard", (double)proc_nofile_hard());
    jw_num(w, "message_bytes", MANY_MSG);
    jw_num(w, "snapshot_interval_ms", SNAP_INTERVAL_MS);
    jw_num(w, "paced_rate_hz", RATE_HZ);
    jw_num(w, "paced_seconds", paced_seconds);
    jw_num(w, "dirs_ahead", dirs_ahead);
    jw_num(w, "saturating_seconds", sat_seconds);
    jw_key(w, "runs");
    jw_arr(w);
    for (int i = 0; i < nresults; i++) {
        jw_obj(w);
        jw_num(w, "n", results[i].n);
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            json_side(w, (enum side)sd, &results[i].side[sd]);
        jw_obj_end(w);
    }
    jw_arr_end(w);
    jw_obj_end(w);
}
