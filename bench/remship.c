/* remship.c - section "remote", part 3: what shipping snapshots to the server endpoint costs
 * the data path. Two setups side by side, each client proxy -> one edge -> server proxy
 * (--store) -> plain echo, ballast.so with o->recovery_state bytes of state, snapshots
 * every SNAP_MS: one edge ships them (ship_snapshots = on), the other does not (off).
 * 64 B messages over plain TCP, with the paths' drivers, interleaved in blocks A B B A
 * A B B A (latency) and A B B A (throughput) as in snaplat.c, so drift hits both alike.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define SIZE             64
#define SNAP_MS          100
#define TARGET_RATIO     1.1
#define LAT_BLOCKS       8
#define TPUT_BLOCKS      4
#define BLOCK_WARM       20
#define REPLY_TIMEOUT_MS 30000

struct ship_run {
    int               ship;
    struct rem_world  w;
    struct bench_conn conn;
    int               up;
    uint64_t          id;
    uint64_t         *samples;
    size_t            nsamples;
    double            mps_sum;
    int               tput_blocks, ran, failed;
    struct lat_result lat;
    double            msgs_per_s;
    uint64_t          snapshots, remote_pos, ordered, failures; /* at the end */
    char              err[BENCH_ERRLEN];
};

static const char *run_name(const struct ship_run *r)
{
    return r->ship ? "shipped" : "not shipped";
}

static void fail_run(struct ship_run *r, const char *what, const char *why)
{
    char dead[BENCH_ERRLEN / 2];
    int died = r->up && rw_check(&r->w, dead, sizeof(dead)) < 0 && !strstr(why, dead);

    r->failed = 1;
    snprintf(r->err, sizeof(r->err), "remote shipping (%s) %s: %s%s%s", run_name(r), what, why,
             died ? "; " : "", died ? dead : "");
    fprintf(stderr, "cessna-bench: FAILED %s\n", r->err);
}

static int bring_up(const struct bench_opts *o, struct ship_run *r)
{
    struct rem_spec spec = {
        .nedges = 1, .app = "ballast.so", .snapshot_interval_ms = SNAP_MS,
        .ship_off = !r->ship, .edge_heartbeat_ms = 1000, .proxy_heartbeat_ms = 3000,
    };
    char err[BENCH_ERRLEN], cmd[64], out[ECTL_LINE * 4];
    int rc;

    snprintf(spec.tag, sizeof(spec.tag), "remote-ship-%s", r->ship ? "on" : "off");
    r->samples = calloc(o->messages, sizeof(*r->samples));
    if (!r->samples) {
        fail_run(r, "setup", "out of memory for the samples");
        return -1;
    }
    r->up = 1;
    if (rw_up(&r->w, &spec, o, err, sizeof(err)) < 0) {
        fail_run(r, "setup", err);
        return -1;
    }
    rc = load_connect(&r->conn, r->w.entry, 0, err, sizeof(err));
    snprintf(cmd, sizeof(cmd), "BALLAST %zu", o->recovery_state);
    if (rc == 0)
        rc = rw_ask(r->conn.fd, cmd, "ok", REPLY_TIMEOUT_MS, err, sizeof(err));
    if (rc == 0)
        rc = ectl_cmd(r->w.control[0], "sessions", out, sizeof(out), err, sizeof(err));
    if (rc == 0 && ectl_field(out, "id", &r->id) < 0) {
        snprintf(err, sizeof(err), "the edge lists no session: %s", out);
        rc = -1;
    }
    if (rc < 0) {
        fail_run(r, "session", err);
        return -1;
    }
    return 0;
}

/* What the edge did with the session's snapshots, before it closes. */
static void read_session(struct ship_run *r)
{
    char line[ECTL_LINE], err[BENCH_ERRLEN];

    if (ectl_session(r->w.control[0], r->id, line, sizeof(line), err, sizeof(err)) < 0) {
        fprintf(stderr, "cessna-bench: remote shipping: %s\n", err);
        return;
    }
    ectl_field(line, "snapshots", &r->snapshots);
    ectl_field(line, "remote_snapshot", &r->remote_pos);
    ectl_field(line, "ordered", &r->ordered);
    ectl_field(line, "snapshot_failures", &r->failures);
}

static void take_down(struct ship_run *r)
{
    if (r->id)
        read_session(r);
    if (r->conn.fd >= 0)
        load_close(&r->conn);
    rw_down(&r->w);
    free(r->samples);
    r->samples = NULL;
}

static int block_owner(int b)
{
    return b % 4 == 1 || b % 4 == 2;   /* A B B A */
}

static void measure(const struct bench_opts *o, struct ship_run *runs)
{
    char err[BENCH_ERRLEN];

    fprintf(stderr, "cessna-bench: remote shipping: latency, %zu round trips each, "
            "interleaved\n", o->messages);
    for (int b = 0; b < LAT_BLOCKS; b++) {
        struct ship_run *r = &runs[block_owner(b)];
        int k = b / 2;
        size_t per = o->messages / (LAT_BLOCKS / 2);
        size_t count = k == LAT_BLOCKS / 2 - 1 ? o->messages - r->nsamples : per;
        size_t warm = k == 0 ? (o->messages / 20 ? o->messages / 20 : 1) : BLOCK_WARM;

        if (load_latency_samples(&r->conn, SIZE, warm, count, r->samples + r->nsamples, err,
                                 sizeof(err)) < 0) {
            fail_run(r, "latency", err);
            return;
        }
        r->nsamples += count;
    }
    fprintf(stderr, "cessna-bench: remote shipping: throughput, %.1f s each, interleaved\n",
            o->seconds);
    for (int b = 0; b < TPUT_BLOCKS; b++) {
        struct ship_run *r = &runs[block_owner(b)];
        struct tput_result t;

        if (load_throughput(&r->conn, SIZE, o->seconds / 2, &t, err, sizeof(err)) < 0) {
            fail_run(r, "throughput", err);
            return;
        }
        r->mps_sum += t.msgs_per_s;
        r->tput_blocks++;
    }
    for (int i = 0; i < 2; i++) {
        load_percentiles(runs[i].samples, runs[i].nsamples, &runs[i].lat);
        runs[i].msgs_per_s = runs[i].mps_sum / runs[i].tput_blocks;
        runs[i].ran = 1;
    }
}

static void print_run(FILE *f, const struct ship_run *r)
{
    if (!r->ran) {
        fprintf(f, "| %s | failed | | | | | | |\n", run_name(r));
        return;
    }
    fprintf(f, "| %s | %.1f | %.1f | %.1f | %.0f | %" PRIu64 " | %" PRIu64 " of %" PRIu64
               " | %" PRIu64 " |\n", run_name(r), r->lat.p50_us, r->lat.p99_us, r->lat.p999_us,
            r->msgs_per_s, r->snapshots, r->remote_pos, r->ordered, r->failures);
}

static const char *verdict(double ratio)
{
    return ratio <= TARGET_RATIO ? "PASS" : "MISS";
}

static void print_section(FILE *f, const struct bench_opts *o, struct ship_run *runs)
{
    char state[32];

    report_size_label(o->recovery_state, state, sizeof(state));
    fprintf(f, "## Shipping cost: snapshots every %d ms shipped to the server proxy or not\n\n",
            SNAP_MS);
    fprintf(f, "Two setups side by side, each plain TCP client -> client proxy -> edge -> server "
               "proxy (--store) -> plain echo, ballast.so with %s of state, "
               "snapshot_interval_ms = %d; ship_snapshots = on in one, off in the other. "
               "%d B messages, measured interleaved (A B B A blocks). Latency: %zu round trips "
               "each, one outstanding, µs; throughput: %.1f s each, streaming. snapshots = "
               "taken of the session; stored = remote_snapshot= (the last position the server "
               "proxy acknowledged) of the session's ordered events, at the end.\n\n", state,
            SNAP_MS, SIZE, o->messages, o->seconds);
    fprintf(f, "| snapshots | p50 µs | p99 µs | p99.9 µs | msgs/s | snapshots | stored | "
               "snapshot failures |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    print_run(f, &runs[1]);
    print_run(f, &runs[0]);
    if (runs[0].ran && runs[1].ran) {
        const struct lat_result *on = &runs[1].lat, *off = &runs[0].lat;
        double p50 = on->p50_us / off->p50_us, p99 = on->p99_us / off->p99_us;
        double p999 = on->p999_us / off->p999_us, tput = runs[1].msgs_per_s / runs[0].msgs_per_s;
        fprintf(f, "| ratio shipped / not | %.2fx | %.2fx | %.2fx | %.2fx | | | |\n\n", p50, p99,
                p999, tput);
        fprintf(f, "Target: latency with shipping within %.1fx of without: p50 %.2fx %s, p99 "
                   "%.2fx %s (p99.9 %.2fx and throughput %.2fx: informational).\n\n",
                TARGET_RATIO, p50, verdict(p50), p99, verdict(p99), p999, tput);
        if (runs[1].remote_pos == 0)
            fprintf(f, "- **the shipping edge had no snapshot stored at the server proxy**\n\n");
        if (runs[0].remote_pos != 0)
            fprintf(f, "- **the edge with ship_snapshots = off had one stored**\n\n");
    } else {
        fprintf(f, "\nTarget: latency with shipping within %.1fx: FAILED (not measured)\n\n",
                TARGET_RATIO);
    }
    for (int i = 0; i < 2; i++)
        if (runs[i].failed)
            fprintf(f, "- error: %s\n", runs[i].err);
    if (runs[0].failed || runs[1].failed)
        fprintf(f, "\n");
}

int remship_run(FILE *f, const struct bench_opts *o)
{
    static struct ship_run runs[2];   /* [0] not shipped (A), [1] shipped (B) */

    memset(runs, 0, sizeof(runs));
    runs[1].ship = 1;
    runs[0].conn.fd = runs[1].conn.fd = -1;
    if (bring_up(o, &runs[0]) == 0 && bring_up(o, &runs[1]) == 0 && !proc_interrupted())
        measure(o, runs);
    take_down(&runs[1]);
    take_down(&runs[0]);
    print_section(f, o, runs);
    fflush(f);
    return runs[0].ran && runs[1].ran ? 0 : -1;
}
