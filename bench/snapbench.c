/* snapbench.c - section "snapshot": what a snapshot costs against the size of the app's
 * state (DESIGN.md section 5).
 *
 * Per state size, one supervisor running ballast.so with snapshot_interval_ms = 0 (the
 * bench asks for each snapshot on the control socket), and o->snap_runs sessions in turn.
 * In each: "BALLAST <size>" makes the app allocate and fill that much arena memory; the
 * first snapshot of a session is full; then "TOUCH 16" changes 16 pages (all of a smaller
 * ballast) and the next snapshot is a delta. Each reports fork_us (the pause the session
 * sees: the worker's fork), write_us (the frozen child writing, fsyncing and renaming the
 * file) and snapshot_bytes. The table shows medians over the sessions.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "cessna_endpoint.h"

#define MAX_RUNS          16
#define TOUCH_PAGES       16
#define REPLY_TIMEOUT_MS  60000 /* filling 256 MiB takes a while on a slow machine */
#define TARGET_SIZE       (1u << 20)
#define TARGET_FORK_US    200.0

struct snap_row {
    size_t size;
    int    runs;                  /* sessions measured */
    double full_fork_us[MAX_RUNS], full_write_ms[MAX_RUNS], full_mb[MAX_RUNS];
    double delta_fork_us[MAX_RUNS], delta_write_ms[MAX_RUNS], delta_kb[MAX_RUNS];
    int    failed;
    char   err[BENCH_ERRLEN];
};

/* Send a command the app answers with "ok". */
static int ballast_cmd(struct bench_conn *c, const char *cmd, char *err, size_t errlen)
{
    char reply[256], why[BENCH_ERRLEN];
    int rc = ectl_ask(c, cmd, strlen(cmd), reply, sizeof(reply), REPLY_TIMEOUT_MS, why,
                      sizeof(why));

    if (rc < 0) {
        snprintf(err, errlen, "'%s': %s", cmd, why);
        return rc;
    }
    if (strcmp(reply, "ok") != 0) {
        snprintf(err, errlen, "'%s' answered '%s' (want ok)", cmd, reply);
        return -EPROTO;
    }
    return 0;
}

/* "64 KiB" -> "snapshot-64KiB" */
static void size_tag(char *tag, size_t len, const char *prefix, size_t size)
{
    char label[32];
    size_t n = (size_t)snprintf(tag, len, "%s-", prefix);

    report_size_label(size, label, sizeof(label));
    for (const char *p = label; *p && n + 1 < len; p++)
        if (*p != ' ')
            tag[n++] = *p;
    tag[n] = 0;
}

/* One snapshot of the kind the edge should take next; checks the kind. */
static int take(struct bench_stack *s, uint64_t id, int want_full, struct ectl_snap *r,
                char *err, size_t errlen)
{
    char why[BENCH_ERRLEN];
    int rc = ectl_snapshot(s, id, r, why, sizeof(why));

    if (rc < 0) {
        snprintf(err, errlen, "%s snapshot: %s", want_full ? "full" : "delta", why);
        return rc;
    }
    if (r->full != want_full) {
        snprintf(err, errlen, "asked for a snapshot expecting a %s one, the edge took a %s",
                 want_full ? "full" : "delta", r->full ? "full" : "delta");
        return -EPROTO;
    }
    return 0;
}

/* One session: ballast, full snapshot, touch, delta snapshot. */
static int one_session(struct bench_stack *s, struct snap_row *row, char *err, size_t errlen)
{
    struct bench_conn c;
    struct ectl_snap full, delta;
    size_t pages = row->size / 4096 < TOUCH_PAGES ? row->size / 4096 : TOUCH_PAGES;
    char cmd[64];
    int i = row->runs, rc;

    rc = load_connect(&c, s->entry, 1, err, errlen);
    if (rc < 0)
        return rc;
    uint64_t id = cessna_ep_session_id(c.ep);
    snprintf(cmd, sizeof(cmd), "BALLAST %zu", row->size);
    rc = ballast_cmd(&c, cmd, err, errlen);
    if (rc == 0)
        rc = take(s, id, 1, &full, err, errlen);
    snprintf(cmd, sizeof(cmd), "TOUCH %zu", pages);
    if (rc == 0)
        rc = ballast_cmd(&c, cmd, err, errlen);
    if (rc == 0)
        rc = take(s, id, 0, &delta, err, errlen);
    load_close(&c);
    if (rc < 0)
        return rc;
    row->full_fork_us[i] = (double)full.fork_us;
    row->full_write_ms[i] = (double)full.write_us / 1000.0;
    row->full_mb[i] = (double)full.bytes / 1e6;
    row->delta_fork_us[i] = (double)delta.fork_us;
    row->delta_write_ms[i] = (double)delta.write_us / 1000.0;
    row->delta_kb[i] = (double)delta.bytes / 1e3;
    row->runs++;
    return 0;
}

static void fail_row(struct snap_row *row, struct bench_stack *s, const char *what,
                     const char *why)
{
    char dead[BENCH_ERRLEN / 2], label[32];
    int died = s && stack_check(s, dead, sizeof(dead)) < 0;

    report_size_label(row->size, label, sizeof(label));
    row->failed = 1;
    snprintf(row->err, sizeof(row->err), "snapshot %s %s: %s%s%s", label, what, why,
             died ? "; " : "", died ? dead : "");
    fprintf(stderr, "cessna-bench: FAILED %s\n", row->err);
}

static void run_size(const struct bench_opts *o, struct snap_row *row)
{
    struct edge_spec e = { .app = "ballast.so" };
    struct bench_stack s;
    char label[32], err[BENCH_ERRLEN];
    int runs = o->snap_runs < MAX_RUNS ? o->snap_runs : MAX_RUNS;

    report_size_label(row->size, label, sizeof(label));
    size_tag(e.tag, sizeof(e.tag), "snapshot", row->size);
    fprintf(stderr, "cessna-bench: snapshot %s: %d session(s), full then delta\n", label, runs);
    if (stack_up_edge(&s, &e, o, err, sizeof(err)) < 0) {
        fail_row(row, NULL, "setup", err);
        stack_down(&s);
        return;
    }
    for (int r = 0; r < runs; r++)
        if (one_session(&s, row, err, sizeof(err)) < 0) {
            fail_row(row, &s, "session", err);
            break;
        }
    stack_down(&s);
}

static void print_row(FILE *f, struct snap_row *row)
{
    char label[32];
    int n = row->runs;

    report_size_label(row->size, label, sizeof(label));
    if (!n) {
        fprintf(f, "| %s | failed | | | | | |\n", label);
        return;
    }
    fprintf(f, "| %s | %.0f | %.2f | %.2f | %.0f | %.2f | %.1f |\n", label,
            report_median(row->full_fork_us, n), report_median(row->full_write_ms, n),
            report_median(row->full_mb, n), report_median(row->delta_fork_us, n),
            report_median(row->delta_write_ms, n), report_median(row->delta_kb, n));
}

/* The target: the fork pause of a 1 MiB app under 200 µs (full and delta). */
static void print_target(FILE *f, struct snap_row *rows, int nrows)
{
    for (int i = 0; i < nrows; i++) {
        int n = rows[i].runs;

        if (rows[i].size != TARGET_SIZE || !n)
            continue;
        double full = report_median(rows[i].full_fork_us, n);
        double delta = report_median(rows[i].delta_fork_us, n);
        fprintf(f, "Target: snapshot pause (fork) under %.0f µs at 1 MiB of state: full %.0f µs "
                "%s, delta %.0f µs %s (max over %d session(s): %.0f / %.0f µs).\n\n",
                TARGET_FORK_US, full, full < TARGET_FORK_US ? "PASS" : "MISS", delta,
                delta < TARGET_FORK_US ? "PASS" : "MISS", n, report_max(rows[i].full_fork_us, n),
                report_max(rows[i].delta_fork_us, n));
        return;
    }
    fprintf(f, "Target: snapshot pause at 1 MiB: n/a (1 MiB was not measured).\n\n");
}

static void print_section(FILE *f, const struct bench_opts *o, struct snap_row *rows, int n)
{
    int failed = 0;

    fprintf(f, "## Snapshots: pause, write time and size against app state\n\n");
    fprintf(f, "ballast.so with N bytes of incompressible arena state; per size %d session(s), "
               "median shown. Full = a session's first snapshot; delta = the next one, after "
               "%d pages were changed (all of them when the state has fewer). fork = the pause of the worker (fork); write = the "
               "frozen child hashing, compressing, writing, fsyncing and renaming the file; "
               "size = the file. cold standby, snapshot_interval_ms = 0 (snapshots asked for "
               "on the control socket).\n\n", o->snap_runs, TOUCH_PAGES);
    fprintf(f, "| state | full: fork µs | full: write ms | full: MB | delta: fork µs | "
               "delta: write ms | delta: KB |\n");
    fprintf(f, "|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n; i++)
        print_row(f, &rows[i]);
    fprintf(f, "\n");
    print_target(f, rows, n);
    for (int i = 0; i < n; i++)
        if (rows[i].failed)
            fprintf(f, "%s- %s\n", failed++ ? "" : "Errors:\n\n", rows[i].err);
    if (failed)
        fprintf(f, "\n");
}

/* Plot data: snapshot cost against state size, full and delta. */
static void plot_rows(const struct bench_opts *o, struct snap_row *rows, int n)
{
    FILE *d = plot_data(o, "snapshot", "state_bytes full_fork_us full_write_ms full_mb "
                                       "delta_fork_us delta_write_ms delta_kb");
    int any = 0;

    if (!d)
        return;
    for (int i = 0; i < n; i++) {
        int k = rows[i].runs;

        if (!k)
            continue;
        fprintf(d, "%zu", rows[i].size);
        plot_num(d, report_median(rows[i].full_fork_us, k));
        plot_num(d, report_median(rows[i].full_write_ms, k));
        plot_num(d, report_median(rows[i].full_mb, k));
        plot_num(d, report_median(rows[i].delta_fork_us, k));
        plot_num(d, report_median(rows[i].delta_write_ms, k));
        plot_num(d, report_median(rows[i].delta_kb, k));
        fputc('\n', d);
        any = 1;
    }
    plot_data_close(d);
    if (any)
        plot_script(o, "snapshot",
                    "set title \"Snapshot cost against app state (ballast.so; medians)\"\n"
                    "set xlabel \"app state (KiB)\"\n"
                    "set ylabel \"ms\"\n"
                    "set logscale xy 2\n"
                    "set format y \"%g\"\n"
                    "plot \"%D/snapshot.dat\" using ($1/1024):($2/1000) with linespoints "
                    "title \"full: fork (pause)\", "
                    "'' using ($1/1024):3 with linespoints title \"full: write\", "
                    "'' using ($1/1024):($5/1000) with linespoints dashtype 2 title "
                    "\"delta: fork (pause)\", "
                    "'' using ($1/1024):6 with linespoints dashtype 2 title "
                    "\"delta: write\"\n");
}

int snapbench_run(FILE *f, const struct bench_opts *o)
{
    static struct snap_row rows[BENCH_MAX_SNAP_SIZES];
    int failed = 0;

    memset(rows, 0, sizeof(rows));
    for (int i = 0; i < o->nsnap_sizes && !proc_interrupted(); i++) {
        rows[i].size = o->snap_sizes[i];
        run_size(o, &rows[i]);
        failed |= rows[i].failed;
    }
    print_section(f, o, rows, o->nsnap_sizes);
    plot_rows(o, rows, o->nsnap_sizes);
    fflush(f);
    return failed ? -1 : 0;
}
