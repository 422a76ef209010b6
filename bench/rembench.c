/* rembench.c - section "remote" (issue 7 item 9): sessions that outlive their edge node.
 * Runs its three parts: the whole-node kill here, the drain (remdrain.c), the shipping
 * cost (remship.c), each on processes of its own.
 *
 * Part 1: one session through client proxy -> edge A (B, C standing by) -> server proxy
 * (--store) -> plain echo, on ballast.so with o->recovery_state bytes of state. Per round:
 * a snapshot, waited for until the server proxy stored it (remote_snapshot= reaches its
 * position); o->remote_msgs messages echoed one at a time (2 events each; snapshots off
 * meanwhile: the interval is an hour); then the clock starts, the holding edge's whole
 * process group is SIGKILLed, one probe goes at once, and the clock stops at its echo:
 * "kill to first new output". The new edge's `sessions` line splits it: detect (kill to
 * the RESUME's arrival, resume_at_ns: both CLOCK_MONOTONIC on this machine), reconnect and
 * authenticate (resume_connect_us), fetch (resume_fetch_us), restore (recovery_start_us +
 * recovery_load_us), replay (recovery_replay_us); rest = what is left (WELCOME and the
 * probe's own trip). The killed edge is restarted as a new node before the next round.
 * A last round SIGSTOPs the node instead: only the client proxy's --heartbeat-ms finds it.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench.h"

#define MAX_RUNS           64
#define REPLY_TIMEOUT_MS   30000
#define STORE_TIMEOUT_MS   30000
#define SPLIT_TIMEOUT_MS   10000
#define NO_SNAPSHOTS_MS    3600000u  /* "snapshots off": only the ones asked for */
#define EDGE_HEARTBEAT_MS  100
#define PROXY_HEARTBEAT_MS 400
#define TARGET_KILL_US     50000.0
#define TRACE_BEFORE       50   /* round trips kept from before the kill, for --plot */
#define TRACE_AFTER        50   /* round trips made right after the probe */

/* Apart from the split: when the killed node's supervisor had fully exited (its pidfd
 * readable), and when a TCP connection the bench holds to the node saw its end (the same
 * kind of connection as the client proxy's, so: when the proxy could have noticed). */
enum { M_TOTAL, M_DETECT, M_CONNECT, M_FETCH, M_RESTORE, M_REPLAY, M_REST, M_EXIT, M_RESET,
       M_COUNT };

static const char *const metric_names[M_COUNT] = {
    "kill → first output", "detect", "reconnect + auth", "fetch", "restore", "replay", "rest",
    "node's supervisor exited", "a connection to the node ended",
};

struct rem_rounds {
    int      runs, failed;
    double   v[M_COUNT][MAX_RUNS];       /* µs */
    uint64_t events_min, events_max;     /* ordered beyond the stored snapshot at the kill */
    uint64_t snap_bytes;                 /* the last snapshot's size */
    char     err[BENCH_ERRLEN];
};

/* The round trips around one kill: send time relative to the kill (ms) and round trip
 * (ms); kind 0 before, 1 the probe, 2 after. */
struct kill_trace {
    int    n;
    double t_ms[TRACE_BEFORE + 1 + TRACE_AFTER], rtt_ms[TRACE_BEFORE + 1 + TRACE_AFTER];
    int    kind[TRACE_BEFORE + 1 + TRACE_AFTER];
};

static struct kill_trace traces[MAX_RUNS + 1]; /* per round: the kills, then the stop */

struct rem_part1 {
    struct rem_rounds kill, stop;
    int      attempted;
    char     path[160];                  /* edges the session went through: "A→B→C" */
};

static const char edge_name[REM_EDGES] = { 'A', 'B', 'C' };

/* A snapshot of session id at its edge, then wait until the server proxy stored it. */
static int snapshot_stored(struct rem_world *w, int at, uint64_t id, uint64_t *bytes,
                           char *err, size_t errlen)
{
    char cmd[64], reply[512], line[ECTL_LINE];
    uint64_t pos, stored = 0;
    uint64_t deadline = ectl_now_ns() + (uint64_t)STORE_TIMEOUT_MS * 1000000u;
    const char *p;
    int rc;

    snprintf(cmd, sizeof(cmd), "snapshot %" PRIu64, id);
    /* A resumed session's new edge takes a snapshot of its own first: wait for it. */
    while ((rc = ectl_cmd(w->control[at], cmd, reply, sizeof(reply), err, errlen)) == 0 &&
           strstr(reply, "taking a snapshot already") && ectl_now_ns() < deadline)
        ectl_pause_us(2000);
    if (rc < 0)
        return rc;
    if (strncmp(reply, "ok", 2) != 0 || !(p = strstr(reply, "at position "))) {
        snprintf(err, errlen, "'%s' refused: %.*s", cmd, (int)strcspn(reply, "\n"), reply);
        return -EPROTO;
    }
    pos = strtoull(p + 12, NULL, 10);
    for (;;) {
        rc = ectl_session(w->control[at], id, line, sizeof(line), err, errlen);
        if (rc < 0)
            return rc;
        if (ectl_field(line, "remote_snapshot", &stored) == 0 && stored >= pos) {
            ectl_field(line, "snapshot_bytes", bytes);
            return 0;
        }
        if (ectl_now_ns() > deadline) {
            snprintf(err, errlen, "the snapshot at position %" PRIu64 " was not stored at the "
                     "server proxy within %d ms (last: %s)", pos, STORE_TIMEOUT_MS, line);
            return -ETIMEDOUT;
        }
        ectl_pause_us(1000);
    }
}

/* Send the probe; wait for its echo while watching the node's pidfd and the bench's own
 * connection to it: v[M_EXIT] and v[M_RESET] after t0 (-1: not before the echo). */
static int probe(int fd, const char *msg, int pidfd, int watch, uint64_t t0, double *v,
                 char *err, size_t errlen)
{
    uint64_t deadline = ectl_now_ns() + (uint64_t)REPLY_TIMEOUT_MS * 1000000u;
    size_t len = strlen(msg), have = 0;
    char back[64];

    v[M_EXIT] = v[M_RESET] = -1;
    if (send(fd, msg, len, MSG_NOSIGNAL) != (ssize_t)len) {
        int rc = -errno;
        snprintf(err, errlen, "send '%s': %s", msg, strerror(errno));
        return rc;
    }
    struct pollfd p[3] = { { .fd = fd, .events = POLLIN }, { .fd = pidfd, .events = POLLIN },
                           { .fd = watch, .events = POLLIN | POLLRDHUP } };
    while (have < len) {
        uint64_t now = ectl_now_ns();
        if (now >= deadline) {
            snprintf(err, errlen, "no echo of '%s' within %d ms", msg, REPLY_TIMEOUT_MS);
            return -ETIMEDOUT;
        }
        if (poll(p, 3, (int)((deadline - now) / 1000000u) + 1) <= 0)
            continue;
        for (int k = 1; k < 3; k++)
            if (p[k].revents) {
                v[k == 1 ? M_EXIT : M_RESET] = (double)(ectl_now_ns() - t0) / 1000.0;
                p[k].fd = -1;
            }
        if (!p[0].revents)
            continue;
        ssize_t n = recv(fd, back + have, len - have, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            int rc = n == 0 ? -ECONNRESET : -errno;
            snprintf(err, errlen, "probe '%s': the client proxy %s", msg,
                     n == 0 ? "closed the connection" : strerror(errno));
            return rc;
        }
        if (n > 0)
            have += (size_t)n;
    }
    if (memcmp(back, msg, len) != 0) {
        snprintf(err, errlen, "sent '%s', got '%.*s'", msg, (int)len, back);
        return -EPROTO;
    }
    return 0;
}

/* count messages, one at a time; the last TRACE_BEFORE send times and round trips in
 * sent_ns / rtt_ns (ring, slot i % TRACE_BEFORE) when given. */
static int echo_many(int fd, int round, int count, uint64_t *sent_ns, uint64_t *rtt_ns,
                     char *err, size_t errlen)
{
    char msg[64];

    for (int i = 0; i < count; i++) {
        uint64_t t = ectl_now_ns();

        snprintf(msg, sizeof(msg), "round %d msg %d", round, i);
        int rc = rw_ask(fd, msg, msg, REPLY_TIMEOUT_MS, err, errlen);
        if (rc < 0)
            return rc;
        if (sent_ns) {
            sent_ns[i % TRACE_BEFORE] = t;
            rtt_ns[i % TRACE_BEFORE] = ectl_now_ns() - t;
        }
    }
    return 0;
}

static void trace_add(struct kill_trace *tr, uint64_t kill_ns, uint64_t sent_ns,
                      uint64_t rtt_ns, int kind)
{
    if (tr->n == TRACE_BEFORE + 1 + TRACE_AFTER)
        return;
    tr->t_ms[tr->n] = ((double)sent_ns - (double)kill_ns) / 1e6;
    tr->rtt_ms[tr->n] = (double)rtt_ns / 1e6;
    tr->kind[tr->n++] = kind;
}

/* The new edge's split of the resume: poll until it holds the session with recovery_us=
 * (the replay is over). Returns the edge's index. */
static int read_split(struct rem_world *w, uint64_t id, int lost, uint64_t kill_ns,
                      double *v, char *err, size_t errlen)
{
    static const char *const keys[] = { "resume_at_ns", "resume_connect_us", "resume_fetch_us",
                                        "recovery_start_us", "recovery_load_us",
                                        "recovery_replay_us", "recovery_us" };
    uint64_t deadline = ectl_now_ns() + (uint64_t)SPLIT_TIMEOUT_MS * 1000000u, f[7];
    char line[ECTL_LINE] = "";
    int at;

    for (;;) {
        int have = (at = rw_find_session(w, id, lost, line, sizeof(line))) >= 0;
        for (int k = 0; have && k < 7; k++)
            have = ectl_field(line, keys[k], &f[k]) == 0;
        if (have)
            break;
        if (ectl_now_ns() > deadline) {
            snprintf(err, errlen, "no edge but %c reported the resume's split (resume_at_ns= "
                     "... recovery_us=) within %d ms (last line: %s)", edge_name[lost],
                     SPLIT_TIMEOUT_MS, line[0] ? line : "none");
            return -ETIMEDOUT;
        }
        ectl_pause_us(1000);
    }
    v[M_DETECT] = f[0] > kill_ns ? (double)(f[0] - kill_ns) / 1000.0 : 0;
    v[M_CONNECT] = (double)f[1];
    v[M_FETCH] = (double)f[2];
    v[M_RESTORE] = (double)(f[3] + f[4]);
    v[M_REPLAY] = (double)f[5];
    v[M_REST] = v[M_TOTAL];
    for (int k = M_DETECT; k <= M_REPLAY; k++)
        v[M_REST] -= v[k];
    return at;
}

/* One round on the edge `at` holding session id: snapshot stored, messages, then the node
 * fault (SIGKILL or SIGSTOP) and the probe. The new holder's index, or -errno. */
static int one_round(struct rem_world *w, int fd, uint64_t id, int at, int sig,
                     const struct bench_opts *o, struct rem_rounds *r, char *err, size_t errlen)
{
    char line[ECTL_LINE], msg[64];
    uint64_t ordered, stored, before_sent[TRACE_BEFORE], before_rtt[TRACE_BEFORE];
    double *v, tmp[M_COUNT];
    int rc = snapshot_stored(w, at, id, &r->snap_bytes, err, errlen);

    if (rc == 0)
        rc = echo_many(fd, r->runs, o->remote_msgs, before_sent, before_rtt, err, errlen);
    if (rc == 0)
        rc = ectl_session(w->control[at], id, line, sizeof(line), err, errlen);
    if (rc < 0)
        return rc;
    if (ectl_field(line, "ordered", &ordered) < 0 ||
        ectl_field(line, "remote_snapshot", &stored) < 0) {
        snprintf(err, errlen, "the sessions line lacks ordered= or remote_snapshot=: %s", line);
        return -EPROTO;
    }
    snprintf(msg, sizeof(msg), "probe after %s %d", sig == SIGKILL ? "kill" : "stop", r->runs);
    int pidfd = (int)syscall(SYS_pidfd_open, w->edge[at].pid, 0);
    if (pidfd < 0) {
        rc = -errno;
        snprintf(err, errlen, "pidfd_open of edge %c: %s", edge_name[at], strerror(errno));
        return rc;
    }
    /* A connection the node accepted and waits on for a HELLO: only its end is watched. */
    char addr[64];
    struct bench_conn watch = { .fd = -1 };
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", w->port[at]);
    if ((rc = load_connect(&watch, addr, 0, err, errlen)) < 0) {
        close(pidfd);
        return rc;
    }
    ectl_pause_us(2000);   /* accepted by now */
    v = tmp;
    uint64_t t0 = ectl_now_ns();
    rw_edge_signal(w, at, sig);
    rc = probe(fd, msg, pidfd, watch.fd, t0, v, err, errlen);
    uint64_t t1 = ectl_now_ns();
    close(pidfd);
    load_close(&watch);
    if (rc < 0)
        return rc;
    if (r->runs >= MAX_RUNS)
        return -E2BIG;
    v[M_TOTAL] = (double)(t1 - t0) / 1000.0;
    /* The round trips around the kill: the last ones before it, the probe, and as many
     * right after (made before the split is read, so they follow the probe closely). */
    struct kill_trace *tr = &traces[sig == SIGKILL ? r->runs : MAX_RUNS];
    int kept = o->remote_msgs < TRACE_BEFORE ? o->remote_msgs : TRACE_BEFORE;
    memset(tr, 0, sizeof(*tr));
    for (int k = o->remote_msgs - kept; k < o->remote_msgs; k++)
        trace_add(tr, t0, before_sent[k % TRACE_BEFORE], before_rtt[k % TRACE_BEFORE], 0);
    trace_add(tr, t0, t0, t1 - t0, 1);
    for (int k = 0; k < TRACE_AFTER; k++) {
        uint64_t ts = ectl_now_ns();

        snprintf(msg, sizeof(msg), "after %s %d msg %d", sig == SIGKILL ? "kill" : "stop",
                 r->runs, k);
        if ((rc = rw_ask(fd, msg, msg, REPLY_TIMEOUT_MS, err, errlen)) < 0)
            return rc;
        trace_add(tr, t0, ts, ectl_now_ns() - ts, 2);
    }
    int now = read_split(w, id, at, t0, v, err, errlen);
    if (now < 0)
        return now;
    for (int k = 0; k < M_COUNT; k++)
        r->v[k][r->runs] = v[k];
    fprintf(stderr, "cessna-bench: remote %s round %d, edge %c -> %c (µs): total %.0f detect "
            "%.0f connect %.0f fetch %.0f restore %.0f replay %.0f rest %.0f node exit %.0f "
            "connection ended %.0f\n",
            sig == SIGKILL ? "SIGKILL" : "SIGSTOP", r->runs + 1, edge_name[at], edge_name[now],
            v[M_TOTAL], v[M_DETECT], v[M_CONNECT], v[M_FETCH], v[M_RESTORE], v[M_REPLAY],
            v[M_REST], v[M_EXIT], v[M_RESET]);
    uint64_t events = ordered - stored;
    if (!r->runs || events < r->events_min)
        r->events_min = events;
    if (events > r->events_max)
        r->events_max = events;
    r->runs++;
    return now;
}

static void fail_rounds(struct rem_rounds *r, struct rem_world *w, const char *what,
                        const char *why)
{
    char dead[BENCH_ERRLEN / 2];
    int died = w && rw_check(w, dead, sizeof(dead)) < 0 && !strstr(why, dead); /* once */

    r->failed = 1;
    snprintf(r->err, sizeof(r->err), "remote %s: %s%s%s", what, why, died ? "; " : "",
             died ? dead : "");
    fprintf(stderr, "cessna-bench: FAILED %s\n", r->err);
}

/* The session: connect, ballast, find it at A; the kill rounds, then the stop round. */
static void run_rounds(struct rem_world *w, const struct bench_opts *o, struct rem_part1 *p)
{
    char err[BENCH_ERRLEN], cmd[64], out[ECTL_LINE * 4], what[64];
    int runs = o->remote_runs < MAX_RUNS ? o->remote_runs : MAX_RUNS, at = 0, rc;
    uint64_t id = 0;
    int fd = rw_connect(w, err, sizeof(err));

    if (fd < 0) {
        fail_rounds(&p->kill, w, "connect to the client proxy", err);
        return;
    }
    snprintf(cmd, sizeof(cmd), "BALLAST %zu", o->recovery_state);
    rc = rw_ask(fd, cmd, "ok", REPLY_TIMEOUT_MS, err, sizeof(err));
    if (rc == 0)
        rc = ectl_cmd(w->control[0], "sessions", out, sizeof(out), err, sizeof(err));
    if (rc == 0 && ectl_field(out, "id", &id) < 0) {
        snprintf(err, sizeof(err), "edge A lists no session: %s", out);
        rc = -ENOENT;
    }
    if (rc < 0) {
        fail_rounds(&p->kill, w, "setup of the session", err);
        close(fd);
        return;
    }
    snprintf(p->path, sizeof(p->path), "A");
    for (int k = 0; k <= runs && !proc_interrupted(); k++) {
        int stop = k == runs;   /* the last round hangs the node instead */
        struct rem_rounds *r = stop ? &p->stop : &p->kill;
        int now = one_round(w, fd, id, at, stop ? SIGSTOP : SIGKILL, o, r, err, sizeof(err));

        if (now < 0) {
            snprintf(what, sizeof(what), "%s round %d (edge %c)", stop ? "SIGSTOP" : "SIGKILL",
                     stop ? 1 : k + 1, edge_name[at]);
            fail_rounds(r, w, what, err);
            break;
        }
        snprintf(p->path + strlen(p->path), sizeof(p->path) - strlen(p->path), "→%c",
                 edge_name[now]);
        /* The lost node comes back as a new one (an empty state_dir). */
        rw_edge_stop(w, at);
        if (!stop && rw_edge_start(w, at, o, err, sizeof(err)) < 0) {
            snprintf(what, sizeof(what), "restart of edge %c", edge_name[at]);
            fail_rounds(&p->kill, w, what, err);
            break;
        }
        at = now;
    }
    close(fd);
}

static void print_row(FILE *f, const char *label, const double *v)
{
    fprintf(f, "| %s |", label);
    for (int k = 0; k < M_COUNT; k++)
        if (v[k] < 0)
            fprintf(f, " - |");
        else
            fprintf(f, " %.0f |", v[k]);
    fprintf(f, "\n");
}

/* median, min, max of each metric over the rounds */
static void stats_rows(FILE *f, const char *what, const struct rem_rounds *r)
{
    double med[M_COUNT], mn[M_COUNT], mx[M_COUNT], tmp[MAX_RUNS];
    char label[96];

    for (int k = 0; k < M_COUNT; k++) {
        memcpy(tmp, r->v[k], sizeof(double) * (size_t)r->runs);
        med[k] = report_median(tmp, r->runs);
        mn[k] = tmp[0];   /* sorted by report_median */
        mx[k] = tmp[r->runs - 1];
    }
    snprintf(label, sizeof(label), "%s, median of %d", what, r->runs);
    print_row(f, label, med);
    if (r->runs > 1) {
        print_row(f, "min", mn);
        print_row(f, "max", mx);
    }
}

static void print_part1(FILE *f, const struct bench_opts *o, struct rem_part1 *p)
{
    char state[32], label[96];

    report_size_label(o->recovery_state, state, sizeof(state));
    fprintf(f, "## Remote recovery: a whole edge node lost\n\n");
    fprintf(f, "One session: plain TCP client -> cessna-client-proxy (--edge A,B,C, --heartbeat-ms "
               "%d) -> edge -> cessna-server-proxy (--store, --edge-secret-file) -> plain TCP "
               "echo; ballast.so with %s of state, cold standby, sandbox off (so the node's "
               "workers are in its process group). Per round: a snapshot, waited for until the "
               "server proxy stored it; %d messages echoed (events since the snapshot below); "
               "then SIGKILL to the holding edge's whole process group and one probe at once. "
               "kill → first output: at the client. The new edge's split: detect = kill to "
               "the RESUME's arrival there (the proxy sees the reset); reconnect + auth = to "
               "the server proxy's RESUME_INFO; fetch = the stored chain, order and messages; "
               "restore = worker start + snapshot load; replay; rest = the remainder (WELCOME, "
               "the probe's trip). Apart: when the killed node's supervisor had fully "
               "exited (its pidfd readable), and when a TCP connection the bench holds to the "
               "node (accepted, waiting for HELLO) saw its end; - when not before the probe's "
               "echo. The killed node restarts empty before the next round. µs.\n\n", PROXY_HEARTBEAT_MS, state, o->remote_msgs);
    fprintf(f, "|  |");
    for (int k = 0; k < M_COUNT; k++)
        fprintf(f, " %s |", metric_names[k]);
    fprintf(f, "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    if (p->kill.runs)
        stats_rows(f, "SIGKILL", &p->kill);
    else
        fprintf(f, "| SIGKILL | failed | | | | | | | | |\n");
    snprintf(label, sizeof(label), "SIGSTOP, --heartbeat-ms %d (edges: heartbeat_interval_ms "
             "%d)", PROXY_HEARTBEAT_MS, EDGE_HEARTBEAT_MS);
    if (p->stop.runs) {
        double one[M_COUNT];
        for (int k = 0; k < M_COUNT; k++)
            one[k] = p->stop.v[k][0];
        print_row(f, label, one);
    } else
        fprintf(f, "| %s | failed | | | | | | | | |\n", label);
    fprintf(f, "\n");

    fprintf(f, "| target | measured | |\n|---|---:|---|\n");
    if (p->kill.runs) {
        double tmp[MAX_RUNS];
        memcpy(tmp, p->kill.v[M_TOTAL], sizeof(double) * (size_t)p->kill.runs);
        double med = report_median(tmp, p->kill.runs), mx = tmp[p->kill.runs - 1];
        fprintf(f, "| SIGKILL: kill → first output < %.0f ms (median) | %.1f ms | %s |\n",
                TARGET_KILL_US / 1000, med / 1000, med < TARGET_KILL_US ? "PASS" : "MISS");
        fprintf(f, "| SIGKILL: kill → first output < %.0f ms (max) | %.1f ms | %s |\n",
                TARGET_KILL_US / 1000, mx / 1000, mx < TARGET_KILL_US ? "PASS" : "MISS");
    } else {
        fprintf(f, "| SIGKILL: kill → first output < %.0f ms | | FAILED |\n",
                TARGET_KILL_US / 1000);
    }
    fprintf(f, "\n");
    if (p->kill.runs)
        fprintf(f, "- events since the stored snapshot at the kill: %" PRIu64 " to %" PRIu64
                "; the session's last snapshot: %" PRIu64 " bytes (snapshot_bytes=)\n",
                p->kill.events_min, p->kill.events_max, p->kill.snap_bytes);
    if (p->kill.runs) {
        double gap[MAX_RUNS];
        int n = 0;
        for (int i = 0; i < p->kill.runs; i++)
            if (p->kill.v[M_EXIT][i] >= 0 && p->kill.v[M_RESET][i] >= 0)
                gap[n++] = p->kill.v[M_RESET][i] - p->kill.v[M_EXIT][i];
        if (n)
            fprintf(f, "- the node's TCP connections ended a median %.0f µs after its "
                       "supervisor had exited (%d rounds); detect follows the connections' end, "
                       "not the exit\n", report_median(gap, n), n);
    }
    fprintf(f, "- the session went through the edges %s (SIGKILL rounds done: %d of %d)\n",
            p->path[0] ? p->path : "-", p->kill.runs, o->remote_runs);
    if (p->kill.failed)
        fprintf(f, "- error: %s\n", p->kill.err);
    if (p->stop.failed)
        fprintf(f, "- error: %s\n", p->stop.err);
    fprintf(f, "\n");
}

/* Plot data: the round trips around each kill (one block per round) and the stop. */
static void plot_traces(const struct bench_opts *o, const struct rem_part1 *p)
{
    FILE *d = plot_data(o, "remote-kill", "t_ms_since_fault rtt_ms kind(0 before, 1 probe, "
                                          "2 after)");
    char text[1024];
    int blocks = 0;

    if (!d)
        return;
    for (int k = 0; k <= MAX_RUNS; k++) {
        const struct kill_trace *tr = &traces[k];

        if (k < MAX_RUNS && k >= p->kill.runs)
            continue;
        if (k == MAX_RUNS && !p->stop.runs)
            continue;
        fprintf(d, "# %s round %d\n", k == MAX_RUNS ? "SIGSTOP" : "SIGKILL",
                k == MAX_RUNS ? 1 : k + 1);
        for (int i = 0; i < tr->n; i++)
            fprintf(d, "%.3f %.4f %d\n", tr->t_ms[i], tr->rtt_ms[i], tr->kind[i]);
        fprintf(d, "\n\n");
        blocks++;
    }
    plot_data_close(d);
    if (!blocks)
        return;
    if (p->kill.runs) {
        snprintf(text, sizeof(text),
                 "set title \"Round trips around a whole edge node killed (SIGKILL; client proxy "
                 "-> edge -> server proxy; %d before, the probe sent at the kill, %d after)\"\n"
                 "set xlabel \"send time relative to the kill (ms)\"\n"
                 "set ylabel \"round trip (ms)\"\n"
                 "set logscale y\n"
                 "plot for [i=0:%d] \"%%D/remote-kill.dat\" index i using 1:2 with linespoints "
                 "pointtype 7 pointsize 0.5 title sprintf(\"SIGKILL round %%d\", i+1)\n",
                 TRACE_BEFORE, TRACE_AFTER, p->kill.runs - 1);
        plot_script(o, "remote-kill", text);
    }
    if (p->stop.runs) {
        snprintf(text, sizeof(text),
                 "set title \"Round trips around a whole edge node hung (SIGSTOP, found by the "
                 "client proxy's heartbeat, --heartbeat-ms %d)\"\n"
                 "set xlabel \"send time relative to the SIGSTOP (ms)\"\n"
                 "set ylabel \"round trip (ms)\"\n"
                 "set logscale y\n"
                 "plot \"%%D/remote-kill.dat\" index %d using 1:2 with linespoints "
                 "pointtype 7 pointsize 0.5 title \"SIGSTOP\"\n",
                 PROXY_HEARTBEAT_MS, blocks - 1);
        plot_script(o, "remote-stop", text);
    }
}

static int remote_kill_run(FILE *f, const struct bench_opts *o)
{
    static struct rem_part1 p;
    struct rem_spec spec = {
        .tag = "remote-kill", .nedges = REM_EDGES, .app = "ballast.so",
        .snapshot_interval_ms = NO_SNAPSHOTS_MS, .edge_heartbeat_ms = EDGE_HEARTBEAT_MS,
        .proxy_heartbeat_ms = PROXY_HEARTBEAT_MS,
    };
    static struct rem_world w;
    char err[BENCH_ERRLEN];

    memset(&p, 0, sizeof(p));
    memset(traces, 0, sizeof(traces));
    fprintf(stderr, "cessna-bench: remote: %d whole-node kills and one hang, %d messages "
            "each\n", o->remote_runs, o->remote_msgs);
    if (rw_up(&w, &spec, o, err, sizeof(err)) < 0)
        fail_rounds(&p.kill, &w, "setup", err);
    else
        run_rounds(&w, o, &p);
    rw_down(&w);
    print_part1(f, o, &p);
    plot_traces(o, &p);
    fflush(f);
    return p.kill.failed || p.stop.failed || !p.stop.runs ? -1 : 0;
}

int rembench_run(FILE *f, const struct bench_opts *o)
{
    int failed = 0;

    if (remote_kill_run(f, o) < 0)
        failed = 1;
    if (!proc_interrupted() && remdrain_run(f, o) < 0)
        failed = 1;
    if (!proc_interrupted() && remship_run(f, o) < 0)
        failed = 1;
    return failed ? -1 : 0;
}
