/* metrics.c - the Prometheus endpoint (metrics_listen): GET /metrics in the text exposition
 * format 0.0.4, from the counters the node keeps for cessna-ctl stats.
 *
 * Every connection goes through io_uring like the control socket's (a multishot accept,
 * receives until the end of the request headers, sends until the answer is out, close): a
 * scraper that is slow, silent or hostile costs one slot of METRICS_CONNS and never blocks
 * the loop. A request longer than METRICS_REQUEST_MAX is refused (431), other paths get 404,
 * other methods 405, and the sweep closes whatever is not done after METRICS_TIMEOUT_MS. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"
#include "metrics.h"
#include "reqconn.h"
#include "snapsync.h"
#include "sup.h"

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

/* ---- histograms ---- */

#define HIST_BUCKETS 16

struct hist {
    const double *le;           /* upper bounds, ascending; +Inf is implicit */
    int nle;
    uint64_t n[HIST_BUCKETS];   /* observations in (le[i-1], le[i]]; n[nle] above the last */
    uint64_t count;
    double sum;
};

/* A snapshot is a fork and a write of the dirty pages: sub-millisecond to seconds. */
static const double snap_le[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                  0.5, 1, 2.5, 5, 10 };
/* A recovery is a process start, a snapshot load and a replay: milliseconds to seconds. */
static const double rec_le[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                 2.5, 5, 10, 30 };
#define NLE(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *const rec_modes[] = { "fresh", "cold", "hot", "remote" };
#define NMODES 4

static struct hist snap_hist = { snap_le, NLE(snap_le), { 0 }, 0, 0 };
static struct hist rec_hist[NMODES] = {
    { rec_le, NLE(rec_le), { 0 }, 0, 0 }, { rec_le, NLE(rec_le), { 0 }, 0, 0 },
    { rec_le, NLE(rec_le), { 0 }, 0, 0 }, { rec_le, NLE(rec_le), { 0 }, 0, 0 },
};

static void hist_observe(struct hist *h, uint64_t ns)
{
    double v = (double)ns / 1e9;
    int i = 0;

    while (i < h->nle && v > h->le[i])
        i++;
    h->n[i]++;
    h->count++;
    h->sum += v;
}

void metrics_observe_snapshot(uint64_t ns)
{
    hist_observe(&snap_hist, ns);
}

void metrics_observe_recovery(const char *mode, uint64_t ns)
{
    for (int i = 0; i < NMODES; i++)
        if (mode && strcmp(mode, rec_modes[i]) == 0)
            return hist_observe(&rec_hist[i], ns);
}

/* ---- the exposition ---- */

struct text {
    struct outbuf b;
    int failed;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->failed)
        return;
    for (;;) {
        size_t room = t->b.cap - t->b.len;
        va_start(ap, fmt);
        n = vsnprintf((char *)t->b.data + t->b.len, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)n < room) {
            t->b.len += (size_t)n;
            return;
        }
        if (outbuf_reserve(&t->b, (size_t)n + 1) < 0) {
            t->failed = 1;
            return;
        }
    }
}

static void head(struct text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP cessna_%s %s\n# TYPE cessna_%s %s\n", name, help, name, type);
}

static void counter(struct text *t, const char *name, const char *help, uint64_t v)
{
    head(t, name, "counter", help);
    put(t, "cessna_%s %llu\n", name, ull(v));
}

static void gauge(struct text *t, const char *name, const char *help, uint64_t v)
{
    head(t, name, "gauge", help);
    put(t, "cessna_%s %llu\n", name, ull(v));
}

/* The series of one histogram; labels is "" or `mode="cold",` (with the comma). */
static void hist_put(struct text *t, const char *name, const char *labels, const struct hist *h)
{
    uint64_t cum = 0;
    char lab[64];

    for (int i = 0; i < h->nle; i++) {
        cum += h->n[i];
        put(t, "cessna_%s_bucket{%sle=\"%g\"} %llu\n", name, labels, h->le[i], ull(cum));
    }
    put(t, "cessna_%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, ull(h->count));
    snprintf(lab, sizeof(lab), "%s", labels);
    size_t n = strlen(lab);
    if (n && lab[n - 1] == ',')
        lab[n - 1] = 0;   /* no trailing comma in the label set of _sum and _count */
    put(t, "cessna_%s_sum%s%s%s %.9g\n", name, n ? "{" : "", lab, n ? "}" : "", h->sum);
    put(t, "cessna_%s_count%s%s%s %llu\n", name, n ? "{" : "", lab, n ? "}" : "", ull(h->count));
}

static void render(struct text *t)
{
    static const char *const states[] = { "hello", "connecting", "resuming", "live", "closing",
                                          "ending", "hibernating", "hibernated" };
    uint32_t by_state[8] = { 0 };
    const struct sup_stats *st = &S.stats;
    struct hib_totals h;

    for (uint32_t i = 0; i < S.slot_high; i++) {
        const struct session *s = &S.sessions[i];
        if (s->state == S_FREE)
            continue;
        const char *name = ctl_state_name(s);
        for (int k = 0; k < 8; k++)
            if (strcmp(name, states[k]) == 0)
                by_state[k]++;
    }
    head(t, "sessions", "gauge", "Sessions on this edge node by state.");
    for (int k = 0; k < 8; k++)
        put(t, "cessna_sessions{state=\"%s\"} %u\n", states[k], by_state[k]);
    gauge(t, "max_sessions", "Sessions this node accepts at once (max_sessions).",
          S.cfg.max_sessions);
    counter(t, "sessions_opened_total", "Sessions started here: new ones (HELLO) and ones "
            "resumed here from another edge.", st->sessions_total + st->resumes);
    counter(t, "sessions_ended_total", "Sessions whose copy on this node ended (closed, failed, "
            "moved away).", st->sessions_ended);
    counter(t, "sessions_failed_total", "Sessions ended by an error.", st->sessions_failed);
    counter(t, "events_total", "Events ordered (messages from either side, timers, starts).",
            st->events);
    counter(t, "messages_in_total", "Messages received from endpoints.", st->msgs_in);
    counter(t, "messages_out_total", "Messages sent to endpoints.", st->msgs_out);
    counter(t, "bytes_in_total", "Message bytes received from endpoints.", st->bytes_in);
    counter(t, "bytes_out_total", "Message bytes sent to endpoints.", st->bytes_out);
    counter(t, "worker_deaths_total", "Worker processes that died during a session.",
            st->worker_deaths);

    head(t, "recoveries_total", "counter", "Sessions brought back, by mode: fresh (replay from "
         "the start), cold (from a snapshot), hot (the standby took over), remote (resumed "
         "here after another edge lost it).");
    uint64_t fresh = st->recoveries - st->hot_takeovers - st->cold_restores;
    put(t, "cessna_recoveries_total{mode=\"fresh\"} %llu\n", ull(fresh));
    put(t, "cessna_recoveries_total{mode=\"cold\"} %llu\n", ull(st->cold_restores));
    put(t, "cessna_recoveries_total{mode=\"hot\"} %llu\n", ull(st->hot_takeovers));
    put(t, "cessna_recoveries_total{mode=\"remote\"} %llu\n", ull(st->resumes));
    head(t, "recovery_duration_seconds", "histogram", "From a worker's death (a remote "
         "resume: its snapshots fetched) to the end of the replay, by mode.");
    for (int i = 0; i < NMODES; i++) {
        char lab[32];
        snprintf(lab, sizeof(lab), "mode=\"%s\",", rec_modes[i]);
        hist_put(t, "recovery_duration_seconds", lab, &rec_hist[i]);
    }

    counter(t, "snapshots_total", "Snapshots made durable.", st->snapshots);
    counter(t, "snapshot_failures_total", "Snapshots that failed (taking, writing or syncing).",
            st->snapshot_failures);
    head(t, "snapshot_duration_seconds", "histogram", "Time to take a durable snapshot: the "
         "fork and the write of its file.");
    hist_put(t, "snapshot_duration_seconds", "", &snap_hist);
    const struct snapsync_stats *y = snapsync_stats();
    counter(t, "snapshot_syncs_total", "Syncs of state_dir for written snapshot files.", y->syncs);

    hib_totals(&h);
    gauge(t, "hibernated_sessions", "Sessions asleep without a worker process.", h.asleep);
    counter(t, "hibernations_total", "Sessions that went to sleep.", h.hibernations);
    counter(t, "wakes_total", "Hibernated sessions woken by an event.", h.wakes);
    counter(t, "wake_failures_total", "Hibernated sessions that could not wake (failed).",
            h.wake_failures);

    head(t, "timeouts_total", "counter", "Connections and sessions closed by a timeout.");
    put(t, "cessna_timeouts_total{kind=\"hello\"} %llu\n", ull(st->hello_timeouts));
    put(t, "cessna_timeouts_total{kind=\"connect\"} %llu\n", ull(st->connect_timeouts));
    put(t, "cessna_timeouts_total{kind=\"idle\"} %llu\n", ull(st->idle_timeouts));
    counter(t, "bad_frames_total", "Frames refused from endpoints.", st->bad_frames);
    counter(t, "moves_total", "Sessions moved to another edge (drain, cessna-ctl move).",
            st->moves);
    counter(t, "zygote_restarts_total", "Restarts of the zygote.", st->zygote_restarts);
    counter(t, "zygote_spawns_deferred_total", "Worker starts that waited in the supervisor "
            "for room in the zygote's socket (a burst of new sessions).", st->spawns_deferred);
    counter(t, "session_dirs_removed_total", "Session directories given back (recycled into "
            "the free pool or removed).", st->dirs_removed);
    gauge(t, "session_dirs_free", "Free session directories waiting for new sessions.",
          sdir_free_dirs());
    counter(t, "session_dirs_reused_total", "New sessions that got a free directory instead of "
            "a new one.", st->dirs_reused);
    counter(t, "accept_fd_limit_total", "Accepts that failed for want of descriptors.",
            st->accept_fd_limit);
    gauge(t, "draining", "1 while the node moves its sessions away to stop.", S.draining ? 1 : 0);
}

/* ---- connections ---- */

static struct reqpool pool = {
    .what = "metrics", .n = METRICS_CONNS, .in_max = METRICS_REQUEST_MAX + 1,
    .op_recv = OP_METRICS_RECV, .op_send = OP_METRICS_SEND,
};
static int listen_fd = -1, accept_armed;

int metrics_listen(const char *addr, char *err, size_t errlen)
{
    char why[256];

    if (reqpool_init(&pool) < 0) {
        snprintf(err, errlen, "metrics_listen %s: out of memory", addr);
        return -ENOMEM;
    }
    listen_fd = addr_listen(addr, why, sizeof(why));
    if (listen_fd < 0)
        snprintf(err, errlen, "metrics_listen: %s", why);   /* why names the address */
    return listen_fd;
}

static void arm_accept(void)
{
    struct io_uring_sqe *sqe = sup_sqe();

    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UD(OP_METRICS_ACCEPT, 0, 0));
    accept_armed = 1;
}

void metrics_start(void)
{
    if (listen_fd >= 0)
        arm_accept();
}

void metrics_on_accept(int res, unsigned cqe_flags)
{
    if (!(cqe_flags & IORING_CQE_F_MORE))
        accept_armed = 0;
    if (res < 0) {
        if (res != -ECANCELED && res != -EINTR)
            LOG(LOG_WARN, "msg=\"metrics accept\" error=\"%s\"", strerror(-res));
        if (cqe_flags & IORING_CQE_F_MORE) {   /* stop it: the sweep accepts again */
            struct io_uring_sqe *sqe = sup_sqe();
            io_uring_prep_cancel64(sqe, UD(OP_METRICS_ACCEPT, 0, 0), 0);
            io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
        }
        return;
    }
    if (!accept_armed && !S.stopping)
        arm_accept();
    reqpool_add(&pool, res);
}

/* The answer to the request in c->in (its headers complete, or too long: status given). */
static void answer(struct reqconn *c, int status)
{
    struct text t = { .b = c->out };
    char *method = NULL, *target = NULL, *version = NULL, *save = NULL;
    const char *reason = "OK", *extra = "";
    int head_only = 0;

    if (!status) {
        char line[256];
        size_t n = strcspn(c->in, "\r\n");
        snprintf(line, sizeof(line), "%.*s", (int)(n < sizeof(line) ? n : sizeof(line) - 1), c->in);
        method = strtok_r(line, " ", &save);
        target = method ? strtok_r(NULL, " ", &save) : NULL;
        version = target ? strtok_r(NULL, " ", &save) : NULL;
        if (!version || strtok_r(NULL, " ", &save) || strncmp(version, "HTTP/1.", 7) != 0)
            status = 400;
        else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
            status = 405;
        else if (strncmp(target, "/metrics", 8) != 0 || (target[8] && target[8] != '?'))
            status = 404;
        else
            status = 200;
        head_only = method && strcmp(method, "HEAD") == 0;
    }
    switch (status) {
    case 400: reason = "Bad Request"; break;
    case 404: reason = "Not Found"; break;
    case 405: reason = "Method Not Allowed"; extra = "Allow: GET, HEAD\r\n"; break;
    case 431: reason = "Request Header Fields Too Large"; break;
    }
    /* The body first, past room for the headers; the headers go in front of it. */
    enum { HDR_ROOM = 256 };
    if (outbuf_reserve(&t.b, HDR_ROOM + 8192) < 0) {
        c->out = t.b;
        return;
    }
    t.b.len = HDR_ROOM;
    if (status == 200)
        render(&t);
    else
        put(&t, "%d %s\n", status, reason);
    if (t.failed) {
        c->out = t.b;
        c->out.len = 0;
        return;
    }
    size_t body = t.b.len - HDR_ROOM;
    char hdr[HDR_ROOM];
    int h = snprintf(hdr, sizeof(hdr), "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\n%sConnection: close\r\n\r\n", status, reason,
                     status == 200 ? "text/plain; version=0.0.4; charset=utf-8" :
                     "text/plain; charset=utf-8", body, extra);
    memmove(t.b.data + h, t.b.data + HDR_ROOM, head_only ? 0 : body);
    memcpy(t.b.data, hdr, (size_t)h);
    t.b.len = (size_t)h + (head_only ? 0 : body);
    c->out = t.b;
    if (status != 200)
        LOG(LOG_DEBUG, "msg=\"metrics request refused\" status=%d", status);
}

/* The end of the request headers in what arrived, or NULL. */
static const char *headers_end(const struct reqconn *c)
{
    const char *e = memmem(c->in, c->inlen, "\r\n\r\n", 4);
    return e ? e : memmem(c->in, c->inlen, "\n\n", 2);
}

void metrics_on_recv(uint32_t idx, int res)
{
    struct reqconn *c = reqpool_completed(&pool, idx);

    if (!c)
        return;
    if (c->closing || res <= 0)
        return reqpool_close(c);   /* an error, or the scraper left before its request ended */
    c->inlen += (size_t)res;
    c->in[c->inlen] = 0;
    if (memchr(c->in, 0, c->inlen))
        answer(c, 400);   /* a NUL has no place in a request */
    else if (headers_end(c))
        answer(c, 0);
    else if (c->inlen == METRICS_REQUEST_MAX)
        answer(c, 431);
    else
        return reqpool_recv(&pool, c);   /* the rest of the request */
    if (!c->out.len)
        return reqpool_close(c);
    shutdown(c->fd, SHUT_RD);   /* nothing more is read: a pipelined request is not served */
    reqpool_send(&pool, c);
}

void metrics_on_send(uint32_t idx, int res)
{
    reqpool_on_send(&pool, idx, res);
}

void metrics_sweep(uint64_t now_ms)
{
    if (listen_fd < 0)
        return;
    if (!accept_armed && !S.stopping)
        arm_accept();
    reqpool_sweep(&pool, now_ms, METRICS_TIMEOUT_MS);
}
