/* load.c - the latency and throughput drivers, over a plain TCP socket or a native
 * endpoint (libcessna-endpoint).
 *
 * Latency: one message outstanding; send, wait for the whole echo, record the round trip
 * (CLOCK_MONOTONIC); the first 5% are warm-up and not recorded. Every echo is compared with
 * what was sent, outside the timed interval.
 *
 * Throughput: a sender thread streams messages, a receiver thread counts echoed bytes, with
 * at most 256 messages or 4 MiB in flight. After a warm-up, the bytes echoed during
 * `seconds` are counted; messages = whole messages among them.
 *
 * A watchdog shuts the connection down when nothing came back for WATCHDOG_STALL_MS, so a
 * broken path ends the run with an error instead of hanging the bench.
 */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "bench.h"
#include "cessna_endpoint.h"

#define WATCHDOG_STALL_MS 10000
#define WINDOW_MSGS       256
#define WINDOW_BYTES      (4u << 20)
#define RECV_CHUNK        (256u << 10)

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* A condition variable whose timed waits run on CLOCK_MONOTONIC. */
static void cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

/* An absolute CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait. */
static struct timespec deadline_in_ms(long ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* ---- connections ---- */

int load_connect(struct bench_conn *c, const char *entry, int native, char *err, size_t errlen)
{
    int one = 1;

    c->ep = NULL;
    c->fd = -1;
    if (!native) {
        int fd = addr_connect(entry, err, errlen);

        if (fd < 0)
            return fd;
        c->fd = fd;
        return 0;
    }
    c->ep = cessna_ep_connect(entry, err, errlen);
    if (!c->ep)
        return -ECONNREFUSED;
    c->fd = cessna_ep_fd(c->ep);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return 0;
}

void load_close(struct bench_conn *c)
{
    if (c->ep) {
        cessna_ep_close(c->ep, 2000);
        cessna_ep_free(c->ep);
    } else if (c->fd >= 0) {
        close(c->fd);
    }
    c->ep = NULL;
    c->fd = -1;
}

static int conn_send(struct bench_conn *c, const uint8_t *buf, size_t len, char *err,
                     size_t errlen)
{
    if (c->ep) {
        int rc = cessna_ep_send(c->ep, buf, len);

        if (rc < 0)
            snprintf(err, errlen, "cessna_ep_send: %s %s", strerror(-rc), cessna_ep_error(c->ep));
        return rc;
    }
    while (len > 0) {
        ssize_t n = write(c->fd, buf, len);

        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1) {
            int rc = -errno;
            snprintf(err, errlen, "write: %s", strerror(errno));
            return rc;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* What came back next: bytes read into buf (plain), or one message left in the endpoint's
 * buffer (*data points at it). > 0, or -errno with err set. */
static long conn_recv(struct bench_conn *c, uint8_t *buf, size_t cap, const uint8_t **data,
                      char *err, size_t errlen)
{
    if (c->ep) {
        const void *d;
        long n = cessna_ep_recv(c->ep, &d);

        if (n == CESSNA_EP_CLOSED) {
            snprintf(err, errlen, "cessna_ep_recv: the edge closed the session");
            return -ECONNRESET;
        }
        if (n < 0) {
            snprintf(err, errlen, "cessna_ep_recv: %s %s", strerror((int)-n),
                     cessna_ep_error(c->ep));
            return n;
        }
        *data = d;
        return n;
    }
    for (;;) {
        ssize_t n = read(c->fd, buf, cap);

        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1) {
            long rc = -errno;
            snprintf(err, errlen, "read: %s", strerror(errno));
            return rc;
        }
        if (n == 0) {
            snprintf(err, errlen, "read: connection closed by the peer");
            return -ECONNRESET;
        }
        *data = buf;
        return n;
    }
}

/* ---- watchdog ---- */

struct watchdog {
    pthread_t       th;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             stop;
    int             fd;
    atomic_ullong   progress;
    atomic_int      fired;
};

static void *watchdog_main(void *arg)
{
    struct watchdog *w = arg;
    unsigned long long seen = atomic_load(&w->progress);
    uint64_t last = now_ns();

    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct timespec ts = deadline_in_ms(200);

        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        unsigned long long p = atomic_load(&w->progress);
        if (p != seen) {
            seen = p;
            last = now_ns();
        } else if (now_ns() - last > (uint64_t)WATCHDOG_STALL_MS * 1000000u) {
            atomic_store(&w->fired, 1);
            shutdown(w->fd, SHUT_RDWR); /* blocked reads and writes return */
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static int watchdog_start(struct watchdog *w, int fd)
{
    int rc;

    memset(w, 0, sizeof(*w));
    w->fd = fd;
    pthread_mutex_init(&w->mu, NULL);
    cond_init_monotonic(&w->cv);
    rc = pthread_create(&w->th, NULL, watchdog_main, w);
    if (rc != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
    }
    return -rc;
}

static void watchdog_stop(struct watchdog *w)
{
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->th, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

/* Make the error name the stall when the watchdog caused it. */
static void watchdog_explain(struct watchdog *w, char *err, size_t errlen)
{
    char was[BENCH_ERRLEN];

    if (!atomic_load(&w->fired))
        return;
    snprintf(was, sizeof(was), "%s", err);
    snprintf(err, errlen, "no echo for %d ms, gave up (%s)", WATCHDOG_STALL_MS, was);
}

/* ---- latency ---- */

static void fill_message(uint8_t *msg, size_t size)
{
    for (size_t i = 0; i < size; i++)
        msg[i] = (uint8_t)(i * 131 + 7);
}

/* Round i's number at both ends of the message, so a stale or misplaced echo shows. */
static void stamp_message(uint8_t *msg, size_t size, uint64_t i)
{
    size_t n = size < sizeof(i) ? size : sizeof(i);

    memcpy(msg, &i, n);
    memcpy(msg + size - n, &i, n);
}

/* Receive one whole echo of size bytes. *echo points at it: into the endpoint's buffer when
 * it came as one message (no copy), else into buf. */
static int recv_echo(struct bench_conn *c, uint8_t *buf, size_t size, const uint8_t **echo,
                     char *err, size_t errlen)
{
    size_t got = 0;

    while (got < size) {
        const uint8_t *data;
        long n = conn_recv(c, buf + got, size - got, &data, err, errlen);

        if (n < 0)
            return (int)n;
        if ((size_t)n > size - got) {
            snprintf(err, errlen, "the echo is longer than the %zu B message sent", size);
            return -EPROTO;
        }
        if (c->ep && got == 0 && (size_t)n == size) {
            *echo = data;
            return 0;
        }
        if (data != buf + got)
            memcpy(buf + got, data, (size_t)n);
        got += (size_t)n;
    }
    *echo = buf;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples, in microseconds. */
static double percentile_us(const uint64_t *sorted, size_t n, double p)
{
    size_t rank = (size_t)ceil(p * (double)n);

    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)sorted[rank - 1] / 1000.0;
}

static int latency_rounds(struct bench_conn *c, size_t size, size_t warm, size_t count,
                          uint64_t *samples, struct watchdog *w, char *err, size_t errlen)
{
    uint8_t *msg = malloc(size), *buf = malloc(size);
    int rc = -ENOMEM;

    if (!msg || !buf) {
        snprintf(err, errlen, "out of memory for %zu B messages", size);
        goto out;
    }
    fill_message(msg, size);
    for (size_t i = 0; i < warm + count; i++) {
        const uint8_t *echo = NULL;

        stamp_message(msg, size, i);
        uint64_t t0 = now_ns();
        rc = conn_send(c, msg, size, err, errlen);
        if (rc == 0)
            rc = recv_echo(c, buf, size, &echo, err, errlen);
        uint64_t t1 = now_ns();
        if (rc < 0)
            goto out;
        atomic_fetch_add(&w->progress, 1);
        if (memcmp(echo, msg, size) != 0) {
            snprintf(err, errlen, "round trip %zu: the echo differs from the message sent", i);
            rc = -EPROTO;
            goto out;
        }
        if (i >= warm)
            samples[i - warm] = t1 - t0;
    }
    rc = 0;
out:
    free(msg);
    free(buf);
    return rc;
}

/* count round trips after warm unrecorded ones, each into samples (ns), under a watchdog. */
int load_latency_samples(struct bench_conn *c, size_t size, size_t warm, size_t count,
                         uint64_t *samples, char *err, size_t errlen)
{
    struct watchdog w;
    int rc = watchdog_start(&w, c->fd);

    if (rc < 0) {
        snprintf(err, errlen, "pthread_create (watchdog): %s", strerror(-rc));
        return rc;
    }
    rc = latency_rounds(c, size, warm, count, samples, &w, err, errlen);
    watchdog_stop(&w);
    if (rc < 0)
        watchdog_explain(&w, err, errlen);
    return rc;
}

void load_percentiles(uint64_t *samples, size_t count, struct lat_result *r)
{
    qsort(samples, count, sizeof(*samples), cmp_u64);
    r->samples = count;
    r->p50_us = percentile_us(samples, count, 0.50);
    r->p99_us = percentile_us(samples, count, 0.99);
    r->p999_us = percentile_us(samples, count, 0.999);
}

int load_latency(struct bench_conn *c, size_t size, size_t count, struct lat_result *r,
                 char *err, size_t errlen)
{
    size_t warm = count / 20 ? count / 20 : 1;
    uint64_t *samples = calloc(count ? count : 1, sizeof(*samples));
    int rc;

    if (!samples) {
        snprintf(err, errlen, "out of memory for %zu samples", count);
        return -ENOMEM;
    }
    rc = load_latency_samples(c, size, warm, count, samples, err, errlen);
    if (rc == 0)
        load_percentiles(samples, count, r);
    free(samples);
    return rc;
}

/* ---- throughput ---- */

struct tput_run {
    struct bench_conn *c;
    size_t             size;
    uint64_t           window;      /* bytes in flight at most */
    atomic_ullong      sent;        /* bytes handed to the connection */
    atomic_ullong      recvd;       /* bytes echoed */
    atomic_ullong      final_total; /* bytes the receiver waits for, once done is set */
    atomic_int         stop;        /* measuring is over: send one last message */
    atomic_int         done;        /* the last message is on its way */
    atomic_int         failed;
    atomic_int         waiting;     /* the sender sleeps on cv for window room */
    pthread_mutex_t    mu;
    pthread_cond_t     cv;
    int                rc;
    char               err[BENCH_ERRLEN];
    struct watchdog   *w;
};

/* The first failure wins; the connection is shut so the other thread returns too. */
static void tput_fail(struct tput_run *t, int rc, const char *err)
{
    pthread_mutex_lock(&t->mu);
    if (!atomic_load(&t->failed)) {
        t->rc = rc;
        snprintf(t->err, sizeof(t->err), "%s", err);
        atomic_store(&t->failed, 1);
        shutdown(t->c->fd, SHUT_RDWR);
    }
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void tput_wake_sender(struct tput_run *t)
{
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static int window_full(struct tput_run *t)
{
    unsigned long long sent = atomic_load(&t->sent), recvd = atomic_load(&t->recvd);

    return sent > recvd && sent - recvd + t->size > t->window;
}

/* Wait for room in the window, or for stop / failure. The waiting flag and the counters
 * are sequentially consistent, so the receiver sees the flag or the sender sees the room. */
static void wait_window(struct tput_run *t)
{
    if (!window_full(t))
        return;
    pthread_mutex_lock(&t->mu);
    atomic_store(&t->waiting, 1);
    while (window_full(t) && !atomic_load(&t->stop) && !atomic_load(&t->failed)) {
        struct timespec ts = deadline_in_ms(10);

        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    atomic_store(&t->waiting, 0);
    pthread_mutex_unlock(&t->mu);
}

static void *tput_sender(void *arg)
{
    struct tput_run *t = arg;
    char err[BENCH_ERRLEN];
    uint8_t *msg = malloc(t->size);

    if (!msg) {
        tput_fail(t, -ENOMEM, "out of memory for the sender's message");
        return NULL;
    }
    fill_message(msg, t->size);
    for (int last = 0; !last;) {
        wait_window(t);
        if (atomic_load(&t->failed))
            break;
        if (atomic_load(&t->stop)) {
            /* Announce the total before sending, so the receiver stops after its echo. */
            last = 1;
            atomic_store(&t->final_total, atomic_load(&t->sent) + t->size);
            atomic_store(&t->done, 1);
        }
        int rc = conn_send(t->c, msg, t->size, err, sizeof(err));
        if (rc < 0) {
            tput_fail(t, rc, err);
            break;
        }
        atomic_fetch_add(&t->sent, t->size);
    }
    free(msg);
    return NULL;
}

static void *tput_receiver(void *arg)
{
    struct tput_run *t = arg;
    char err[BENCH_ERRLEN];
    uint8_t *buf = malloc(RECV_CHUNK);

    if (!buf) {
        tput_fail(t, -ENOMEM, "out of memory for the receive buffer");
        return NULL;
    }
    for (;;) {
        const uint8_t *data;
        long n = conn_recv(t->c, buf, RECV_CHUNK, &data, err, sizeof(err));

        if (n < 0) {
            tput_fail(t, (int)n, err);
            break;
        }
        unsigned long long total = atomic_fetch_add(&t->recvd, (unsigned long long)n) + (unsigned long long)n;
        atomic_fetch_add(&t->w->progress, 1);
        if (atomic_load(&t->waiting))
            tput_wake_sender(t);
        if (atomic_load(&t->done) && total >= atomic_load(&t->final_total))
            break;
    }
    free(buf);
    return NULL;
}

/* Sleep ns, in steps, unless the run fails meanwhile. */
static void tput_sleep(struct tput_run *t, uint64_t ns)
{
    uint64_t end = now_ns() + ns;

    while (!atomic_load(&t->failed)) {
        uint64_t now = now_ns();

        if (now >= end)
            return;
        sleep_ns(end - now < 50000000u ? end - now : 50000000u);
    }
}

/* Warm up, then count what is echoed during `seconds`; then stop and drain. */
static void tput_measure(struct tput_run *t, double seconds, struct tput_result *r)
{
    uint64_t warm = (uint64_t)(fmin(0.5, seconds / 10.0) * 1e9);
    uint64_t b0, b1, t0, t1;

    tput_sleep(t, warm);
    b0 = atomic_load(&t->recvd);
    t0 = now_ns();
    tput_sleep(t, (uint64_t)(seconds * 1e9));
    b1 = atomic_load(&t->recvd);
    t1 = now_ns();
    atomic_store(&t->stop, 1);
    tput_wake_sender(t);

    r->elapsed = (double)(t1 - t0) / 1e9;
    r->msgs = b1 / t->size - b0 / t->size;
    r->msgs_per_s = (double)r->msgs / r->elapsed;
    r->mb_per_s = (double)(b1 - b0) / r->elapsed / 1e6;
}

int load_throughput(struct bench_conn *c, size_t size, double seconds, struct tput_result *r,
                    char *err, size_t errlen)
{
    struct tput_run *t = calloc(1, sizeof(*t));
    pthread_t snd, rcv;
    struct watchdog w;
    int rc;

    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    t->c = c;
    t->size = size;
    t->window = (uint64_t)size * WINDOW_MSGS < WINDOW_BYTES ? (uint64_t)size * WINDOW_MSGS
                                                            : WINDOW_BYTES;
    if (t->window < size)
        t->window = size;
    t->w = &w;
    pthread_mutex_init(&t->mu, NULL);
    cond_init_monotonic(&t->cv);

    rc = watchdog_start(&w, c->fd);
    if (rc < 0) {
        snprintf(err, errlen, "pthread_create (watchdog): %s", strerror(-rc));
        goto out;
    }
    rc = -pthread_create(&rcv, NULL, tput_receiver, t);
    if (rc < 0) {
        snprintf(err, errlen, "pthread_create (receiver): %s", strerror(-rc));
        goto out_watchdog;
    }
    rc = -pthread_create(&snd, NULL, tput_sender, t);
    if (rc < 0) {
        snprintf(err, errlen, "pthread_create (sender): %s", strerror(-rc));
        tput_fail(t, rc, err);
        pthread_join(rcv, NULL);
        goto out_watchdog;
    }
    tput_measure(t, seconds, r);
    pthread_join(snd, NULL);
    pthread_join(rcv, NULL);
    rc = 0;
    if (atomic_load(&t->failed)) {
        rc = t->rc < 0 ? t->rc : -EIO;
        snprintf(err, errlen, "%s", t->err);
    }
out_watchdog:
    watchdog_stop(&w);
    if (rc < 0)
        watchdog_explain(&w, err, errlen);
out:
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
    return rc;
}
