/* recbench.c - section "recovery": how long a session stalls when its worker dies (DESIGN.md
 * section 3), with cold and with hot standby, one supervisor each.
 *
 * One session on ballast.so with o->recovery_state bytes of state. Each round: a snapshot
 * (waited for until durable), then o->recovery_msgs messages echoed one at a time by the
 * native echo server (two events each: the client's message and the echo), then the clock
 * starts, `kill-worker` SIGKILLs the worker, one more message goes at once, and the clock
 * stops when its echo is back: "kill to first new output". Then `sessions` gives the
 * supervisor's own split of the recovery: recovery_us from noticing the death to the end
 * of the replay = start (the new worker running) + load (the snapshot read from disk, cold
 * only) + replay (the held events fed again, their outputs dropped as duplicates). What
 * lies before the supervisor notices is timed from outside: the dead worker's exit (its
 * pidfd turning readable) and the control command.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench.h"
#include "cessna_endpoint.h"

#define MAX_RUNS          64
#define REPLY_TIMEOUT_MS  10000
#define SPLIT_TIMEOUT_MS  10000
#define TARGET_HOT_US     1000.0
#define TARGET_COLD_US    5000.0
#define TRACE_BEFORE      50   /* round trips kept from before the kill, for --plot */
#define TRACE_AFTER       50   /* round trips made right after the probe */
#define TRACE_MAX         (TRACE_BEFORE + 1 + TRACE_AFTER)

/* The round trips around one kill: send time relative to the kill command (ms), round
 * trip (ms). Per standby mode (cold, hot) and round. */
struct kill_trace {
    int    n;
    double t_ms[TRACE_MAX], rtt_ms[TRACE_MAX];
};

static struct kill_trace traces[2][MAX_RUNS];

/* Per round, µs. The last three help read the first: the dead worker's exit (before it the
 * supervisor cannot know), the control command that kills, and an ordinary round trip just
 * before (the probe's own round trip is part of the first). */
enum { M_KILL, M_TOTAL, M_START, M_LOAD, M_REPLAY, M_EXIT, M_CMD, M_RTT, M_COUNT };

static const char *const metric_names[M_COUNT] = {
    "kill → first output", "recovery_us", "start", "load", "replay", "worker exit",
    "kill cmd", "echo before",
};

struct rec_mode {
    int      hot;
    int      runs;
    double   v[M_COUNT][MAX_RUNS];   /* µs */
    uint64_t replayed_min, replayed_max;
    int      wrong_mode;             /* rounds the edge recovered in another mode */
    char     modes_seen[64];
    char     stats[512];             /* recoveries=, hot_takeovers=, cold_restores= */
    int      failed;
    char     err[BENCH_ERRLEN];
};

/* Echo one message and check it came back unchanged. */
static int echo_one(struct bench_conn *c, const char *msg, char *err, size_t errlen)
{
    char back[128];
    int rc = ectl_ask(c, msg, strlen(msg), back, sizeof(back), REPLY_TIMEOUT_MS, err, errlen);

    if (rc == 0 && strcmp(back, msg) != 0) {
        snprintf(err, errlen, "sent '%s', got '%s' back", msg, back);
        rc = -EPROTO;
    }
    return rc;
}

/* count messages, one at a time; the last one's round trip in *rtt_us, the last
 * TRACE_BEFORE send times and round trips in sent / rtt (ring: slot i % TRACE_BEFORE). */
static int echo_many(struct bench_conn *c, int round, int count, double *rtt_us,
                     uint64_t *sent, uint64_t *rtt, char *err, size_t errlen)
{
    char msg[64];

    for (int i = 0; i < count; i++) {
        uint64_t t0 = ectl_now_ns();
        snprintf(msg, sizeof(msg), "round %d msg %d", round, i);
        int rc = echo_one(c, msg, err, errlen);
        if (rc < 0)
            return rc;
        uint64_t t1 = ectl_now_ns();
        *rtt_us = (double)(t1 - t0) / 1000.0;
        sent[i % TRACE_BEFORE] = t0;
        rtt[i % TRACE_BEFORE] = t1 - t0;
    }
    return 0;
}

static void trace_add(struct kill_trace *tr, uint64_t kill_ns, uint64_t sent_ns,
                      uint64_t rtt_ns)
{
    if (tr->n == TRACE_MAX)
        return;
    tr->t_ms[tr->n] = ((double)sent_ns - (double)kill_ns) / 1e6;
    tr->rtt_ms[tr->n++] = (double)rtt_ns / 1e6;
}

/* The round trips around the kill at t0: the kept ones before, the probe, TRACE_AFTER
 * more now. */
static int trace_round(struct bench_conn *c, struct kill_trace *tr, int count,
                       const uint64_t *sent, const uint64_t *rtt, uint64_t t0, uint64_t probe_ns,
                       char *err, size_t errlen)
{
    int kept = count < TRACE_BEFORE ? count : TRACE_BEFORE;
    char msg[64];

    memset(tr, 0, sizeof(*tr));
    for (int k = count - kept; k < count; k++)
        trace_add(tr, t0, sent[k % TRACE_BEFORE], rtt[k % TRACE_BEFORE]);
    trace_add(tr, t0, t0, probe_ns);
    for (int k = 0; k < TRACE_AFTER; k++) {
        uint64_t ts = ectl_now_ns();

        snprintf(msg, sizeof(msg), "after the kill msg %d", k);
        int rc = echo_one(c, msg, err, errlen);
        if (rc < 0)
            return rc;
        trace_add(tr, t0, ts, ectl_now_ns() - ts);
    }
    return 0;
}

/* Before the kill: the events the new worker must replay (ordered beyond the snapshot),
 * the recoveries so far, and the worker's pid. */
struct before_kill {
    uint64_t held, recoveries, worker;
};

static int read_before(struct bench_stack *s, uint64_t id, struct before_kill *b, char *err,
                       size_t errlen)
{
    char line[ECTL_LINE];
    uint64_t ordered, snap;
    int rc = ectl_session(s->control, id, line, sizeof(line), err, errlen);

    if (rc < 0)
        return rc;
    if (ectl_field(line, "ordered", &ordered) < 0 || ectl_field(line, "snapshot", &snap) < 0 ||
        ectl_field(line, "recoveries", &b->recoveries) < 0 ||
        ectl_field(line, "worker", &b->worker) < 0 || b->worker == 0) {
        snprintf(err, errlen, "the sessions line lacks ordered=, snapshot=, recoveries= or "
                 "worker=: %s", line);
        return -EPROTO;
    }
    b->held = ordered - snap;
    return 0;
}

/* The probe's echo, checked; meanwhile, when the dead worker's pidfd turns readable (its
 * exit is complete: the earliest the supervisor can know), *exit_us after t0. */
static int wait_probe(struct bench_conn *c, const char *msg, int pidfd, uint64_t t0,
                      double *exit_us, char *err, size_t errlen)
{
    uint64_t deadline = ectl_now_ns() + (uint64_t)REPLY_TIMEOUT_MS * 1000000u;
    struct pollfd p[2] = { { .fd = c->fd, .events = POLLIN }, { .fd = pidfd, .events = POLLIN } };
    const void *data;
    long n;

    cessna_ep_set_nonblocking(c->ep, 1);
    while ((n = cessna_ep_recv(c->ep, &data)) == -EAGAIN) {
        uint64_t now = ectl_now_ns();
        if (now >= deadline) {
            snprintf(err, errlen, "no echo of the probe within %d ms", REPLY_TIMEOUT_MS);
            return -ETIMEDOUT;
        }
        if (poll(p, 2, (int)((deadline - now) / 1000000u) + 1) > 0 && p[1].revents) {
            *exit_us = (double)(ectl_now_ns() - t0) / 1000.0;
            p[1].fd = -1;
        }
    }
    if (n < 0) {
        snprintf(err, errlen, "probe: cessna_ep_recv: %s %s", n == CESSNA_EP_CLOSED ?
                 "the edge closed the session" : strerror((int)-n), cessna_ep_error(c->ep));
        return n == CESSNA_EP_CLOSED ? -ECONNRESET : (int)n;
    }
    if ((size_t)n != strlen(msg) || memcmp(data, msg, (size_t)n) != 0) {
        snprintf(err, errlen, "sent '%s', got '%.*s' back", msg, (int)(n < 100 ? n : 100),
                 (const char *)data);
        return -EPROTO;
    }
    if (p[1].fd >= 0 && poll(&p[1], 1, REPLY_TIMEOUT_MS) == 1) /* echoed before it was gone? */
        *exit_us = (double)(ectl_now_ns() - t0) / 1000.0;
    return 0;
}

/* Kill the worker, send one message at once; the time until its echo is back, the kill
 * command's own time and the dead worker's exit, in µs (v[M_KILL], v[M_CMD], v[M_EXIT]). */
static int kill_and_probe(struct bench_stack *s, struct bench_conn *c, uint64_t id,
                          const struct before_kill *b, int round, double *v[M_COUNT],
                          uint64_t *kill_ns, char *err, size_t errlen)
{
    char cmd[64], reply[256], msg[64];
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)b->worker, 0), rc;

    if (pidfd == -1) {
        rc = -errno;
        snprintf(err, errlen, "pidfd_open of the worker %" PRIu64 ": %s", b->worker,
                 strerror(errno));
        return rc;
    }
    snprintf(cmd, sizeof(cmd), "kill-worker %" PRIu64, id);
    snprintf(msg, sizeof(msg), "probe after kill %d", round);
    uint64_t t0 = ectl_now_ns();
    *kill_ns = t0;
    rc = ectl_cmd(s->control, cmd, reply, sizeof(reply), err, errlen);
    *v[M_CMD] = (double)(ectl_now_ns() - t0) / 1000.0;
    if (rc == 0 && strncmp(reply, "ok", 2) != 0) {
        snprintf(err, errlen, "control '%s' refused: %.*s", cmd, (int)strcspn(reply, "\n"),
                 reply);
        rc = -EPROTO;
    }
    if (rc == 0 && (rc = cessna_ep_send(c->ep, msg, strlen(msg))) < 0)
        snprintf(err, errlen, "probe: cessna_ep_send: %s %s", strerror(-rc),
                 cessna_ep_error(c->ep));
    if (rc == 0)
        rc = wait_probe(c, msg, pidfd, t0, v[M_EXIT], err, errlen);
    if (rc == 0)
        *v[M_KILL] = (double)(ectl_now_ns() - t0) / 1000.0;
    close(pidfd);
    return rc;
}

/* The supervisor's split of the recovery that follows `recoveries` earlier ones: poll until
 * recovery_us= is there (the replay is over). */
static int read_split(struct bench_stack *s, uint64_t id, uint64_t recoveries,
                      struct rec_mode *m, char *err, size_t errlen)
{
    uint64_t deadline = ectl_now_ns() + (uint64_t)SPLIT_TIMEOUT_MS * 1000000u, n, v[M_COUNT];
    static const char *const keys[M_COUNT] = {
        [M_TOTAL] = "recovery_us", [M_START] = "recovery_start_us",
        [M_LOAD] = "recovery_load_us", [M_REPLAY] = "recovery_replay_us",
    };
    char line[ECTL_LINE], mode[16];
    int i = m->runs;

    for (;;) {
        int rc = ectl_session(s->control, id, line, sizeof(line), err, errlen), have = 1;
        if (rc < 0)
            return rc;
        for (int k = M_TOTAL; k <= M_REPLAY; k++)
            have &= ectl_field(line, keys[k], &v[k]) == 0;
        if (have && ectl_field(line, "recoveries", &n) == 0 && n > recoveries)
            break;
        if (ectl_now_ns() > deadline) {
            snprintf(err, errlen, "no recovery_us= for recovery %" PRIu64 " within %d ms "
                     "(last: %s)", recoveries + 1, SPLIT_TIMEOUT_MS, line);
            return -ETIMEDOUT;
        }
        ectl_pause_us(200);
    }
    for (int k = M_TOTAL; k <= M_REPLAY; k++)
        m->v[k][i] = (double)v[k];
    ectl_text(line, "recovery", mode, sizeof(mode));
    if (strcmp(mode, m->hot ? "hot" : "cold") != 0)
        m->wrong_mode++;
    size_t used = strlen(m->modes_seen);
    if (!strstr(m->modes_seen, mode))   /* "cold" or "hot,cold": each mode seen, once */
        snprintf(m->modes_seen + used, sizeof(m->modes_seen) - used, "%s%s", used ? "," : "",
                 mode);
    return 0;
}

static int one_round(struct bench_stack *s, struct bench_conn *c, uint64_t id,
                     const struct bench_opts *o, struct rec_mode *m, char *err, size_t errlen)
{
    struct ectl_snap snap;
    struct before_kill b;
    double *v[M_COUNT];
    uint64_t sent[TRACE_BEFORE], rtt[TRACE_BEFORE], kill_ns = 0;
    int rc = ectl_snapshot(s, id, &snap, err, errlen);

    for (int k = 0; k < M_COUNT; k++)
        v[k] = &m->v[k][m->runs];
    *v[M_EXIT] = 0;
    if (rc == 0)
        rc = echo_many(c, m->runs, o->recovery_msgs, v[M_RTT], sent, rtt, err, errlen);
    if (rc == 0)
        rc = read_before(s, id, &b, err, errlen);
    if (rc == 0)
        rc = kill_and_probe(s, c, id, &b, m->runs, v, &kill_ns, err, errlen);
    /* before the split is read, so the trace follows the probe closely */
    if (rc == 0)
        rc = trace_round(c, &traces[m->hot][m->runs], o->recovery_msgs, sent, rtt, kill_ns,
                         (uint64_t)(*v[M_KILL] * 1000.0), err, errlen);
    if (rc == 0)
        rc = read_split(s, id, b.recoveries, m, err, errlen);
    if (rc < 0)
        return rc;
    if (!m->runs || b.held < m->replayed_min)
        m->replayed_min = b.held;
    if (b.held > m->replayed_max)
        m->replayed_max = b.held;
    m->runs++;
    return 0;
}

static void fail_mode(struct rec_mode *m, struct bench_stack *s, const char *what,
                      const char *why)
{
    char dead[BENCH_ERRLEN / 2];
    int died = s && stack_check(s, dead, sizeof(dead)) < 0;

    m->failed = 1;
    snprintf(m->err, sizeof(m->err), "recovery %s %s: %s%s%s", m->hot ? "hot" : "cold", what,
             why, died ? "; " : "", died ? dead : "");
    fprintf(stderr, "cessna-bench: FAILED %s\n", m->err);
}

/* The session: connect, load the ballast, then the rounds. */
static void run_session(struct bench_stack *s, const struct bench_opts *o, struct rec_mode *m)
{
    struct bench_conn c;
    char cmd[64], reply[64], err[BENCH_ERRLEN];
    int runs = o->recovery_runs < MAX_RUNS ? o->recovery_runs : MAX_RUNS, rc;

    if (load_connect(&c, s->entry, 1, err, sizeof(err)) < 0) {
        fail_mode(m, s, "connect", err);
        return;
    }
    uint64_t id = cessna_ep_session_id(c.ep);
    snprintf(cmd, sizeof(cmd), "BALLAST %zu", o->recovery_state);
    rc = ectl_ask(&c, cmd, strlen(cmd), reply, sizeof(reply), REPLY_TIMEOUT_MS, err, sizeof(err));
    if (rc == 0 && strcmp(reply, "ok") != 0) {
        snprintf(err, sizeof(err), "'%s' answered '%s'", cmd, reply);
        rc = -EPROTO;
    }
    if (rc < 0)
        fail_mode(m, s, "ballast", err);
    for (int r = 0; rc == 0 && r < runs && !proc_interrupted(); r++) {
        rc = one_round(s, &c, id, o, m, err, sizeof(err));
        if (rc < 0) {
            char what[32];
            snprintf(what, sizeof(what), "round %d", r + 1);
            fail_mode(m, s, what, err);
        }
    }
    ectl_cmd(s->control, "stats", m->stats, sizeof(m->stats), err, sizeof(err));
    load_close(&c);
}

static void run_mode(const struct bench_opts *o, struct rec_mode *m)
{
    struct edge_spec e = { .app = "ballast.so", .hot = m->hot };
    struct bench_stack s;
    char err[BENCH_ERRLEN];

    snprintf(e.tag, sizeof(e.tag), "recovery-%s", m->hot ? "hot" : "cold");
    fprintf(stderr, "cessna-bench: recovery %s: %d kills after %d messages each\n",
            m->hot ? "hot" : "cold", o->recovery_runs, o->recovery_msgs);
    if (stack_up_edge(&s, &e, o, err, sizeof(err)) < 0)
        fail_mode(m, NULL, "setup", err);
    else
        run_session(&s, o, m);
    stack_down(&s);
}

static void print_mode(FILE *f, struct rec_mode *m)
{
    fprintf(f, "| %s | %d | ", m->hot ? "hot" : "cold", m->runs);
    if (!m->runs) {
        fprintf(f, "failed |");
        for (int k = 0; k < M_COUNT; k++)
            fprintf(f, " |");
        fprintf(f, "\n");
        return;
    }
    if (m->replayed_min == m->replayed_max)
        fprintf(f, "%" PRIu64 " |", m->replayed_min);
    else
        fprintf(f, "%" PRIu64 "-%" PRIu64 " |", m->replayed_min, m->replayed_max);
    for (int k = 0; k < M_COUNT; k++) {
        double mx = report_max(m->v[k], m->runs);
        fprintf(f, " %.0f / %.0f |", report_median(m->v[k], m->runs), mx);
    }
    fprintf(f, "\n");
}

/* PASS/MISS of one mode against its target, on the medians. */
static void print_target(FILE *f, struct rec_mode *m)
{
    double target = m->hot ? TARGET_HOT_US : TARGET_COLD_US;

    if (!m->runs) {
        fprintf(f, "| %s | < %.0f µs | | | FAILED |\n", m->hot ? "hot" : "cold", target);
        return;
    }
    double total = report_median(m->v[M_TOTAL], m->runs);
    double kill = report_median(m->v[M_KILL], m->runs);
    fprintf(f, "| %s | < %.0f µs | %.0f µs %s | %.0f µs %s | %s |\n", m->hot ? "hot" : "cold",
            target, total, total < target ? "PASS" : "MISS", kill, kill < target ? "PASS" : "MISS",
            m->wrong_mode ? "recovered in another mode, see below" : "");
}

static void print_notes(FILE *f, struct rec_mode *modes)
{
    for (int i = 0; i < 2; i++) {
        struct rec_mode *m = &modes[i];
        uint64_t v;
        char list[256] = "";

        for (const char *k = "recoveries\0hot_takeovers\0cold_restores\0"; *k; k += strlen(k) + 1)
            if (ectl_field(m->stats, k, &v) == 0)
                snprintf(list + strlen(list), sizeof(list) - strlen(list), " %s=%" PRIu64, k, v);
        if (m->runs)
            fprintf(f, "- %s: the supervisor reported recovery=%s;%s%s\n",
                    m->hot ? "hot" : "cold", m->modes_seen, list[0] ? " stats" : "", list);
        if (m->wrong_mode)
            fprintf(f, "  **%d of %d recoveries were not %s**\n", m->wrong_mode, m->runs,
                    m->hot ? "hot" : "cold");
        if (m->failed)
            fprintf(f, "- error: %s\n", m->err);
    }
    fprintf(f, "\n");
}

static void print_section(FILE *f, const struct bench_opts *o, struct rec_mode *modes)
{
    char state[32];

    report_size_label(o->recovery_state, state, sizeof(state));
    fprintf(f, "## Recovery: worker killed, cold and hot standby\n\n");
    fprintf(f, "ballast.so with %s of state; per round a snapshot, then %d messages echoed "
               "one at a time (2 events each: events held = what the new worker must replay; "
               "one more when the probe below is ordered before the supervisor notices the "
               "death), then kill-worker and one probe message at once. kill → first output: "
               "from sending the kill command to the probe's echo at the client. recovery_us "
               "(the supervisor's): from noticing the death to the end of the replay = start "
               "(new worker running) + load (snapshot from disk) + replay. worker exit: from "
               "the kill command to the dead worker's pidfd turning readable (its exit done: "
               "the supervisor cannot notice the death sooner); kill cmd: the control "
               "command's round trip; echo before: the last round trip before the kill. "
               "Cells: median / max over the rounds, µs.\n\n", state, o->recovery_msgs);
    fprintf(f, "| standby | rounds | events held |");
    for (int k = 0; k < M_COUNT; k++)
        fprintf(f, " %s |", metric_names[k]);
    fprintf(f, "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    print_mode(f, &modes[0]);
    print_mode(f, &modes[1]);
    fprintf(f, "\n| standby | target | recovery_us (median) | kill → first output (median) | |\n");
    fprintf(f, "|---|---|---:|---:|---|\n");
    print_target(f, &modes[0]);
    print_target(f, &modes[1]);
    fprintf(f, "\n");
    print_notes(f, modes);
}

/* Plot data: the round trips around each kill, one block per round, cold then hot. */
static void plot_traces(const struct bench_opts *o, const struct rec_mode *modes)
{
    FILE *d = plot_data(o, "recovery-kill", "t_ms_since_kill rtt_ms");
    char text[1536];
    int nc = modes[0].runs, nh = modes[1].runs;

    if (!d)
        return;
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < modes[h].runs; r++) {
            const struct kill_trace *tr = &traces[h][r];

            fprintf(d, "# %s round %d\n", h ? "hot" : "cold", r + 1);
            for (int i = 0; i < tr->n; i++)
                fprintf(d, "%.3f %.4f\n", tr->t_ms[i], tr->rtt_ms[i]);
            fprintf(d, "\n\n");
        }
    plot_data_close(d);
    if (!nc && !nh)
        return;
    snprintf(text, sizeof(text),
             "set title \"Round trips around a worker kill (edge-native, kill-worker; %d before, "
             "the probe sent at the kill, %d after; every round)\"\n"
             "set xlabel \"send time relative to the kill command (ms)\"\n"
             "set ylabel \"round trip (ms)\"\n"
             "set logscale y\n"
             "plot %s%s%s\n", TRACE_BEFORE, TRACE_AFTER,
             nc ? "for [i=0:NC-1] \"%D/recovery-kill.dat\" index i using 1:2 with "
                  "linespoints lc 1 pointtype 7 pointsize 0.5 title (i == 0 ? \"cold "
                  "standby\" : \"\")" : "",
             nc && nh ? ", " : "",
             nh ? "for [i=NC:NC+NH-1] \"%D/recovery-kill.dat\" index i using 1:2 with "
                  "linespoints lc 2 pointtype 7 pointsize 0.5 title (i == NC ? \"hot "
                  "standby\" : \"\")" : "");
    char full[2048];
    snprintf(full, sizeof(full), "NC = %d\nNH = %d\n%s", nc, nh, text);
    plot_script(o, "recovery-kill", full);
}

int recbench_run(FILE *f, const struct bench_opts *o)
{
    static struct rec_mode modes[2];

    memset(modes, 0, sizeof(modes));
    memset(traces, 0, sizeof(traces));
    modes[1].hot = 1;
    for (int i = 0; i < 2 && !proc_interrupted(); i++)
        run_mode(o, &modes[i]);
    print_section(f, o, modes);
    plot_traces(o, modes);
    fflush(f);
    return modes[0].failed || modes[1].failed ? -1 : 0;
}
