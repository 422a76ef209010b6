/* endpoint.c - libcessna-endpoint (include/cessna_endpoint.h): sessions, and the client's
 * transparent resume at another edge (docs/protocol.md, "Losing the edge: RESUME").
 *
 * The socket stays blocking; a nonblocking receive uses MSG_DONTWAIT, so sends stay
 * blocking as the API says. Locking is described in ep_priv.h. What a new edge needs is
 * kept in a struct keep (keep.h): every DATA sent until SNAP_DURABLE covers it, the order
 * from OUT/ORDER frames, the epoch; last_out is ep->last_out.
 *
 * A lost edge (EOF or reset without CLOSE, MOVE, or no bytes for heartbeat_ms) is resumed
 * by whichever thread notices it first, inside cessna_ep_recv or cessna_ep_send: it shuts
 * the old socket (waking the other thread), takes the write lock, and tries the next edges
 * of the list with backoff, sending RESUME, ORDER, the kept DATA and RESUME_END exactly as
 * cessna-client-proxy does, until one answers WELCOME with a higher epoch. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "ep_priv.h"
#include "order.h"

#define EP_MAX_MESSAGE        (1u << 20)  /* default max message bytes */
#define EP_RBUF_INIT          (64u << 10)
#define EP_HEARTBEAT_MS       3000
#define EP_RESUME_TIMEOUT_MS  60000
#define EP_BACKOFF_MIN_MS     50
#define EP_BACKOFF_MAX_MS     1000
#define EP_EDGE_RETRY_MS      10000
#define EP_EDGES_MAX          64          /* a bit mask of the edges tried */
#define EP_FAILED_MAX         64          /* edges remembered as failed, per process */
#define EP_LOST               2           /* ep_read_frame: the connection is gone */

void ep_seterr(struct cessna_ep *ep, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(ep->err, sizeof(ep->err), fmt, ap);
    va_end(ap);
}

int64_t ep_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ep_buf_put(struct ep_buf *b, const void *data, size_t len)
{
    if (b->rc < 0)
        return;
    if (b->cap - b->len < len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < len)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->rc = -ENOMEM;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

struct cessna_ep *ep_new(int fd, enum ep_role role)
{
    struct cessna_ep *ep = calloc(1, sizeof(*ep));

    if (!ep)
        return NULL;
    ep->rbuf = malloc(EP_RBUF_INIT);
    if (!ep->rbuf) {
        free(ep);
        return NULL;
    }
    ep->rcap = EP_RBUF_INIT;
    ep->fd = fd;
    ep->stale_fd = -1;
    ep->role = role;
    ep->max_msg = EP_MAX_MESSAGE;
    ep->max_body = wire_max_body(EP_MAX_MESSAGE);
    ep->next_seq = 1;
    ep->heartbeat_ms = EP_HEARTBEAT_MS;
    ep->handshake_ms = EP_HANDSHAKE_MS;
    ep->edge_retry_ms = EP_EDGE_RETRY_MS;
    ep->resume_timeout_ms = EP_RESUME_TIMEOUT_MS;
    ep->last_rx = ep_now_ms();
    keep_init(&ep->keep, KEEP_MAX_DEFAULT);
    pthread_mutex_init(&ep->resume_mu, NULL);
    pthread_mutex_init(&ep->wlock, NULL);
    pthread_mutex_init(&ep->lock, NULL);
    pthread_cond_init(&ep->cond, NULL);
    return ep;
}

/* ---- socket helpers ---- */

/* Write all of iov (blocking). Caller holds wlock. */
static int ep_writev(int fd, struct iovec *iov, int iovcnt)
{
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };

    while (mh.msg_iovlen) {
        ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        while (mh.msg_iovlen && (size_t)n >= mh.msg_iov->iov_len) {
            n -= (ssize_t)mh.msg_iov->iov_len;
            mh.msg_iov++;
            mh.msg_iovlen--;
        }
        if (mh.msg_iovlen) {
            mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + n;
            mh.msg_iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* One frame on the current connection, if it is still connection gen (a frame answering
 * something the old edge sent must not reach the new one). 0, or -errno. */
static int ep_write_frame_gen(struct cessna_ep *ep, const void *frame, size_t len, uint64_t gen)
{
    struct iovec iov = { .iov_base = (void *)frame, .iov_len = len };
    int rc = 0, fd;

    pthread_mutex_lock(&ep->wlock);
    pthread_mutex_lock(&ep->lock);
    fd = ep->fd;
    if (ep->gen != gen)
        fd = -1;
    pthread_mutex_unlock(&ep->lock);
    if (fd >= 0)
        rc = ep_writev(fd, &iov, 1);
    pthread_mutex_unlock(&ep->wlock);
    return rc;
}

static int ep_write_frame(struct cessna_ep *ep, const void *frame, size_t len)
{
    return ep_write_frame_gen(ep, frame, len, ep->gen);
}

int ep_write_all(int fd, const void *buf, size_t len, int64_t deadline)
{
    const uint8_t *p = buf;

    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n == -1 && errno != EAGAIN && errno != EINTR)
            return -errno;
        int64_t left = deadline - ep_now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        poll(&pfd, 1, (int)left);
    }
    return 0;
}

/* Exactly len bytes from fd before deadline. 0, -ETIMEDOUT, -ECONNRESET or -errno. */
static int ep_read_exact(int fd, uint8_t *buf, size_t len, int64_t deadline)
{
    while (len) {
        int64_t left = deadline - ep_now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int rc = poll(&pfd, 1, (int)left);
        if (rc <= 0)
            continue;
        ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

long ep_read_hs_frame(int fd, uint8_t *buf, size_t cap, struct wire_frame *f, int64_t deadline)
{
    struct wire_hdr h;
    int rc = ep_read_exact(fd, buf, WIRE_HDR_LEN, deadline);

    if (rc < 0)
        return rc;
    rc = wire_parse_hdr(buf, WIRE_HDR_LEN, cap - WIRE_HDR_LEN, &h);
    if (rc < 0)
        return rc;
    rc = ep_read_exact(fd, buf + WIRE_HDR_LEN, h.len, deadline);
    if (rc < 0)
        return rc;
    if (wire_decode(&h, buf + WIRE_HDR_LEN, f) < 0)
        return -EPROTO;
    return WIRE_HDR_LEN + h.len;
}

void ep_refuse(int fd, uint32_t code, const char *text)
{
    uint8_t frame[WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX];
    size_t n = wire_put_error(frame, sizeof(frame), code, "%s", text);

    if (send(fd, frame, n, MSG_DONTWAIT | MSG_NOSIGNAL) == -1)
        (void)0; /* the connection goes away either way */
}

/* The edge misbehaved: tell it why (best effort, never blocking the receiver), record
 * the reason, and shut the connection so a blocked sender wakes up too. */
static int ep_fail(struct cessna_ep *ep, int rc, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int ep_fail(struct cessna_ep *ep, int rc, uint32_t code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(ep->err, sizeof(ep->err), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&ep->lock);
    int fd = ep->fd;
    ep->state = rc;
    pthread_cond_broadcast(&ep->cond);
    pthread_mutex_unlock(&ep->lock);
    if (pthread_mutex_trylock(&ep->wlock) == 0) {
        ep_refuse(fd, code, ep->err);
        pthread_mutex_unlock(&ep->wlock);
    }
    shutdown(fd, SHUT_RDWR);
    return rc;
}

/* A final state for both threads. */
static int ep_end(struct cessna_ep *ep, int rc)
{
    pthread_mutex_lock(&ep->lock);
    if (ep->state == 0)
        ep->state = rc;
    pthread_cond_broadcast(&ep->cond);
    pthread_mutex_unlock(&ep->lock);
    return rc;
}

/* ---- receiving ---- */

/* Read more bytes into rbuf. timeout_ms: -1 blocks, 0 polls, > 0 waits that long.
 * 0 when something arrived, -EAGAIN when nothing did in time, -errno on failure, or 1 at
 * end of stream. */
static int ep_fill(struct cessna_ep *ep, int fd, int timeout_ms)
{
    int flags = timeout_ms < 0 ? 0 : MSG_DONTWAIT;

    if (timeout_ms > 0) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int rc = poll(&pfd, 1, timeout_ms);
        if (rc == -1)
            return errno == EINTR ? -EAGAIN : -errno;
        if (rc == 0)
            return -EAGAIN;
    }
    for (;;) {
        ssize_t n = recv(fd, ep->rbuf + ep->roff + ep->rlen, ep->rcap - ep->roff - ep->rlen,
                         flags);
        if (n > 0) {
            ep->rlen += (size_t)n;
            ep->last_rx = ep_now_ms();
            return 0;
        }
        if (n == 0)
            return 1;
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK)
            return -EAGAIN;
        return -errno;
    }
}

/* Make room in rbuf for a frame of need bytes starting at roff. */
static int ep_room(struct cessna_ep *ep, size_t need)
{
    if (ep->roff && (ep->rcap - ep->roff < need || ep->rcap - ep->roff - ep->rlen < 4096)) {
        memmove(ep->rbuf, ep->rbuf + ep->roff, ep->rlen);
        ep->roff = 0;
    }
    if (need > ep->rcap) {
        size_t cap = ep->rcap;
        while (cap < need)
            cap *= 2;
        if (cap > WIRE_HDR_LEN + ep->max_body)
            cap = WIRE_HDR_LEN + ep->max_body;
        uint8_t *p = realloc(ep->rbuf, cap);
        if (!p)
            return -ENOMEM;
        ep->rbuf = p;
        ep->rcap = cap;
    }
    return 0;
}

/* The receiver's view of the connection: after a new one, what was buffered from the old
 * one is dropped (a new edge sends again every OUT above last_out). The fd to read. */
static int ep_sync(struct cessna_ep *ep, uint64_t *gen)
{
    int fd;

    pthread_mutex_lock(&ep->lock);
    if (ep->rgen != ep->gen) {
        ep->rgen = ep->gen;
        ep->roff = ep->rlen = ep->consumed = 0;
        if (ep->stale_fd >= 0) {
            close(ep->stale_fd);
            ep->stale_fd = -1;
        }
    }
    fd = ep->fd;
    *gen = ep->gen;
    pthread_mutex_unlock(&ep->lock);
    return fd;
}

/* The connection is gone. A resumable endpoint resumes (EP_LOST); any other ends. */
static int ep_lost(struct cessna_ep *ep, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int ep_lost(struct cessna_ep *ep, int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(ep->err, sizeof(ep->err), fmt, ap);
    va_end(ap);
    if (ep->resumable)
        return EP_LOST;
    return ep_end(ep, rc);
}

/* The next whole, decoded frame into *f; it stays in rbuf until the next call. 0; EP_LOST
 * when a resumable endpoint lost its edge (from connection *gen); or -errno with the reason
 * in ep->err (an edge that sent garbage is answered with ERROR). */
static int ep_read_frame(struct cessna_ep *ep, struct wire_frame *f, int timeout_ms,
                         uint64_t *gen)
{
    int64_t deadline = timeout_ms > 0 ? ep_now_ms() + timeout_ms : 0;
    bool heartbeat = ep->resumable && ep->role == EP_CLIENT && ep->heartbeat_ms > 0;
    struct wire_hdr h;
    int fd, rc;

    ep->roff += ep->consumed;
    ep->rlen -= ep->consumed;
    ep->consumed = 0;
    if (ep->rlen == 0)
        ep->roff = 0;
    fd = ep_sync(ep, gen);
    for (;;) {
        size_t need = WIRE_HDR_LEN;
        rc = wire_parse_hdr(ep->rbuf + ep->roff, ep->rlen, ep->max_body, &h);
        if (rc == -EPROTO)
            return ep_fail(ep, -EPROTO, WIRE_ERR_PROTO,
                           "bad frame: bad magic, version or type in header");
        if (rc == -EMSGSIZE)
            return ep_fail(ep, -EMSGSIZE, WIRE_ERR_TOO_BIG,
                           "frame of %zu bytes exceeds limit %zu",
                           WIRE_HDR_LEN + (size_t)h.len, WIRE_HDR_LEN + ep->max_body);
        if (rc == 0) {
            need += h.len;
            if (ep->rlen >= need)
                break;
        }
        rc = ep_room(ep, need);
        if (rc < 0) {
            ep_seterr(ep, "out of memory for a frame of %zu bytes", need);
            return ep_end(ep, rc);
        }
        int wait = timeout_ms;
        int64_t now = ep_now_ms();
        if (timeout_ms > 0)
            wait = deadline > now ? (int)(deadline - now) : 0;
        if (heartbeat) {
            int64_t left = ep->last_rx + ep->heartbeat_ms - now;
            /* A program that did not read for a while: what waits in the socket first. */
            if (left <= 0 && (rc = ep_fill(ep, fd, 0)) != -EAGAIN) {
                if (rc == 0)
                    continue;
                if (rc == 1)
                    return ep_lost(ep, -ECONNRESET, "edge closed the connection without CLOSE");
                return ep_lost(ep, rc, "recv: %s", strerror(-rc));
            }
            if (left <= 0)
                return ep_lost(ep, -ETIMEDOUT, "no frame from the edge for %d ms (heartbeat)",
                               ep->heartbeat_ms);
            if (wait < 0 || wait > left)
                wait = (int)left;
        }
        rc = ep_fill(ep, fd, wait);
        if (rc == 1) {
            if (ep->rlen && !ep->resumable)
                return ep_fail(ep, -EPROTO, WIRE_ERR_PROTO,
                               "bad frame: connection closed mid-frame (%zu of %zu bytes)",
                               ep->rlen, need);
            return ep_lost(ep, -ECONNRESET, "edge closed the connection without CLOSE");
        }
        if (rc == -EAGAIN) {
            if (heartbeat && ep_now_ms() >= ep->last_rx + ep->heartbeat_ms)
                continue;   /* the top of the loop says lost */
            if (timeout_ms > 0 && ep_now_ms() < deadline)
                continue;
            if (timeout_ms < 0)
                continue;   /* a heartbeat slice ended: block again */
            return -EAGAIN;
        }
        if (rc < 0)
            return ep_lost(ep, rc, "recv: %s", strerror(-rc));
    }
    if (wire_decode(&h, ep->rbuf + ep->roff + WIRE_HDR_LEN, f) < 0)
        return ep_fail(ep, -EPROTO, WIRE_ERR_PROTO, "bad frame: malformed %s body of %u bytes",
                       wire_type_name(h.type), h.len);
    ep->consumed = WIRE_HDR_LEN + h.len;
    return 0;
}

/* Check that an OUT's order bytes decode; keep them unless the OUT is a duplicate.
 * Called with ep->lock held. */
static int ep_take_order(struct cessna_ep *ep, const struct wire_frame *f, int dup)
{
    uint64_t t = ep->order_time;
    struct order_entry e;
    size_t off = 0;

    while (off < f->u.out.order_len)
        if (order_decode(f->u.out.order, f->u.out.order_len, &off, &e, &t) < 0)
            return -EPROTO;
    if (dup || f->u.out.order_len == 0)
        return 0;
    if (ep->resumable && keep_put_order(&ep->keep, f->u.out.order, f->u.out.order_len) < 0)
        return -ENOMEM;
    if (ep->order_len + f->u.out.order_len > ep->order_cap) {
        size_t cap = ep->order_cap ? ep->order_cap : 4096;
        while (cap < ep->order_len + f->u.out.order_len)
            cap *= 2;
        uint8_t *p = realloc(ep->order, cap);
        if (!p)
            return -ENOMEM;
        ep->order = p;
        ep->order_cap = cap;
    }
    memcpy(ep->order + ep->order_len, f->u.out.order, f->u.out.order_len);
    ep->order_len += f->u.out.order_len;
    ep->order_time = t;
    return 0;
}

static int ep_resume(struct cessna_ep *ep, uint64_t seen);

/* The edge of connection gen is gone: resume (client) or wait for the accept thread to
 * attach a resumed edge (server). 0 to carry on, or the session's final -errno. */
static int ep_recover(struct cessna_ep *ep, uint64_t gen)
{
    if (ep->role == EP_CLIENT)
        return ep_resume(ep, gen);
    int64_t deadline = ep_now_ms() + ep->resume_timeout_ms;
    int rc = 0;

    pthread_mutex_lock(&ep->lock);
    while (ep->gen == gen && ep->state == 0) {
        int64_t left = deadline - ep_now_ms();
        if (left <= 0) {
            ep_seterr(ep, "edge lost and no RESUME within %d ms", ep->resume_timeout_ms);
            ep->state = -ECONNRESET;
            pthread_cond_broadcast(&ep->cond);
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (left > 200 ? 200 : left) * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&ep->cond, &ep->lock, &ts);
    }
    if (ep->state < 0)
        rc = ep->state;
    pthread_mutex_unlock(&ep->lock);
    return rc;
}

/* Handle one frame under ep->lock, unless it came from a connection being replaced.
 * 1: a message for the program; 0: handled; 2: dropped (stale); -errno: fail. */
static int ep_apply(struct cessna_ep *ep, const struct wire_frame *f, uint64_t gen,
                    uint8_t *reply, size_t *reply_len)
{
    int rc = 0;

    pthread_mutex_lock(&ep->lock);
    if (ep->resuming || ep->gen != gen) {
        pthread_mutex_unlock(&ep->lock);
        return 2;
    }
    switch (f->type) {
    case WIRE_OUT: {
        int dup = f->u.out.out_no <= ep->last_out;
        rc = ep_take_order(ep, f, dup);
        if (rc == 0 && !dup) {
            ep->last_out = f->u.out.out_no;
            rc = 1;
        }
        break;
    }
    case WIRE_ORDER:
        rc = ep_take_order(ep, f, 0);
        break;
    case WIRE_SNAP_DURABLE:
        keep_durable(&ep->keep, f->u.durable.position, f->u.durable.seq[ep->role]);
        pthread_cond_broadcast(&ep->cond);   /* room for a blocked sender */
        break;
    case WIRE_SNAP_PUT: {
        int ack = 0;
        rc = ep_server_snap_put(ep, f, &ack);
        if (rc == 0 && ack)
            *reply_len = wire_put_u64(reply, WIRE_SNAP_ACK, f->u.snap_put.position);
        break;
    }
    }
    pthread_mutex_unlock(&ep->lock);
    return rc;
}

static long ep_next(struct cessna_ep *ep, const void **data, int timeout_ms)
{
    struct wire_frame f;
    uint64_t gen;
    int rc;

    for (;;) {
        pthread_mutex_lock(&ep->lock);
        int state = ep->state;
        pthread_mutex_unlock(&ep->lock);
        if (state == 1)
            return CESSNA_EP_CLOSED;
        if (state < 0)
            return state;
        rc = ep_read_frame(ep, &f, timeout_ms, &gen);
        if (rc == EP_LOST) {
            if ((rc = ep_recover(ep, gen)) < 0)
                return rc;
            continue;
        }
        if (rc < 0)
            return rc;
        switch (f.type) {
        case WIRE_OUT:
        case WIRE_ORDER:
        case WIRE_SNAP_DURABLE:
        case WIRE_SNAP_PUT: {
            uint8_t reply[WIRE_HDR_LEN + 8];
            size_t reply_len = 0;
            if (f.type == WIRE_SNAP_PUT && !ep->store)
                return ep_fail(ep, -EPROTO, WIRE_ERR_UNEXPECTED,
                               "unexpected SNAP_PUT frame: this endpoint does not store");
            rc = ep_apply(ep, &f, gen, reply, &reply_len);
            if (rc == -EPROTO && f.type != WIRE_SNAP_PUT)
                return ep_fail(ep, -EPROTO, WIRE_ERR_PROTO,
                               "bad frame: bad event order in %s %llu", wire_type_name(f.type),
                               (unsigned long long)(f.type == WIRE_OUT ? f.u.out.out_no : 0));
            if (rc == -ENOMEM)
                return ep_fail(ep, -ENOMEM, WIRE_ERR_SESSION,
                               "out of memory for the event order or a snapshot");
            if (rc < 0) {
                char why[sizeof(ep->err)];   /* ep_server_snap_put's reason */
                snprintf(why, sizeof(why), "%s", ep->err);
                return ep_fail(ep, rc, rc == -EPROTO ? WIRE_ERR_PROTO : WIRE_ERR_SESSION,
                               "%s", why);
            }
            if (reply_len && (rc = ep_write_frame_gen(ep, reply, reply_len, gen)) < 0)
                continue;   /* the connection failed: the next read says so */
            if (rc == 1) {
                *data = f.u.out.payload;
                return (long)f.u.out.len;
            }
            continue;
        }
        case WIRE_CLOSE:
            pthread_mutex_lock(&ep->lock);
            ep->state = 1;
            pthread_cond_broadcast(&ep->cond);
            pthread_mutex_unlock(&ep->lock);
            if (ep->srv)
                ep_server_ended(ep);
            return CESSNA_EP_CLOSED;
        case WIRE_ERROR:
            ep_seterr(ep, "edge error %u: %.*s", f.u.error.code, (int)f.u.error.text_len,
                      f.u.error.text);
            return ep_end(ep, -ECONNABORTED);
        case WIRE_HEARTBEAT:
            continue; /* the edge is alive and the connection quiet */
        case WIRE_RECEIPT: {
            /* Every frame before it was handled: the edge may ship its snapshot. */
            uint8_t receipt[WIRE_HDR_LEN + 8];
            if (ep->role != EP_CLIENT)
                return ep_fail(ep, -EPROTO, WIRE_ERR_UNEXPECTED, "unexpected RECEIPT frame");
            ep_write_frame_gen(ep, receipt, wire_put_u64(receipt, WIRE_RECEIPT,
                                                         f.u.snap.position), gen);
            continue;
        }
        case WIRE_MOVE:
            if (ep->role != EP_CLIENT || !ep->resumable)
                return ep_fail(ep, -ECONNABORTED, WIRE_ERR_UNEXPECTED,
                               "unexpected MOVE frame in session");
            ep_seterr(ep, "MOVE: the edge is leaving");
            if ((rc = ep_recover(ep, gen)) < 0)
                return rc;
            continue;
        default:
            return ep_fail(ep, -EPROTO, WIRE_ERR_UNEXPECTED, "unexpected %s frame in session",
                           wire_type_name(f.type));
        }
    }
}

/* ---- the client's resume ---- */

static int put_order_frame(void *arg, const uint8_t *frame, size_t len)
{
    ep_buf_put(arg, frame, len);
    return ((struct ep_buf *)arg)->rc;
}

/* RESUME, the kept order and messages, RESUME_END (and CLOSE if it was sent) into b.
 * Called with ep->lock held. */
static void ep_resume_material(struct cessna_ep *ep, struct ep_buf *b)
{
    uint8_t frame[WIRE_RESUME_MAX];
    const uint8_t *data;
    size_t len, cursor = 0;

    size_t n = wire_put_resume(frame, ep->session_id, ep->token, ep->keep.epoch, ep->last_out,
                               ep->next_seq, ep->keep.order_base, NULL, 0);
    if (ep->nedges > 1)
        wire_set_flags(frame, WIRE_F_ROAMS);   /* a drain may move it rather than close it */
    ep_buf_put(b, frame, n);
    keep_order_frames(&ep->keep, put_order_frame, b);
    while (keep_next_data(&ep->keep, &cursor, &data, &len))
        ep_buf_put(b, data, len);
    ep_buf_put(b, frame, wire_put_empty(frame, WIRE_RESUME_END));
    if (ep->close_sent)
        ep_buf_put(b, frame, wire_put_close(frame));
}

/* One attempt on a connected fd. 0 with *epoch; -ECONNABORTED: ERROR AUTH (for good);
 * another -errno: try the next edge. The reason is in ep->err. */
static int ep_resume_at(struct cessna_ep *ep, int fd, const char *edge, int64_t deadline,
                        uint64_t *epoch)
{
    uint8_t buf[EP_HS_FRAME_MAX];
    struct ep_buf b = { 0 };
    struct wire_frame f;
    long n;
    int rc;

    pthread_mutex_lock(&ep->lock);
    ep_resume_material(ep, &b);
    uint64_t our_epoch = ep->keep.epoch;
    pthread_mutex_unlock(&ep->lock);
    rc = b.rc < 0 ? b.rc : ep_write_all(fd, b.p, b.len, deadline);
    free(b.p);
    if (rc < 0) {
        ep_seterr(ep, "send RESUME to %s: %s", edge, strerror(-rc));
        return rc;
    }
    n = ep_read_hs_frame(fd, buf, sizeof(buf), &f, deadline);
    if (n < 0) {
        ep_seterr(ep, "no answer to RESUME from %s: %s", edge, strerror((int)-n));
        return (int)n;
    }
    if (f.type == WIRE_ERROR) {
        ep_seterr(ep, "edge %s refused the resume: error %u: %.*s", edge, f.u.error.code,
                  (int)f.u.error.text_len, f.u.error.text);
        return f.u.error.code == WIRE_ERR_AUTH ? -ECONNABORTED : -EAGAIN;
    }
    if (f.type != WIRE_WELCOME || f.u.welcome.session_id != ep->session_id ||
        f.u.welcome.epoch <= our_epoch) {
        ep_seterr(ep, "edge %s answered RESUME with %s (epoch %llu, ours %llu): want WELCOME "
                  "of this session with a higher epoch", edge, wire_type_name(f.type),
                  (unsigned long long)(f.type == WIRE_WELCOME ? f.u.welcome.epoch : 0),
                  (unsigned long long)our_epoch);
        ep_refuse(fd, WIRE_ERR_UNEXPECTED, "want WELCOME of this session with a higher epoch");
        return -EPROTO;
    }
    *epoch = f.u.welcome.epoch;
    return 0;
}

/* ---- edges that failed recently: one table for every client endpoint of the process ---- */

static pthread_mutex_t failed_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char name[256];
    int64_t at;                 /* when it last failed; 0: a free entry */
} failed[EP_FAILED_MAX];

/* Edge name failed to take a session (bad) or answered WELCOME (!bad). */
static void edge_mark(const char *name, bool bad)
{
    int slot = -1, oldest = 0;

    pthread_mutex_lock(&failed_mu);
    for (int i = 0; i < EP_FAILED_MAX; i++) {
        if (failed[i].at && strcmp(failed[i].name, name) == 0) {
            slot = i;
            break;
        }
        if (failed[i].at < failed[oldest].at)
            oldest = i;
    }
    if (bad) {
        if (slot < 0) {
            slot = oldest;   /* a free entry, or the one that failed longest ago */
            snprintf(failed[slot].name, sizeof(failed[slot].name), "%s", name);
        }
        failed[slot].at = ep_now_ms() ? ep_now_ms() : 1;
    } else if (slot >= 0) {
        failed[slot].at = 0;
    }
    pthread_mutex_unlock(&failed_mu);
}

static bool edge_failed_recently(const char *name, int retry_ms, int64_t now)
{
    bool recent = false;

    if (retry_ms <= 0)
        return false;
    pthread_mutex_lock(&failed_mu);
    for (int i = 0; i < EP_FAILED_MAX && !recent; i++)
        recent = failed[i].at && now - failed[i].at < retry_ms &&
                 strcmp(failed[i].name, name) == 0;
    pthread_mutex_unlock(&failed_mu);
    return recent;
}

/* The next edge to try, going round the list from `from`: the first not in tried that has
 * not failed recently, else the first not in tried; -1 when every edge is in tried. */
static int ep_pick_edge(const struct cessna_ep *ep, uint64_t tried, int from)
{
    int64_t now = ep_now_ms();
    int fallback = -1;

    for (int k = 0; k < ep->nedges; k++) {
        int i = (from + k) % ep->nedges;
        if (tried & (1ull << i))
            continue;
        if (!edge_failed_recently(ep->edges[i], ep->edge_retry_ms, now))
            return i;
        if (fallback < 0)
            fallback = i;
    }
    return fallback;
}

static void ep_sleep_ms(int64_t ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

    while (ms > 0 && nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Try the edges after the lost one (those that did not fail recently first), with backoff
 * after each full pass, until one takes the session or the resume timeout passes. The new
 * fd with *epoch, or -errno. */
static int ep_resume_loop(struct cessna_ep *ep, uint64_t *epoch)
{
    int64_t deadline = ep_now_ms() + ep->resume_timeout_ms, backoff = EP_BACKOFF_MIN_MS;
    char why[sizeof(ep->err)];
    int lost = ep->cur;
    uint64_t tried = 0;

    snprintf(why, sizeof(why), "%s", ep->err);
    edge_mark(ep->edges[lost], true);   /* other sessions of the process avoid it for now */
    for (;;) {
        int i = ep_pick_edge(ep, tried, lost + 1);
        if (i < 0) {   /* a full pass: wait, then go round again */
            int64_t left = deadline - ep_now_ms();
            ep_sleep_ms(backoff < left ? backoff : left);
            if ((backoff *= 2) > EP_BACKOFF_MAX_MS)
                backoff = EP_BACKOFF_MAX_MS;
            tried = 0;
            continue;
        }
        int64_t left = deadline - ep_now_ms();
        if (left <= 0) {
            char last[sizeof(ep->err)];
            snprintf(last, sizeof(last), "%s", ep->err);
            ep_seterr(ep, "resume timed out after %d ms (edge lost: %.200s; last attempt: "
                      "%.300s)", ep->resume_timeout_ms, why, last);
            return -ETIMEDOUT;
        }
        tried |= 1ull << i;
        int fd = addr_connect_within(ep->edges[i],
                                     (int)(ep->handshake_ms < left ? ep->handshake_ms : left),
                                     ep->err, sizeof(ep->err));
        if (fd < 0) {
            edge_mark(ep->edges[i], true);
            continue;
        }
        int64_t until = ep_now_ms() + ep->handshake_ms;
        int rc = ep_resume_at(ep, fd, ep->edges[i], until < deadline ? until : deadline, epoch);
        if (rc == 0) {
            edge_mark(ep->edges[i], false);
            ep->cur = i;
            return fd;
        }
        close(fd);
        if (rc == -ECONNABORTED)
            return rc;
        edge_mark(ep->edges[i], true);
    }
}

/* The client lost the edge of connection seen: resume, unless another thread already did.
 * 0 to carry on, or the session's final -errno (ERROR AUTH: -ECONNABORTED; the resume
 * timeout: -ETIMEDOUT) with the reason in ep->err. */
static int ep_resume(struct cessna_ep *ep, uint64_t seen)
{
    uint64_t epoch = 0;
    int rc, old;

    pthread_mutex_lock(&ep->resume_mu);
    pthread_mutex_lock(&ep->lock);
    if (ep->gen != seen || ep->state != 0) {
        rc = ep->state < 0 ? ep->state : 0;
        pthread_mutex_unlock(&ep->lock);
        pthread_mutex_unlock(&ep->resume_mu);
        return rc;
    }
    ep->resuming = true;
    old = ep->fd;
    pthread_mutex_unlock(&ep->lock);
    shutdown(old, SHUT_RDWR);           /* wakes a thread blocked on the old edge */
    pthread_mutex_lock(&ep->wlock);
    rc = ep_resume_loop(ep, &epoch);
    pthread_mutex_lock(&ep->lock);
    if (rc >= 0) {
        if (ep->stale_fd >= 0)
            close(ep->stale_fd);
        ep->stale_fd = old;
        ep->fd = rc;
        ep->gen++;
        ep->keep.epoch = epoch;
        ep->last_rx = ep_now_ms();
        rc = 0;
    } else if (ep->state == 0) {
        ep->state = rc;
    }
    ep->resuming = false;
    pthread_cond_broadcast(&ep->cond);
    pthread_mutex_unlock(&ep->lock);
    pthread_mutex_unlock(&ep->wlock);
    pthread_mutex_unlock(&ep->resume_mu);
    return rc;
}

/* ---- opening a session ---- */

static void ep_set_nodelay(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* HELLO as a client on a connected socket and wait for WELCOME. 0; -ECONNABORTED when
 * the edge answered ERROR (its text in err); another -errno when it did not answer. */
static int ep_hello(struct cessna_ep *ep, int fd, const char *edge)
{
    uint8_t buf[EP_HS_FRAME_MAX];
    struct wire_frame f;
    int64_t deadline = ep_now_ms() + ep->handshake_ms;
    long n;
    int rc;

    size_t len = wire_put_hello(buf, WIRE_ROLE_CLIENT, 0, NULL);
    if (ep->nedges > 1)
        wire_set_flags(buf, WIRE_F_ROAMS);   /* a drain may move it rather than close it */
    rc = ep_write_all(fd, buf, len, deadline);
    if (rc < 0) {
        ep_seterr(ep, "send HELLO to %s: %s", edge, strerror(-rc));
        return rc;
    }
    n = ep_read_hs_frame(fd, buf, sizeof(buf), &f, deadline);
    if (n == -ETIMEDOUT) {
        ep_seterr(ep, "no answer to HELLO from %s in %d ms", edge, ep->handshake_ms);
        return -ETIMEDOUT;
    }
    if (n == -ECONNRESET) {
        ep_seterr(ep, "edge %s closed the connection without WELCOME", edge);
        return -ECONNRESET;
    }
    if (n < 0) {
        ep_seterr(ep, "bad answer to HELLO from %s: %s", edge, strerror((int)-n));
        ep_refuse(fd, n == -EMSGSIZE ? WIRE_ERR_TOO_BIG : WIRE_ERR_PROTO,
                  "bad frame instead of WELCOME");
        return (int)n;
    }
    if (f.type == WIRE_WELCOME) {
        ep->session_id = f.u.welcome.session_id;
        memcpy(ep->token, f.u.welcome.token, WIRE_TOKEN_LEN);
        ep->keep.epoch = f.u.welcome.epoch;
        return 0;
    }
    if (f.type == WIRE_ERROR) {
        ep_seterr(ep, "edge %s refused the session: error %u: %.*s", edge, f.u.error.code,
                  (int)f.u.error.text_len, f.u.error.text);
        return -ECONNABORTED;
    }
    ep_seterr(ep, "unexpected %s frame from %s, want WELCOME", wire_type_name(f.type), edge);
    ep_refuse(fd, WIRE_ERR_UNEXPECTED, ep->err);
    return -EPROTO;
}

/* Split the comma-separated list into ep->edges. 0, or -errno with a reason in err. */
static int ep_set_edges(struct cessna_ep *ep, const char *edges, char *err, size_t errlen)
{
    char *list = strdup(edges ? edges : ""), *save = NULL;

    if (!list) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (char *e = strtok_r(list, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        char **p = realloc(ep->edges, (size_t)(ep->nedges + 1) * sizeof(*p));
        if (!p || !(p[ep->nedges] = strdup(e))) {
            ep->edges = p ? p : ep->edges;
            free(list);
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        ep->edges = p;
        ep->nedges++;
    }
    free(list);
    if (ep->nedges == 0) {
        snprintf(err, errlen, "empty edge list");
        return -EINVAL;
    }
    if (ep->nedges > EP_EDGES_MAX) {
        snprintf(err, errlen, "more than %d edges in the list", EP_EDGES_MAX);
        return -EINVAL;
    }
    return 0;
}

struct cessna_ep *cessna_ep_connect(const char *edges, char *err, size_t errlen)
{
    return cessna_ep_connect_opts(edges, NULL, err, errlen);
}

struct cessna_ep *cessna_ep_connect_opts(const char *edges, const struct cessna_ep_options *o,
                                         char *err, size_t errlen)
{
    struct cessna_ep *ep = ep_new(-1, EP_CLIENT);
    char why[sizeof(((struct cessna_ep *)0)->err)];
    uint64_t tried = 0;
    int i;

    if (!ep) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (ep_set_edges(ep, edges, err, errlen) < 0) {
        cessna_ep_free(ep);
        return NULL;
    }
    if (o && o->handshake_timeout_ms > 0)
        ep->handshake_ms = o->handshake_timeout_ms;
    if (o && o->heartbeat_ms)
        ep->heartbeat_ms = o->heartbeat_ms > 0 ? o->heartbeat_ms : 0;
    if (o && o->resume_timeout_ms > 0)
        ep->resume_timeout_ms = o->resume_timeout_ms;
    if (o && o->edge_retry_ms)
        ep->edge_retry_ms = o->edge_retry_ms > 0 ? o->edge_retry_ms : 0;
    snprintf(why, sizeof(why), "empty edge list");
    while ((i = ep_pick_edge(ep, tried, 0)) >= 0) {
        tried |= 1ull << i;
        int fd = addr_connect_within(ep->edges[i], ep->handshake_ms, why, sizeof(why));
        if (fd < 0) {
            edge_mark(ep->edges[i], true);
            continue;
        }
        int rc = ep_hello(ep, fd, ep->edges[i]);
        if (rc == 0) {
            edge_mark(ep->edges[i], false);
            ep->fd = fd;
            ep->cur = i;
            ep->resumable = true;
            ep->last_rx = ep_now_ms();
            return ep;
        }
        close(fd);
        snprintf(why, sizeof(why), "%s", ep->err);
        if (rc == -ECONNABORTED)
            break; /* the edge answered: no */
        edge_mark(ep->edges[i], true);
    }
    snprintf(err, errlen, "%s", why);
    cessna_ep_free(ep);
    return NULL;
}

int cessna_ep_listen(const char *addr, char *err, size_t errlen)
{
    return addr_listen(addr, err, errlen);
}

struct cessna_ep *cessna_ep_accept(int listen_fd, char *err, size_t errlen)
{
    uint8_t frame[EP_HS_FRAME_MAX + WIRE_SECRET_MAX];
    struct cessna_ep *ep;
    struct wire_frame f;
    int fd;
    long n;

    do
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    while (fd == -1 && errno == EINTR);
    if (fd == -1) {
        snprintf(err, errlen, "accept: %s", strerror(errno));
        return NULL;
    }
    ep_set_nodelay(fd);
    n = ep_read_hs_frame(fd, frame, sizeof(frame), &f, ep_now_ms() + EP_HANDSHAKE_MS);
    if (n == -ETIMEDOUT)
        snprintf(err, errlen, "no HELLO from the edge in %d ms", EP_HANDSHAKE_MS);
    else if (n == -ECONNRESET)
        snprintf(err, errlen, "edge closed the connection before HELLO");
    else if (n == -EPROTO || n == -EMSGSIZE) {
        snprintf(err, errlen, "bad frame: want HELLO (%s)", strerror((int)-n));
        ep_refuse(fd, n == -EMSGSIZE ? WIRE_ERR_TOO_BIG : WIRE_ERR_PROTO, err);
    } else if (n < 0)
        snprintf(err, errlen, "recv: %s", strerror((int)-n));
    else if (f.type == WIRE_RESUME) {
        snprintf(err, errlen, "RESUME needs a server that holds sessions: "
                 "cessna_ep_server_accept");
        ep_refuse(fd, WIRE_ERR_UNSUPPORTED, err);
        n = -EPROTO;
    } else if (f.type != WIRE_HELLO || f.u.hello.role != WIRE_ROLE_EDGE) {
        snprintf(err, errlen, "unexpected %s frame, want HELLO role EDGE",
                 wire_type_name(f.type));
        ep_refuse(fd, WIRE_ERR_UNEXPECTED, err);
        n = -EPROTO;
    }
    if (n < 0 || !(ep = ep_new(fd, EP_SERVER))) {
        if (n >= 0)
            snprintf(err, errlen, "out of memory");
        close(fd);
        return NULL;
    }
    ep->session_id = f.u.hello.session_id;
    memcpy(ep->token, f.u.hello.token, WIRE_TOKEN_LEN);
    ep->keep.epoch = f.u.hello.epoch;
    int rc = ep_write_frame(ep, frame, wire_put_welcome(frame, ep->session_id, NULL,
                                                       f.u.hello.epoch));
    if (rc < 0) {
        snprintf(err, errlen, "send WELCOME: %s", strerror(-rc));
        cessna_ep_free(ep);
        return NULL;
    }
    return ep;
}

/* ---- sending ---- */

/* Wait until keep has room (SNAP_DURABLE frees it). 0, -EAGAIN (nonblocking), or the
 * session's final -errno. Called and returns with ep->lock held. */
static int ep_wait_room(struct cessna_ep *ep)
{
    while (ep->state == 0 && keep_full(&ep->keep)) {
        if (ep->nonblocking)
            return -EAGAIN;
        pthread_cond_wait(&ep->cond, &ep->lock);
    }
    if (ep->state == 1)
        return -EPIPE;
    return ep->state;
}

int cessna_ep_send(struct cessna_ep *ep, const void *data, size_t len)
{
    uint8_t hdr[WIRE_DATA_HDR_LEN];
    struct iovec iov[2];
    uint64_t gen;
    int rc, fd;

    if (len > ep->max_msg)
        return -EMSGSIZE;
    if (ep->resumable && ep->scratch_cap < WIRE_DATA_HDR_LEN + len) {
        uint8_t *p = realloc(ep->scratch, WIRE_DATA_HDR_LEN + len);
        if (!p)
            return -ENOMEM;
        ep->scratch = p;
        ep->scratch_cap = WIRE_DATA_HDR_LEN + len;
    }
    pthread_mutex_lock(&ep->lock);
    rc = ep->resumable ? ep_wait_room(ep) : 0;
    pthread_mutex_unlock(&ep->lock);
    if (rc < 0)
        return rc;

    pthread_mutex_lock(&ep->wlock);
    pthread_mutex_lock(&ep->lock);
    iov[0].iov_base = hdr;
    iov[0].iov_len = wire_put_data_hdr(hdr, ep->next_seq, len);
    iov[1].iov_base = (void *)data;
    iov[1].iov_len = len;
    if (ep->resumable) {
        /* Kept before it is written: if the write fails, the resume sends it. */
        memcpy(ep->scratch, hdr, WIRE_DATA_HDR_LEN);
        if (len)
            memcpy(ep->scratch + WIRE_DATA_HDR_LEN, data, len);
        rc = keep_put_data(&ep->keep, ep->scratch, WIRE_DATA_HDR_LEN + len);
        if (rc < 0) {
            pthread_mutex_unlock(&ep->lock);
            pthread_mutex_unlock(&ep->wlock);
            return rc;
        }
    }
    ep->next_seq++;
    fd = ep->fd;
    gen = ep->gen;
    bool skip = ep->resuming;   /* the resume in progress sends it */
    pthread_mutex_unlock(&ep->lock);
    rc = skip ? -EPIPE : ep_writev(fd, iov, len ? 2 : 1);
    pthread_mutex_unlock(&ep->wlock);
    if (rc == 0 || !ep->resumable)
        return rc;
    return ep_recover(ep, gen);
}

long cessna_ep_recv(struct cessna_ep *ep, const void **data)
{
    return ep_next(ep, data, ep->nonblocking ? 0 : -1);
}

void cessna_ep_set_nonblocking(struct cessna_ep *ep, int on)
{
    ep->nonblocking = on;
}

void cessna_ep_set_max_message(struct cessna_ep *ep, size_t bytes)
{
    ep->max_msg = bytes;
    ep->max_body = wire_max_body(bytes);
}

void cessna_ep_set_keep_max(struct cessna_ep *ep, size_t bytes)
{
    pthread_mutex_lock(&ep->lock);
    ep->keep.max_bytes = bytes ? bytes : KEEP_MAX_DEFAULT;
    pthread_cond_broadcast(&ep->cond);
    pthread_mutex_unlock(&ep->lock);
}

void cessna_ep_set_heartbeat(struct cessna_ep *ep, int ms)
{
    ep->heartbeat_ms = ms;
}

void cessna_ep_set_resume_timeout(struct cessna_ep *ep, int ms)
{
    ep->resume_timeout_ms = ms > 0 ? ms : EP_RESUME_TIMEOUT_MS;
}

int cessna_ep_close(struct cessna_ep *ep, int timeout_ms)
{
    uint8_t frame[WIRE_HDR_LEN];
    int64_t deadline = ep_now_ms() + timeout_ms;
    const void *data;
    int rc = 0;

    if (ep->fd < 0)
        return -EBADF;
    if (ep->state < 0) {
        rc = ep->state;
        goto out;
    }
    pthread_mutex_lock(&ep->lock);
    ep->close_sent = true;   /* a resume from here on sends CLOSE too */
    uint64_t gen = ep->gen;
    pthread_mutex_unlock(&ep->lock);
    rc = ep_write_frame_gen(ep, frame, wire_put_close(frame), gen);
    if (rc < 0 && !ep->resumable) {
        ep_seterr(ep, "send CLOSE: %s", strerror(-rc));
        goto out;
    }
    rc = 0;
    for (;;) {
        int64_t left = deadline - ep_now_ms();
        long n = ep_next(ep, &data, left > 0 ? (int)left : 0);
        if (n == CESSNA_EP_CLOSED)
            break;
        if (n == -EAGAIN && left <= 0) {
            ep_seterr(ep, "no CLOSE from the edge in %d ms", timeout_ms);
            rc = -ETIMEDOUT;
            break;
        }
        if (n < 0 && n != -EAGAIN) {
            rc = (int)n;
            break;
        }
    }
out:
    pthread_mutex_lock(&ep->lock);
    close(ep->fd);
    ep->fd = -1;
    pthread_mutex_unlock(&ep->lock);
    return rc;
}

void cessna_ep_free(struct cessna_ep *ep)
{
    if (!ep)
        return;
    if (ep->srv)
        ep_server_forget(ep);
    if (ep->fd >= 0)
        close(ep->fd);
    if (ep->stale_fd >= 0)
        close(ep->stale_fd);
    pthread_mutex_destroy(&ep->resume_mu);
    pthread_mutex_destroy(&ep->wlock);
    pthread_mutex_destroy(&ep->lock);
    pthread_cond_destroy(&ep->cond);
    for (int i = 0; i < ep->nedges; i++)
        free(ep->edges[i]);
    free(ep->edges);
    keep_free(&ep->keep);
    free(ep->scratch);
    free(ep->rbuf);
    free(ep->order);
    free(ep);
}

int cessna_ep_fd(const struct cessna_ep *ep)
{
    return ep->fd;
}

uint64_t cessna_ep_session_id(const struct cessna_ep *ep)
{
    return ep->session_id;
}

const char *cessna_ep_error(const struct cessna_ep *ep)
{
    return ep->err;
}

uint64_t cessna_ep_last_out(const struct cessna_ep *ep)
{
    return ep->last_out;
}

uint64_t cessna_ep_epoch(const struct cessna_ep *ep)
{
    return ep->keep.epoch;
}

const uint8_t *cessna_ep_order(const struct cessna_ep *ep, size_t *len)
{
    *len = ep->order_len;
    return ep->order;
}
