/* manyload.c - one load generator for many connections (section "sessions"): the same code
 * drives N native edge sessions (libcessna-endpoint) or N plain TCP connections (HAProxy),
 * from one thread with epoll.
 *
 * Opening: `inflight` threads each open one connection after the other (for the edge:
 * HELLO / WELCOME, its worker forked) and prove it with one echo, so up to `inflight` opens
 * are in flight at once; the first failure stops new opens. The open connections are then
 * handed to the one epoll thread.
 *
 * Paced: every connection sends one 64 B message per period, the N connections spread
 * evenly over the period; one message outstanding per connection (a send that comes due
 * while the last echo is still missing is skipped and counted late). Saturating: every
 * connection sends its next message as soon as its echo is back. Either way the round trip
 * of each echo is recorded (CLOCK_MONOTONIC), after a warm-up; msgs/s = echoes received in
 * the measured window / its length. Each echo is compared with what was sent.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bench.h"
#include "cessna_endpoint.h"

#define STALL_NS    (10ull * 1000000000ull) /* nothing echoed while some are outstanding */
#define MAX_EVENTS  512
#define FIRST_ECHO_MS 10000

struct many_conn {
    struct bench_conn c;
    int               ok;       /* opening: open and proven */
    uint64_t          setup_ns; /* opening: connect to first echo */
    uint64_t          sent_ns;  /* 0: nothing outstanding */
    uint64_t          seq;      /* stamped into the message */
    size_t            have;     /* plain TCP: bytes of the echo so far */
    uint8_t           buf[MANY_MSG];
};

static void fill(uint8_t *msg, uint64_t seq, size_t i)
{
    for (size_t k = 0; k < MANY_MSG; k++)
        msg[k] = (uint8_t)(k * 131 + i);
    memcpy(msg, &seq, sizeof(seq));
}

void many_close(struct many_set *m)
{
    for (int i = 0; i < m->n; i++) {
        if (m->conns[i].c.ep)
            cessna_ep_free(m->conns[i].c.ep); /* no CLOSE: the edge is stopped next */
        else if (m->conns[i].c.fd >= 0)
            close(m->conns[i].c.fd);
    }
    free(m->conns);
    if (m->epfd >= 0)
        close(m->epfd);
    memset(m, 0, sizeof(*m));
    m->epfd = -1;
}

/* Closing cleanly: `threads` threads each send CLOSE and wait for the edge's, one session
 * after the other. */
struct closer {
    struct many_set *m;
    atomic_int next, closed;
    int timeout_ms;
};

static void *closer_main(void *arg)
{
    struct closer *cl = arg;

    for (int i; (i = atomic_fetch_add(&cl->next, 1)) < cl->m->n && !proc_interrupted();) {
        struct cessna_ep *ep = cl->m->conns[i].c.ep;
        if (!ep)
            continue;
        epoll_ctl(cl->m->epfd, EPOLL_CTL_DEL, cl->m->conns[i].c.fd, NULL);
        cessna_ep_set_nonblocking(ep, 0);
        if (cessna_ep_close(ep, cl->timeout_ms) == 0)
            atomic_fetch_add(&cl->closed, 1);
        cessna_ep_free(ep);
        cl->m->conns[i].c.ep = NULL;
        cl->m->conns[i].c.fd = -1;
    }
    return NULL;
}

int many_close_clean(struct many_set *m, int threads, int timeout_ms)
{
    struct closer cl = { .m = m, .timeout_ms = timeout_ms };
    pthread_t t[64];
    int k = 0, closed;

    if (threads > 64)
        threads = 64;
    for (; k < threads; k++)
        if (pthread_create(&t[k], NULL, closer_main, &cl) != 0)
            break;
    if (!k)
        closer_main(&cl);
    while (k > 0)
        pthread_join(t[--k], NULL);
    closed = atomic_load(&cl.closed);
    many_close(m);
    return closed;
}

static int ms_until(uint64_t now, uint64_t t)
{
    return t <= now ? 0 : (int)((t - now + 999999) / 1000000);
}

/* ---- one run ---- */

struct run {
    struct many_set    *m;
    uint64_t            measure_from, measure_to; /* echoes received in between count */
    uint64_t           *samples;
    size_t              nsamples, cap;
    uint64_t            echoes, sent, late, outstanding, last_progress;
    int                 saturate;
};

static int send_one(struct run *r, int i, uint64_t now, char *err, size_t errlen)
{
    struct many_conn *mc = &r->m->conns[i];
    uint8_t msg[MANY_MSG];
    int rc;

    fill(msg, ++mc->seq, (size_t)i);
    if (mc->c.ep) {
        rc = cessna_ep_send(mc->c.ep, msg, sizeof(msg));
        if (rc < 0) {
            snprintf(err, errlen, "connection %d: cessna_ep_send: %s %s", i, strerror(-rc),
                     cessna_ep_error(mc->c.ep));
            return rc;
        }
    } else {
        ssize_t w = write(mc->c.fd, msg, sizeof(msg));

        if (w != (ssize_t)sizeof(msg)) { /* 64 B into an empty socket buffer */
            rc = w < 0 ? -errno : -EIO;
            snprintf(err, errlen, "connection %d: write: %s", i,
                     w < 0 ? strerror(errno) : "short write");
            return rc;
        }
    }
    mc->sent_ns = now;
    mc->have = 0;
    r->sent++;
    r->outstanding++;
    return 0;
}

static int add_sample(struct run *r, uint64_t ns)
{
    if (r->nsamples == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 65536;
        uint64_t *v = realloc(r->samples, cap * sizeof(*v));

        if (!v)
            return -ENOMEM;
        r->samples = v;
        r->cap = cap;
    }
    r->samples[r->nsamples++] = ns;
    return 0;
}

/* A whole echo came back on connection i: check it, record it, resend if saturating. */
static int echoed(struct run *r, int i, const uint8_t *data, size_t len, char *err,
                  size_t errlen)
{
    struct many_conn *mc = &r->m->conns[i];
    uint8_t want[MANY_MSG];
    uint64_t now = ectl_now_ns();

    if (!mc->sent_ns || len != MANY_MSG) {
        snprintf(err, errlen, "connection %d: unexpected %zu B echo", i, len);
        return -EPROTO;
    }
    fill(want, mc->seq, (size_t)i);
    if (memcmp(data, want, MANY_MSG) != 0) {
        snprintf(err, errlen, "connection %d: the echo differs from message %llu", i,
                 (unsigned long long)mc->seq);
        return -EPROTO;
    }
    r->outstanding--;
    r->last_progress = now;
    if (now >= r->measure_from && now < r->measure_to) {
        r->echoes++;
        if (add_sample(r, now - mc->sent_ns) < 0) {
            snprintf(err, errlen, "out of memory for latency samples");
            return -ENOMEM;
        }
    }
    mc->sent_ns = 0;
    if (r->saturate && now < r->measure_to)
        return send_one(r, i, now, err, errlen);
    return 0;
}

/* Everything readable on connection i. */
static int readable(struct run *r, int i, char *err, size_t errlen)
{
    struct many_conn *mc = &r->m->conns[i];

    if (mc->c.ep) {
        for (;;) {
            const void *data;
            long n = cessna_ep_recv(mc->c.ep, &data);

            if (n == -EAGAIN)
                return 0;
            if (n < 0) {
                snprintf(err, errlen, "connection %d: cessna_ep_recv: %s %s", i,
                         n == CESSNA_EP_CLOSED ? "the edge closed the session"
                                               : strerror((int)-n),
                         cessna_ep_error(mc->c.ep));
                return n == CESSNA_EP_CLOSED ? -ECONNRESET : (int)n;
            }
            int rc = echoed(r, i, data, (size_t)n, err, errlen);
            if (rc < 0)
                return rc;
        }
    }
    for (;;) {
        ssize_t n = read(mc->c.fd, mc->buf + mc->have, MANY_MSG - mc->have);

        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n <= 0) {
            int rc = n < 0 ? -errno : -ECONNRESET;
            snprintf(err, errlen, "connection %d: read: %s", i,
                     n < 0 ? strerror(errno) : "closed by the peer");
            return rc;
        }
        mc->have += (size_t)n;
        if (mc->have == MANY_MSG) {
            mc->have = 0;
            int rc = echoed(r, i, mc->buf, MANY_MSG, err, errlen);
            if (rc < 0)
                return rc;
        }
    }
}

static int poll_once(struct run *r, int timeout_ms, char *err, size_t errlen)
{
    struct epoll_event ev[MAX_EVENTS];
    int n = epoll_wait(r->m->epfd, ev, MAX_EVENTS, timeout_ms);

    if (n < 0 && errno != EINTR) {
        int rc = -errno;
        snprintf(err, errlen, "epoll_wait: %s", strerror(errno));
        return rc;
    }
    for (int k = 0; k < n; k++) {
        int rc = readable(r, (int)ev[k].data.u32, err, errlen);
        if (rc < 0)
            return rc;
    }
    if (r->outstanding && ectl_now_ns() - r->last_progress > STALL_NS) {
        snprintf(err, errlen, "no echo for %llu s with %llu messages outstanding",
                 STALL_NS / 1000000000ull, (unsigned long long)r->outstanding);
        return -ETIMEDOUT;
    }
    return 0;
}

/* ---- opening ---- */

struct opener {
    struct many_set *m;
    const char      *entry;
    int              total;
    atomic_int       next;     /* the next index to open */
    atomic_int       stop;     /* a failure: no new opens */
    atomic_int       tried;
    pthread_mutex_t  mu;
    char             err[BENCH_ERRLEN]; /* the first failure */
    uint64_t         t0, last_ok_ns;
};

/* One echo on a fresh connection within timeout_ms (blocking socket or endpoint left
 * nonblocking): the connection is proven. */
static int prove(struct many_conn *mc, int i, int timeout_ms, char *err, size_t errlen)
{
    uint64_t until = ectl_now_ns() + (uint64_t)timeout_ms * 1000000u;
    uint8_t msg[MANY_MSG];
    size_t have = 0;
    int rc;

    fill(msg, ++mc->seq, (size_t)i);
    if (mc->c.ep) {
        cessna_ep_set_nonblocking(mc->c.ep, 1);
        rc = cessna_ep_send(mc->c.ep, msg, sizeof(msg));
        if (rc < 0) {
            snprintf(err, errlen, "connection %d: cessna_ep_send: %s %s", i, strerror(-rc),
                     cessna_ep_error(mc->c.ep));
            return rc;
        }
    } else {
        fcntl(mc->c.fd, F_SETFL, fcntl(mc->c.fd, F_GETFL) | O_NONBLOCK);
        if (write(mc->c.fd, msg, sizeof(msg)) != (ssize_t)sizeof(msg)) {
            rc = errno ? -errno : -EIO;
            snprintf(err, errlen, "connection %d: write: %s", i, strerror(-rc));
            return rc;
        }
    }
    for (;;) {
        if (mc->c.ep) {
            const void *data;
            long n = cessna_ep_recv(mc->c.ep, &data);

            if (n >= 0) {
                if (n != MANY_MSG || memcmp(data, msg, MANY_MSG) != 0) {
                    snprintf(err, errlen, "connection %d: its first echo differs", i);
                    return -EPROTO;
                }
                return 0;
            }
            if (n != -EAGAIN) {
                snprintf(err, errlen, "connection %d: first echo: cessna_ep_recv: %s %s", i,
                         n == CESSNA_EP_CLOSED ? "the edge closed the session"
                                               : strerror((int)-n),
                         cessna_ep_error(mc->c.ep));
                return n == CESSNA_EP_CLOSED ? -ECONNRESET : (int)n;
            }
        } else {
            ssize_t n = read(mc->c.fd, mc->buf + have, MANY_MSG - have);

            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                rc = n == 0 ? -ECONNRESET : -errno;
                snprintf(err, errlen, "connection %d: first echo: read: %s", i,
                         n == 0 ? "closed by the peer" : strerror(errno));
                return rc;
            }
            if (n > 0 && (have += (size_t)n) == MANY_MSG) {
                if (memcmp(mc->buf, msg, MANY_MSG) != 0) {
                    snprintf(err, errlen, "connection %d: its first echo differs", i);
                    return -EPROTO;
                }
                return 0;
            }
        }
        uint64_t now = ectl_now_ns();
        if (now >= until) {
            snprintf(err, errlen, "connection %d: no echo of its first message within %d ms",
                     i, timeout_ms);
            return -ETIMEDOUT;
        }
        struct pollfd pfd = { .fd = mc->c.fd, .events = POLLIN };
        if (poll(&pfd, 1, ms_until(now, until)) == -1 && errno != EINTR) {
            rc = -errno;
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return rc;
        }
    }
}

static void *opener_main(void *arg)
{
    struct opener *op = arg;
    char err[BENCH_ERRLEN];

    while (!atomic_load(&op->stop) && !proc_interrupted()) {
        int i = atomic_fetch_add(&op->next, 1);

        if (i >= op->total)
            break;
        struct many_conn *mc = &op->m->conns[i];
        uint64_t t0 = ectl_now_ns();

        atomic_fetch_add(&op->tried, 1);
        int rc = load_connect(&mc->c, op->entry, op->m->native, err, sizeof(err));
        if (rc == 0 && mc->c.ep)
            cessna_ep_set_heartbeat(mc->c.ep, 0); /* the edge is not lost while we look away */
        if (rc == 0)
            rc = prove(mc, i, FIRST_ECHO_MS, err, sizeof(err));
        uint64_t t1 = ectl_now_ns();
        pthread_mutex_lock(&op->mu);
        if (rc == 0) {
            mc->ok = 1;
            mc->setup_ns = t1 - t0;
            if (t1 > op->last_ok_ns)
                op->last_ok_ns = t1;
        } else if (!atomic_exchange(&op->stop, 1)) {
            snprintf(op->err, sizeof(op->err), "%s", err);
        }
        pthread_mutex_unlock(&op->mu);
    }
    return NULL;
}

/* Keep the proven connections, in front, registered with epoll; close the others. */
static int adopt(struct many_set *m, int total, char *err, size_t errlen)
{
    uint64_t *setup = malloc(((size_t)total + 1) * sizeof(*setup));
    int k = 0;

    for (int i = 0; i < total; i++) {
        struct many_conn *mc = &m->conns[i];

        if (!mc->ok) {
            if (mc->c.ep)
                cessna_ep_free(mc->c.ep);
            else if (mc->c.fd > 0)
                close(mc->c.fd);
            memset(mc, 0, sizeof(*mc));
            continue;
        }
        if (setup)
            setup[k] = mc->setup_ns;
        if (k != i) {
            m->conns[k] = *mc;
            memset(mc, 0, sizeof(*mc));
        }
        k++;
    }
    m->n = m->proven = k;
    if (setup && k)
        load_percentiles(setup, (size_t)k, &m->setup);
    free(setup);
    for (int i = 0; i < k; i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };

        m->conns[i].sent_ns = 0;
        if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, m->conns[i].c.fd, &ev) == -1) {
            int rc = -errno;
            snprintf(err, errlen, "epoll_ctl: %s", strerror(errno));
            return rc;
        }
    }
    return 0;
}

int many_open(struct many_set *m, const char *entry, int native, int n, int inflight,
              char *err, size_t errlen)
{
    static struct opener op; /* one opening at a time */
    pthread_t *th;
    int started = 0, rc = 0;

    memset(m, 0, sizeof(*m));
    memset(&op, 0, sizeof(op));
    m->native = native;
    m->epfd = epoll_create1(EPOLL_CLOEXEC);
    m->conns = calloc((size_t)n, sizeof(*m->conns));
    if (inflight < 1)
        inflight = 1;
    if (inflight > n)
        inflight = n;
    m->inflight = inflight;
    th = calloc((size_t)inflight, sizeof(*th));
    if (m->epfd < 0 || !m->conns || !th) {
        snprintf(err, errlen, "epoll_create1 or memory for %d connections: %s", n,
                 strerror(errno));
        free(th);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++)
        m->conns[i].c.fd = -1;
    op.m = m;
    op.entry = entry;
    op.total = n;
    pthread_mutex_init(&op.mu, NULL);
    op.t0 = ectl_now_ns();
    for (int t = 0; t < inflight; t++) {
        pthread_attr_t a;

        pthread_attr_init(&a);
        pthread_attr_setstacksize(&a, 256u << 10);
        rc = pthread_create(&th[t], &a, opener_main, &op);
        pthread_attr_destroy(&a);
        if (rc != 0) {
            if (!started) {
                snprintf(err, errlen, "pthread_create: %s", strerror(rc));
                free(th);
                return -rc;
            }
            break; /* fewer in flight: still an opening */
        }
        started++;
    }
    m->inflight = started;
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    free(th);
    m->open_s = (double)(ectl_now_ns() - op.t0) / 1e9;
    m->tried = atomic_load(&op.tried);
    rc = adopt(m, n, err, errlen);
    m->proven_s = m->proven ? (double)(op.last_ok_ns - op.t0) / 1e9 : 0;
    pthread_mutex_destroy(&op.mu);
    if (rc < 0)
        return rc;
    if (m->proven < n) {
        snprintf(err, errlen, "%s", op.err[0] ? op.err : "interrupted");
        return -ECONNREFUSED;
    }
    return 0;
}

/* Sends as they come due; returns at end (the outstanding echoes are still to come). */
static int paced_loop(struct run *r, uint64_t t0, uint64_t period, uint64_t end, char *err,
                      size_t errlen)
{
    int n = r->m->n, slot = 0;
    uint64_t round = 0;

    for (;;) {
        uint64_t now = ectl_now_ns();
        uint64_t due = t0 + round * period + (uint64_t)slot * period / (uint64_t)n;

        while (due <= now && due < end) {
            int rc = 0;

            if (r->m->conns[slot].sent_ns)
                r->late++;
            else
                rc = send_one(r, slot, now, err, errlen);
            if (rc < 0)
                return rc;
            if (++slot == n) {
                slot = 0;
                round++;
            }
            due = t0 + round * period + (uint64_t)slot * period / (uint64_t)n;
        }
        if (now >= end)
            return 0;
        int rc = poll_once(r, ms_until(now, due < end ? due : end), err, errlen);
        if (rc < 0)
            return rc;
    }
}

/* The last echoes, not counted, within a few seconds. */
static int drain(struct run *r, char *err, size_t errlen)
{
    uint64_t until = ectl_now_ns() + 5000000000ull;

    while (r->outstanding && ectl_now_ns() < until) {
        int rc = poll_once(r, 50, err, errlen);
        if (rc < 0)
            return rc;
    }
    if (r->outstanding) {
        snprintf(err, errlen, "%llu echoes still missing 5 s after the run",
                 (unsigned long long)r->outstanding);
        return -ETIMEDOUT;
    }
    return 0;
}

static int finish(struct run *r, int rc, struct many_result *res)
{
    double window = (double)(r->measure_to - r->measure_from) / 1e9;

    memset(res, 0, sizeof(*res));
    res->sent = r->sent;
    res->echoes = r->echoes;
    res->late = r->late;
    res->seconds = window;
    res->msgs_per_s = window > 0 ? (double)r->echoes / window : 0;
    if (rc == 0 && r->nsamples)
        load_percentiles(r->samples, r->nsamples, &res->lat);
    free(r->samples);
    return rc;
}

int many_paced(struct many_set *m, double rate_hz, double seconds, struct many_result *res,
               char *err, size_t errlen)
{
    uint64_t period = (uint64_t)(1e9 / rate_hz), t0 = ectl_now_ns();
    struct run r = { .m = m, .last_progress = t0 };
    uint64_t end = t0 + period + (uint64_t)(seconds * 1e9); /* the first round warms up */
    int rc;

    r.measure_from = t0 + period;
    r.measure_to = end;
    rc = paced_loop(&r, t0, period, end, err, errlen);
    if (rc == 0)
        rc = drain(&r, err, errlen);
    return finish(&r, rc, res);
}

int many_saturate(struct many_set *m, double seconds, struct many_result *res, char *err,
                  size_t errlen)
{
    uint64_t t0 = ectl_now_ns(), warm = 500000000ull;
    struct run r = { .m = m, .last_progress = t0, .saturate = 1 };
    int rc = 0;

    r.measure_from = t0 + warm;
    r.measure_to = r.measure_from + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < m->n && rc == 0; i++)
        rc = send_one(&r, i, ectl_now_ns(), err, errlen);
    while (rc == 0) {
        uint64_t now = ectl_now_ns();

        if (now >= r.measure_to)
            break;
        rc = poll_once(&r, ms_until(now, r.measure_to), err, errlen);
    }
    if (rc == 0)
        rc = drain(&r, err, errlen);
    return finish(&r, rc, res);
}
