/* snaplat.c - section "snapshot-latency": what periodic snapshots cost the data path. The
 * edge-native path (passthrough.so, 64 B messages, the drivers of the paths' table) on two
 * edges up side by side: snapshot_interval_ms = 0 (none) and o->snap_interval_ms.
 *
 * This machine's speed drifts within a run (other processes, frequency), by more than the
 * 10% the target allows, so the two are measured interleaved, in blocks ordered A B B A
 * A B B A (latency) and A B B A (throughput): a drift hits both alike. Latency percentiles
 * are over all of a configuration's round trips; throughput is the mean of its blocks.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cessna_endpoint.h"

#define SIZE         64
#define TARGET_RATIO 1.1
#define LAT_BLOCKS   8   /* A B B A A B B A */
#define TPUT_BLOCKS  4   /* A B B A */
#define BLOCK_WARM   20  /* round trips after each switch, not recorded */

struct lat_run {
    unsigned           interval_ms;
    struct bench_stack stack;
    struct bench_conn  conn;
    int                up;          /* stack and session are there */
    uint64_t           id;
    uint64_t          *samples;
    size_t             nsamples;
    double             mps_sum;     /* throughput blocks */
    int                tput_blocks;
    int                ran, failed;
    struct lat_result  lat;
    double             msgs_per_s;
    uint64_t           snapshots;   /* taken of the session during the measurements */
    uint64_t           last_fork_us, last_write_us;
    char               err[BENCH_ERRLEN];
};

static void fail_run(struct lat_run *r, const char *what, const char *why)
{
    char dead[BENCH_ERRLEN / 2];
    int died = r->stack.nprocs && stack_check(&r->stack, dead, sizeof(dead)) < 0;

    r->failed = 1;
    snprintf(r->err, sizeof(r->err), "snapshot-latency interval %u ms %s: %s%s%s",
             r->interval_ms, what, why, died ? "; " : "", died ? dead : "");
    fprintf(stderr, "cessna-bench: FAILED %s\n", r->err);
}

static int bring_up(const struct bench_opts *o, struct lat_run *r)
{
    struct edge_spec e = { .app = "passthrough.so", .snapshot_interval_ms = r->interval_ms };
    char err[BENCH_ERRLEN];

    snprintf(e.tag, sizeof(e.tag), "snaplat-%ums", r->interval_ms);
    r->samples = calloc(o->messages, sizeof(*r->samples));
    if (!r->samples) {
        fail_run(r, "setup", "out of memory for the samples");
        return -1;
    }
    if (stack_up_edge(&r->stack, &e, o, err, sizeof(err)) < 0) {
        fail_run(r, "setup", err);
        return -1;
    }
    if (load_connect(&r->conn, r->stack.entry, 1, err, sizeof(err)) < 0) {
        fail_run(r, "connect", err);
        return -1;
    }
    r->id = cessna_ep_session_id(r->conn.ep);
    r->up = 1;
    return 0;
}

/* The session's snapshot count and last fork pause, before it closes. */
static void read_snapshots(struct lat_run *r)
{
    char line[ECTL_LINE], err[BENCH_ERRLEN];

    if (ectl_session(r->stack.control, r->id, line, sizeof(line), err, sizeof(err)) < 0) {
        fprintf(stderr, "cessna-bench: snapshot-latency: %s\n", err);
        return;
    }
    ectl_field(line, "snapshots", &r->snapshots);
    ectl_field(line, "fork_us", &r->last_fork_us);
    ectl_field(line, "write_us", &r->last_write_us);
}

static void take_down(struct lat_run *r)
{
    if (r->up) {
        read_snapshots(r);
        load_close(&r->conn);
    }
    stack_down(&r->stack);
    free(r->samples);
    r->samples = NULL;
}

/* Block b of n goes to run 0 (A) or 1 (B): A B B A A B B A ... */
static int block_owner(int b)
{
    return (b % 4 == 1 || b % 4 == 2);
}

static int latency_blocks(const struct bench_opts *o, struct lat_run *runs)
{
    char err[BENCH_ERRLEN];

    for (int b = 0; b < LAT_BLOCKS; b++) {
        struct lat_run *r = &runs[block_owner(b)];
        int k = b / 2;   /* this run's block number: 0..LAT_BLOCKS/2-1 */
        size_t per = o->messages / (LAT_BLOCKS / 2);
        size_t count = k == LAT_BLOCKS / 2 - 1 ? o->messages - r->nsamples : per;
        size_t warm = k == 0 ? (o->messages / 20 ? o->messages / 20 : 1) : BLOCK_WARM;

        if (load_latency_samples(&r->conn, SIZE, warm, count, r->samples + r->nsamples, err,
                                 sizeof(err)) < 0) {
            fail_run(r, "latency", err);
            return -1;
        }
        r->nsamples += count;
    }
    return 0;
}

static int throughput_blocks(const struct bench_opts *o, struct lat_run *runs)
{
    char err[BENCH_ERRLEN];

    for (int b = 0; b < TPUT_BLOCKS; b++) {
        struct lat_run *r = &runs[block_owner(b)];
        struct tput_result t;

        if (load_throughput(&r->conn, SIZE, o->seconds / 2, &t, err, sizeof(err)) < 0) {
            fail_run(r, "throughput", err);
            return -1;
        }
        r->mps_sum += t.msgs_per_s;
        r->tput_blocks++;
    }
    return 0;
}

static void measure(const struct bench_opts *o, struct lat_run *runs)
{
    fprintf(stderr, "cessna-bench: snapshot-latency 0 vs %u ms: latency, %zu round trips "
            "each, interleaved\n", runs[1].interval_ms, o->messages);
    if (latency_blocks(o, runs) < 0)
        return;
    fprintf(stderr, "cessna-bench: snapshot-latency 0 vs %u ms: throughput, %.1f s each, "
            "interleaved\n", runs[1].interval_ms, o->seconds);
    if (throughput_blocks(o, runs) < 0)
        return;
    for (int i = 0; i < 2; i++) {
        load_percentiles(runs[i].samples, runs[i].nsamples, &runs[i].lat);
        runs[i].msgs_per_s = runs[i].mps_sum / runs[i].tput_blocks;
        runs[i].ran = 1;
    }
}

static void print_run(FILE *f, const struct lat_run *r)
{
    char last[64] = "- | -";

    if (!r->ran) {
        fprintf(f, "| %u | failed | | | | | | |\n", r->interval_ms);
        return;
    }
    if (r->snapshots)
        snprintf(last, sizeof(last), "%" PRIu64 " | %.2f", r->last_fork_us,
                 (double)r->last_write_us / 1000.0);
    fprintf(f, "| %u | %" PRIu64 " | %.1f | %.1f | %.1f | %.0f | %s |\n", r->interval_ms,
            r->snapshots, r->lat.p50_us, r->lat.p99_us, r->lat.p999_us, r->msgs_per_s, last);
}

static const char *verdict(double ratio)
{
    return ratio <= TARGET_RATIO ? "PASS" : "MISS";
}

static void print_ratio(FILE *f, const struct lat_run *base, const struct lat_run *r)
{
    if (!base->ran || !r->ran)
        return;
    double p50 = r->lat.p50_us / base->lat.p50_us, p99 = r->lat.p99_us / base->lat.p99_us;
    double p999 = r->lat.p999_us / base->lat.p999_us;
    double tput = r->msgs_per_s / base->msgs_per_s;

    fprintf(f, "| ratio %u / 0 | | %.2fx | %.2fx | %.2fx | %.2fx | | |\n\n", r->interval_ms, p50,
            p99, p999, tput);
    fprintf(f, "Target: latency with snapshots every %u ms within %.1fx of none: p50 %.2fx %s, "
               "p99 %.2fx %s (p99.9 %.2fx and throughput %.2fx: informational).\n\n",
            r->interval_ms, TARGET_RATIO, p50, verdict(p50), p99, verdict(p99), p999, tput);
}

static void print_section(FILE *f, const struct bench_opts *o, struct lat_run *runs)
{
    fprintf(f, "## Snapshot cost on the data path: edge-native, %d B\n\n", SIZE);
    fprintf(f, "The edge-native path (passthrough.so) on two edges side by side, "
               "snapshot_interval_ms = 0 (none) and %u, measured interleaved (A B B A blocks) so "
               "that drift hits both alike. Latency: %zu round trips each, one outstanding; "
               "throughput: %.1f s each, streaming. snapshots = taken of the session; fork µs and "
               "write ms = the last one's pause and its child's writing time.\n\n", o->snap_interval_ms, o->messages, o->seconds);
    fprintf(f, "| snapshot_interval_ms | snapshots | p50 µs | p99 µs | p99.9 µs | msgs/s | "
               "fork µs | write ms |\n");
    fprintf(f, "|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    print_run(f, &runs[0]);
    print_run(f, &runs[1]);
    print_ratio(f, &runs[0], &runs[1]);
    if (!runs[0].ran || !runs[1].ran)
        fprintf(f, "\n");
    for (int i = 0; i < 2; i++)
        if (runs[i].failed)
            fprintf(f, "- error: %s\n", runs[i].err);
    if (runs[0].failed || runs[1].failed)
        fprintf(f, "\n");
}

int snaplat_run(FILE *f, const struct bench_opts *o)
{
    static struct lat_run runs[2];

    memset(runs, 0, sizeof(runs));
    runs[1].interval_ms = o->snap_interval_ms;
    if (bring_up(o, &runs[0]) == 0 && bring_up(o, &runs[1]) == 0 && !proc_interrupted())
        measure(o, runs);
    take_down(&runs[1]);
    take_down(&runs[0]);
    print_section(f, o, runs);
    fflush(f);
    return runs[0].failed || runs[1].failed ? -1 : 0;
}
