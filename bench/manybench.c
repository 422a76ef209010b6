/* manybench.c - section "sessions" (issue 8 item 5): N concurrent sessions on one edge
 * node against HAProxy with N connections, for each N of --sessions (default 100, 1000,
 * 10000). The same load generator (manyload.c) drives both: native endpoint sessions
 * through cessna-supervisor (passthrough.so) to a native echo server, plain TCP
 * connections through one HAProxy (nbthread 1, maxconn N) to a plain echo server.
 *
 * Per N and stack, on a stack of its own:
 *   setup     open N one after the other, each proven by one echo: sessions/s
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
 * The edge runs with max_sessions = N (at least 64). An N that a stack cannot open is
 * reported as refused at the count it reached, with the reason it gave; the rest of that
 * stack's measurements for that N are not made.
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

enum side { SIDE_EDGE, SIDE_HAPROXY, SIDE_COUNT };

static const char *const side_names[SIDE_COUNT] = { "edge-native", "haproxy1" };

struct side_result {
    int      tried, opened, refused, failed;
    char     why[BENCH_ERRLEN];       /* refused or failed: the reason */
    double   open_s, open_rate;
    uint64_t base_pss_kib;            /* before the opening */
    uint64_t pss_kib;                 /* after it */
    int      procs;
    int64_t  kernel_kib;              /* meminfo change over the opening */
    int      paced_ok, sat_ok;
    struct many_result paced, sat;
    double   cpu_s;                   /* during the paced run */
    int      nosnap_ok;               /* edge: the second edge, without snapshots */
    double   cpu_nosnap_s;
    struct many_result paced_nosnap;
};

struct n_result {
    int                n;
    struct side_result side[SIDE_COUNT];
};

static struct n_result results[BENCH_MAX_MANY];
static int nresults;
static double paced_seconds, sat_seconds;

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
    struct rlimit rl;

    return getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur : -1;
}

/* Why the opening stopped: the error, and the stack's last log line or its death. */
static void explain(struct side_result *r, struct bench_stack *s, int root, int n,
                    const char *err)
{
    char dead[BENCH_ERRLEN / 2], last[256] = "", at[32];

    thousands(at, sizeof(at), r->opened);
    if (stack_check(s, dead, sizeof(dead)) < 0)
        snprintf(last, sizeof(last), "%s", dead);
    else
        proc_log_last(&s->procs[root], last, sizeof(last));
    snprintf(r->why, sizeof(r->why),
             "refused at %s sessions (max_sessions/maxconn %d, RLIMIT_NOFILE %ld, pid_max "
             "applies to workers): %s%s%s", at, n, nofile_limit(), err,
             last[0] ? "; last log line: " : "", last);
}

static int bring_up(struct bench_stack *s, enum side side, int n, unsigned interval_ms,
                    const struct bench_opts *o, char *err, size_t errlen)
{
    if (side == SIDE_HAPROXY)
        return stack_up_haproxy(s, o, n, err, errlen);
    struct edge_spec e = { .app = "passthrough.so", .snapshot_interval_ms = interval_ms,
                           .max_sessions = (unsigned)(n > 64 ? n : 64) };
    snprintf(e.tag, sizeof(e.tag), "sessions-%d-%ums", n, interval_ms);
    return stack_up_edge(s, &e, o, err, errlen);
}

/* The edge's node-wide snapshot count (cessna-ctl stats), or 0. */
static uint64_t edge_snapshots(const struct bench_stack *s)
{
    char out[4096], err[128];
    uint64_t v = 0;

    if (!s->control[0] || ectl_cmd(s->control, "stats", out, sizeof(out), err, sizeof(err)) < 0)
        return 0;
    ectl_field(out, "snapshots", &v);
    return v;
}

/* The paced run with the tree's CPU time around it. */
static int paced_with_cpu(struct many_set *m, pid_t root, struct many_result *res,
                          double *cpu_s, char *err, size_t errlen)
{
    double c0 = ps_tree_cpu_s(root);
    int rc = many_paced(m, RATE_HZ, paced_seconds, res, err, errlen);

    *cpu_s = ps_tree_cpu_s(root) - c0;
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

/* One stack for N: setup, memory, paced (CPU), saturating. */
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
    fprintf(stderr, "cessna-bench: sessions N=%d %s: starting, opening %d\n", n,
            side_names[side], n);
    if (bring_up(&s, side, n, SNAP_INTERVAL_MS, o, err, sizeof(err)) < 0) {
        if (side == SIDE_HAPROXY && !proc_interrupted()) { /* it checks its fd limit first */
            r->refused = 1;
            snprintf(r->why, sizeof(r->why), "refused at 0 connections: HAProxy with maxconn "
                     "%d did not start (RLIMIT_NOFILE %ld): %s", n, nofile_limit(), err);
            fprintf(stderr, "cessna-bench: sessions N=%d haproxy1: %s\n", n, r->why);
        } else {
            fail(r, &s, n, "setup", err);
        }
        goto out;
    }
    ps_tree_usage(s.procs[root].pid, &u);
    r->base_pss_kib = u.pss_kib;
    ps_kernel_kib(&k0);
    int rc = many_open(&m, s.entry, side == SIDE_EDGE, n, err, sizeof(err));
    ps_kernel_kib(&k1);
    r->opened = m.proven;
    r->open_s = m.proven_s; /* the rate of what opened, not the wait for what did not */
    r->open_rate = m.proven_s > 0 ? m.proven / m.proven_s : 0;
    ps_tree_usage(s.procs[root].pid, &u);
    r->pss_kib = u.pss_kib;
    r->procs = u.procs;
    r->kernel_kib = (int64_t)k1 - (int64_t)k0;
    if (rc < 0) {
        r->refused = 1;
        explain(r, &s, root, n, err);
        fprintf(stderr, "cessna-bench: sessions N=%d %s: %s\n", n, side_names[side], r->why);
        goto out;
    }
    fprintf(stderr, "cessna-bench: sessions N=%d %s: paced, %.0f s\n", n, side_names[side],
            paced_seconds);
    uint64_t snaps0 = side == SIDE_EDGE ? edge_snapshots(&s) : 0;
    if (paced_with_cpu(&m, s.procs[root].pid, &r->paced, &r->cpu_s, err, sizeof(err)) < 0) {
        fail(r, &s, n, "paced run", err);
        goto out;
    }
    r->paced_ok = 1;
    if (side == SIDE_EDGE)
        fprintf(stderr, "cessna-bench: sessions N=%d edge-native: %" PRIu64 " snapshots durable "
                "during the paced run (%.0f/s)\n", n, edge_snapshots(&s) - snaps0,
                (double)(edge_snapshots(&s) - snaps0) / paced_seconds);
    fprintf(stderr, "cessna-bench: sessions N=%d %s: saturating, %.1f s\n", n,
            side_names[side], sat_seconds);
    if (many_saturate(&m, sat_seconds, &r->sat, err, sizeof(err)) < 0) {
        fail(r, &s, n, "saturating run", err);
        goto out;
    }
    r->sat_ok = 1;
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

    fprintf(stderr, "cessna-bench: sessions N=%d edge-native without snapshots: paced, %.0f s\n",
            n, paced_seconds);
    if (bring_up(&s, SIDE_EDGE, n, 0, o, err, sizeof(err)) < 0)
        fail(r, &s, n, "setup (no snapshots)", err);
    else if (many_open(&m, s.entry, 1, n, err, sizeof(err)) < 0)
        fail(r, &s, n, "opening (no snapshots)", err);
    else if (paced_with_cpu(&m, s.procs[1].pid, &r->paced_nosnap, &r->cpu_nosnap_s, err,
                            sizeof(err)) < 0)
        fail(r, &s, n, "paced run (no snapshots)", err);
    else
        r->nosnap_ok = 1;
    many_close(&m);
    stack_down(&s);
}

/* ---- the markdown ---- */

static void print_row(FILE *f, int n, enum side side, const struct side_result *r)
{
    char nn[32], opened[32], rate[32], pmps[32], smps[32];
    double total_kib = (double)r->pss_kib + (double)r->kernel_kib;

    thousands(nn, sizeof(nn), n);
    thousands(opened, sizeof(opened), r->opened);
    if (!r->tried) {
        fprintf(f, "| %s | %s | not run | | | | | | | | | |\n", nn, side_names[side]);
        return;
    }
    thousands(rate, sizeof(rate), r->open_rate);
    fprintf(f, "| %s | %s | %s%s | %s | %.1f | %d | %.1f | %.1f | ", nn, side_names[side],
            opened, r->refused ? " **refused**" : "", r->opened ? rate : "-",
            (double)r->pss_kib / 1024.0, r->procs, (double)r->kernel_kib / 1024.0,
            r->opened ? total_kib / r->opened : 0.0);
    if (r->paced_ok) {
        thousands(pmps, sizeof(pmps), r->paced.msgs_per_s);
        fprintf(f, "%s | %.0f | %" PRIu64 " | ", pmps, r->paced.lat.p99_us, r->paced.late);
    } else {
        fprintf(f, "- | - | - | ");
    }
    if (r->sat_ok) {
        thousands(smps, sizeof(smps), r->sat.msgs_per_s);
        fprintf(f, "%s | %.0f |\n", smps, r->sat.lat.p99_us);
    } else {
        fprintf(f, "- | - |\n");
    }
}

static void print_cpu(FILE *f, const struct n_result *nr)
{
    const struct side_result *e = &nr->side[SIDE_EDGE], *h = &nr->side[SIDE_HAPROXY];
    char nn[32];

    thousands(nn, sizeof(nn), nr->n);
    if (!e->paced_ok) {
        fprintf(f, "| %s | - | - | - | - | %s |\n", nn,
                h->paced_ok ? "" : "-");
        return;
    }
    double secs = e->paced.seconds + 1.0 / RATE_HZ; /* the CPU window holds the warm-up */
    fprintf(f, "| %s | %.2f (%.1f%%) | ", nn, e->cpu_s, 100.0 * e->cpu_s / secs);
    if (e->nosnap_ok) {
        double d = e->cpu_s - e->cpu_nosnap_s;
        fprintf(f, "%.2f (%.1f%%) | %.2f (%.1f%%) | %.1f | ", e->cpu_nosnap_s,
                100.0 * e->cpu_nosnap_s / secs, d, 100.0 * d / secs,
                1e6 * d / secs / nr->n);
    } else {
        fprintf(f, "- | - | - | ");
    }
    if (h->paced_ok)
        fprintf(f, "%.2f (%.1f%%) |\n", h->cpu_s, 100.0 * h->cpu_s / secs);
    else
        fprintf(f, "- |\n");
}

static void print_section(FILE *f, const struct bench_opts *o)
{
    fprintf(f, "## Many sessions: one edge node against HAProxy, %d B messages\n\n", MANY_MSG);
    fprintf(f, "Per N: the edge (cessna-supervisor, passthrough.so, max_sessions = N, "
               "snapshot_interval_ms = %d) between native endpoints, and one HAProxy "
               "(nbthread 1, maxconn N) before a plain echo server, both driven by the same "
               "one-thread epoll load generator. Setup: N opened one after the other, each "
               "proven by one echo. PSS: smaps_rollup summed over the edge's tree (supervisor, "
               "zygote, workers) or HAProxy alone; procs = processes in it. Kernel: change of "
               "meminfo Slab + PageTables + KernelStack over the opening, machine-wide (the "
               "client's and echo server's sockets and threads included, for both stacks). "
               "KiB/session = (PSS + kernel) / opened. Paced: one message per session per "
               "second for %.0f s after a warm-up second (late = sends skipped because the last "
               "echo was still out). Saturating: one message outstanding per session, %.1f s. "
               "RLIMIT_NOFILE of the bench and its children: %ld.\n\n",
            SNAP_INTERVAL_MS, paced_seconds, sat_seconds, nofile_limit());
    fprintf(f, "| N | stack | opened | sessions/s | PSS MiB | procs | kernel MiB | "
               "KiB/session | paced msgs/s | paced p99 µs | late | saturating msgs/s | "
               "saturating p99 µs |\n");
    fprintf(f, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < nresults; i++)
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            print_row(f, results[i].n, (enum side)sd, &results[i].side[sd]);
    fprintf(f, "\nCPU during the paced run (user + system of the edge's tree, reaped snapshot "
               "children included; %% of one core), with snapshots every %d ms and on a second "
               "edge without; the difference is the snapshots' cost:\n\n", SNAP_INTERVAL_MS);
    fprintf(f, "| N | edge CPU s, snapshots | edge CPU s, none | snapshots' CPU s | "
               "µs CPU per session-second | HAProxy CPU s |\n");
    fprintf(f, "|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < nresults; i++)
        print_cpu(f, &results[i]);
    fprintf(f, "\n");
    for (int i = 0; i < nresults; i++)
        for (int sd = 0; sd < SIDE_COUNT; sd++) {
            const struct side_result *r = &results[i].side[sd];

            if (r->refused || r->failed)
                fprintf(f, "- N=%d %s: %s\n", results[i].n, side_names[sd], r->why);
        }
    fprintf(f, "\n");
    (void)o;
}

int manybench_run(FILE *f, const struct bench_opts *o)
{
    int failed = 0;

    memset(results, 0, sizeof(results));
    paced_seconds = o->many_seconds;
    sat_seconds = o->seconds;
    nresults = o->nmany;
    for (int i = 0; i < o->nmany && !proc_interrupted(); i++) {
        struct n_result *nr = &results[i];

        nr->n = o->many[i];
        measure_side(&nr->side[SIDE_EDGE], SIDE_EDGE, nr->n, o);
        if (nr->side[SIDE_EDGE].paced_ok && !proc_interrupted())
            measure_nosnap(&nr->side[SIDE_EDGE], nr->n, o);
        if (!proc_interrupted())
            measure_side(&nr->side[SIDE_HAPROXY], SIDE_HAPROXY, nr->n, o);
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            failed |= nr->side[sd].failed;
    }
    for (int i = 0; i < o->nmany; i++)
        results[i].n = o->many[i];
    print_section(f, o);
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
    jw_obj(w);
    jw_num(w, "tried", r->tried);
    jw_num(w, "opened", r->opened);
    jw_num(w, "refused", r->refused);
    jw_num(w, "failed", r->failed);
    jw_str(w, "why", r->why[0] ? r->why : NULL);
    jw_num(w, "setup_s", r->open_s);
    jw_num(w, "setup_per_s", r->open_rate);
    jw_num(w, "pss_before_kib", (double)r->base_pss_kib);
    jw_num(w, "pss_kib", (double)r->pss_kib);
    jw_num(w, "procs", r->procs);
    jw_num(w, "kernel_delta_kib", (double)r->kernel_kib);
    jw_num(w, "kib_per_session", r->opened ? ((double)r->pss_kib + (double)r->kernel_kib) /
                                             r->opened : 0.0 / 0.0);
    json_run(w, "paced", &r->paced, r->paced_ok);
    json_run(w, "saturating", &r->sat, r->sat_ok);
    jw_num(w, "cpu_paced_s", r->paced_ok ? r->cpu_s : 0.0 / 0.0);
    if (sd == SIDE_EDGE) {
        jw_num(w, "cpu_paced_no_snapshots_s", r->nosnap_ok ? r->cpu_nosnap_s : 0.0 / 0.0);
        jw_num(w, "cpu_snapshots_s", r->nosnap_ok ? r->cpu_s - r->cpu_nosnap_s : 0.0 / 0.0);
    }
    jw_obj_end(w);
}

int manybench_write_json(const char *path, const double la_start[3], const double la_end[3],
                         char *err, size_t errlen)
{
    FILE *f = fopen(path, "w");
    struct jsonw w = { .f = f };

    if (!f) {
        int rc = -errno;
        snprintf(err, errlen, "--json %s: %s", path, strerror(errno));
        return rc;
    }
    jw_obj(&w);
    jw_str(&w, "section", "sessions");
    jw_num(&w, "cpus", (double)sysconf(_SC_NPROCESSORS_ONLN));
    jw_key(&w, "loadavg_start");
    jw_arr(&w);
    for (int i = 0; i < 3; i++)
        jw_num(&w, NULL, la_start[i]);
    jw_arr_end(&w);
    jw_key(&w, "loadavg_end");
    jw_arr(&w);
    for (int i = 0; i < 3; i++)
        jw_num(&w, NULL, la_end[i]);
    jw_arr_end(&w);
    jw_num(&w, "nofile_limit", (double)nofile_limit());
    jw_num(&w, "message_bytes", MANY_MSG);
    jw_num(&w, "snapshot_interval_ms", SNAP_INTERVAL_MS);
    jw_num(&w, "paced_rate_hz", RATE_HZ);
    jw_num(&w, "paced_seconds", paced_seconds);
    jw_num(&w, "saturating_seconds", sat_seconds);
    jw_key(&w, "runs");
    jw_arr(&w);
    for (int i = 0; i < nresults; i++) {
        jw_obj(&w);
        jw_num(&w, "n", results[i].n);
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            json_side(&w, (enum side)sd, &results[i].side[sd]);
        jw_obj_end(&w);
    }
    jw_arr_end(&w);
    jw_obj_end(&w);
    if (fclose(f) != 0) {
        int rc = -errno;
        snprintf(err, errlen, "--json %s: %s", path, strerror(errno));
        return rc;
    }
    return 0;
}
