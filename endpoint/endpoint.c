/* endpoint.c - libcessna-endpoint (include/cessna_endpoint.h).
 *
 * The socket stays blocking; a nonblocking receive uses MSG_DONTWAIT, so sends stay
 * blocking as the API says. The sender and the receiver touch disjoint fields, except
 * the socket's write side, which a mutex keeps to one frame at a time (the receiver
 * writes an ERROR frame when the edge sends a bad one). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "order.h"
#include "wire.h"

#define EP_MAX_MESSAGE   (1u << 20)  /* default max message bytes */
#define EP_RBUF_INIT     (64u << 10)
#define EP_HANDSHAKE_MS  10000

struct cessna_ep {
    int fd;
    int nonblocking;
    uint64_t session_id;
    uint8_t token[WIRE_TOKEN_LEN];
    size_t max_msg;
    size_t max_body;

    /* Sender side. */
    pthread_mutex_t wlock;
    uint64_t next_seq;

    /* Receiver side: frames are parsed in place from rbuf[roff, roff + rlen). */
    uint8_t *rbuf;
    size_t rcap, roff, rlen;
    size_t consumed;        /* length of the frame handed out last; dropped on the next call */
    int state;              /* 0 open, 1 closed by the edge, or a sticky -errno */
    uint64_t last_out;
    uint8_t *order;
    size_t order_len, order_cap;
    uint64_t order_time;    /* time of the last order entry kept */
    char err[WIRE_ERROR_MAX + 128];
};

static void ep_seterr(struct cessna_ep *ep, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void ep_seterr(struct cessna_ep *ep, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(ep->err, sizeof(ep->err), fmt, ap);
    va_end(ap);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct cessna_ep *ep_new(int fd)
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
    ep->max_msg = EP_MAX_MESSAGE;
    ep->max_body = EP_MAX_MESSAGE + WIRE_MAX_OVERHEAD;
    ep->next_seq = 1;
    pthread_mutex_init(&ep->wlock, NULL);
    return ep;
}

/* Write all of iov (blocking). Caller holds wlock. */
static int ep_writev(struct cessna_ep *ep, struct iovec *iov, int iovcnt)
{
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };

    while (mh.msg_iovlen) {
        ssize_t n = sendmsg(ep->fd, &mh, MSG_NOSIGNAL);
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

static int ep_write_frame(struct cessna_ep *ep, const void *frame, size_t len)
{
    struct iovec iov = { .iov_base = (void *)frame, .iov_len = len };
    int rc;

    pthread_mutex_lock(&ep->wlock);
    rc = ep_writev(ep, &iov, 1);
    pthread_mutex_unlock(&ep->wlock);
    return rc;
}

/* The edge misbehaved: tell it why (best effort, never blocking the receiver), record
 * the reason, and shut the connection so a blocked sender wakes up too. */
static int ep_fail(struct cessna_ep *ep, int rc, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int ep_fail(struct cessna_ep *ep, int rc, uint32_t code, const char *fmt, ...)
{
    uint8_t frame[WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX];
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    vsnprintf(ep->err, sizeof(ep->err), fmt, ap);
    va_end(ap);
    n = wire_put_error(frame, sizeof(frame), code, "%s", ep->err);
    if (pthread_mutex_trylock(&ep->wlock) == 0) {
        if (send(ep->fd, frame, n, MSG_DONTWAIT | MSG_NOSIGNAL) == -1)
            (void)0; /* the connection goes away either way */
        pthread_mutex_unlock(&ep->wlock);
    }
    shutdown(ep->fd, SHUT_RDWR);
    ep->state = rc;
    return rc;
}

/* Read more bytes into rbuf. timeout_ms: -1 blocks, 0 polls, > 0 waits that long.
 * 0 when something arrived, -EAGAIN when nothing did in time, -errno on failure, or 1 at
 * end of stream. */
static int ep_fill(struct cessna_ep *ep, int timeout_ms)
{
    int flags = timeout_ms < 0 ? 0 : MSG_DONTWAIT;

    if (timeout_ms > 0) {
        struct pollfd pfd = { .fd = ep->fd, .events = POLLIN };
        int rc = poll(&pfd, 1, timeout_ms);
        if (rc == -1)
            return errno == EINTR ? -EAGAIN : -errno;
        if (rc == 0)
            return -EAGAIN;
    }
    for (;;) {
        ssize_t n = recv(ep->fd, ep->rbuf + ep->roff + ep->rlen,
                         ep->rcap - ep->roff - ep->rlen, flags);
        if (n > 0) {
            ep->rlen += (size_t)n;
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

/* The next whole, decoded frame into *f; it stays in rbuf until the next call. 0, or
 * -errno with the reason in ep->err (an edge that sent garbage is answered with ERROR). */
static int ep_read_frame(struct cessna_ep *ep, struct wire_frame *f, int timeout_ms)
{
    int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
    struct wire_hdr h;
    int rc;

    ep->roff += ep->consumed;
    ep->rlen -= ep->consumed;
    ep->consumed = 0;
    if (ep->rlen == 0)
        ep->roff = 0;
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
            return rc;
        }
        int wait = timeout_ms;
        if (timeout_ms > 0) {
            int64_t left = deadline - now_ms();
            wait = left > 0 ? (int)left : 0;
        }
        rc = ep_fill(ep, wait);
        if (rc == 1) {
            if (ep->rlen)
                return ep_fail(ep, -EPROTO, WIRE_ERR_PROTO,
                               "bad frame: connection closed mid-frame (%zu of %zu bytes)",
                               ep->rlen, need);
            ep_seterr(ep, "edge closed the connection without CLOSE");
            return ep->state = -ECONNRESET;
        }
        if (rc == -EAGAIN && timeout_ms > 0 && now_ms() < deadline)
            continue;
        if (rc == -EAGAIN)
            return -EAGAIN;
        if (rc < 0) {
            ep_seterr(ep, "recv: %s", strerror(-rc));
            return ep->state = rc;
        }
    }
    if (wire_decode(&h, ep->rbuf + ep->roff + WIRE_HDR_LEN, f) < 0)
        return ep_fail(ep, -EPROTO, WIRE_ERR_PROTO, "bad frame: malformed %s body of %u bytes",
                       wire_type_name(h.type), h.len);
    ep->consumed = WIRE_HDR_LEN + h.len;
    return 0;
}

/* Check that an OUT's order bytes decode; keep them unless the OUT is a duplicate. */
static int ep_take_order(struct cessna_ep *ep, const struct wire_frame *f, int dup)
{
    uint64_t t = ep->order_time;
    struct order_entry e;
    size_t off = 0;

    while (off < f->u.out.order_len)
        if (order_decode(f->u.out.order, f->u.out.order_len, &off, &e, &t) < 0)
            return ep_fail(ep, -EPROTO, WIRE_ERR_PROTO,
                           "bad frame: bad event order in OUT %llu at byte %zu",
                           (unsigned long long)f->u.out.out_no, off);
    if (dup || f->u.out.order_len == 0)
        return 0;
    if (ep->order_len + f->u.out.order_len > ep->order_cap) {
        size_t cap = ep->order_cap ? ep->order_cap : 4096;
        while (cap < ep->order_len + f->u.out.order_len)
            cap *= 2;
        uint8_t *p = realloc(ep->order, cap);
        if (!p) {
            ep_seterr(ep, "out of memory for the event order");
            return ep->state = -ENOMEM;
        }
        ep->order = p;
        ep->order_cap = cap;
    }
    memcpy(ep->order + ep->order_len, f->u.out.order, f->u.out.order_len);
    ep->order_len += f->u.out.order_len;
    ep->order_time = t;
    return 0;
}

static long ep_next(struct cessna_ep *ep, const void **data, int timeout_ms)
{
    struct wire_frame f;
    int rc;

    for (;;) {
        if (ep->state == 1)
            return CESSNA_EP_CLOSED;
        if (ep->state < 0)
            return ep->state;
        rc = ep_read_frame(ep, &f, timeout_ms);
        if (rc < 0)
            return rc;
        switch (f.type) {
        case WIRE_OUT: {
            int dup = f.u.out.out_no <= ep->last_out;
            rc = ep_take_order(ep, &f, dup);
            if (rc < 0)
                return rc;
            if (dup)
                continue;
            ep->last_out = f.u.out.out_no;
            *data = f.u.out.payload;
            return (long)f.u.out.len;
        }
        case WIRE_ORDER:
            rc = ep_take_order(ep, &f, 0);
            if (rc < 0)
                return rc;
            continue;
        case WIRE_CLOSE:
            ep->state = 1;
            return CESSNA_EP_CLOSED;
        case WIRE_ERROR:
            ep_seterr(ep, "edge error %u: %.*s", f.u.error.code, (int)f.u.error.text_len,
                      f.u.error.text);
            return ep->state = -ECONNABORTED;
        case WIRE_SNAP_DURABLE:
            continue; /* buffers of sent messages come with remote recovery */
        case WIRE_HEARTBEAT:
            continue; /* the edge is alive and the connection quiet */
        case WIRE_RECEIPT: {
            /* Every frame before it was handled: the edge may ship its snapshot. */
            uint8_t receipt[WIRE_HDR_LEN + 8];
            rc = ep_write_frame(ep, receipt, wire_put_u64(receipt, WIRE_RECEIPT,
                                                          f.u.snap.position));
            if (rc < 0)
                return rc;
            continue;
        }
        case WIRE_MOVE:
            return ep_fail(ep, -ECONNABORTED, WIRE_ERR_UNSUPPORTED, "the edge moved the session "
                           "away; this endpoint cannot resume it (native resume is not "
                           "implemented yet: use cessna-client-proxy)");
        case WIRE_SNAP_PUT:
            return ep_fail(ep, -EPROTO, WIRE_ERR_UNSUPPORTED,
                           "SNAP_PUT not supported by this endpoint");
        default:
            return ep_fail(ep, -EPROTO, WIRE_ERR_UNEXPECTED, "unexpected %s frame in session",
                           wire_type_name(f.type));
        }
    }
}

static void ep_set_nodelay(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* HELLO as a client on a connected socket and wait for WELCOME. 0; -ECONNABORTED when
 * the edge answered ERROR (its text in err); another -errno when it did not answer. */
static int ep_hello(struct cessna_ep *ep, const char *edge)
{
    uint8_t hello[WIRE_HDR_LEN + 32];
    struct wire_frame f;
    int rc;

    rc = ep_write_frame(ep, hello, wire_put_hello(hello, WIRE_ROLE_CLIENT, 0, NULL));
    if (rc < 0) {
        ep_seterr(ep, "send HELLO to %s: %s", edge, strerror(-rc));
        return rc;
    }
    rc = ep_read_frame(ep, &f, EP_HANDSHAKE_MS);
    if (rc == -EAGAIN) {
        ep_seterr(ep, "no answer to HELLO from %s in %d ms", edge, EP_HANDSHAKE_MS);
        return -ETIMEDOUT;
    }
    if (rc < 0)
        return rc;
    if (f.type == WIRE_WELCOME) {
        ep->session_id = f.u.welcome.session_id;
        memcpy(ep->token, f.u.welcome.token, WIRE_TOKEN_LEN);
        return 0;
    }
    if (f.type == WIRE_ERROR) {
        ep_seterr(ep, "edge %s refused the session: error %u: %.*s", edge, f.u.error.code,
                  (int)f.u.error.text_len, f.u.error.text);
        return -ECONNABORTED;
    }
    return ep_fail(ep, -EPROTO, WIRE_ERR_UNEXPECTED, "unexpected %s frame, want WELCOME",
                   wire_type_name(f.type));
}

struct cessna_ep *cessna_ep_connect(const char *edges, char *err, size_t errlen)
{
    char list[1024], why[sizeof(((struct cessna_ep *)0)->err)] = "empty edge list";
    char *save = NULL;

    if (snprintf(list, sizeof(list), "%s", edges ? edges : "") >= (int)sizeof(list)) {
        snprintf(err, errlen, "edge list too long");
        return NULL;
    }
    for (char *edge = strtok_r(list, ",", &save); edge; edge = strtok_r(NULL, ",", &save)) {
        int fd = addr_connect(edge, why, sizeof(why));
        if (fd < 0)
            continue;
        struct cessna_ep *ep = ep_new(fd);
        if (!ep) {
            close(fd);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        int rc = ep_hello(ep, edge);
        if (rc == 0)
            return ep;
        snprintf(why, sizeof(why), "%s", ep->err);
        cessna_ep_free(ep);
        if (rc == -ECONNABORTED)
            break; /* the edge answered: no */
    }
    snprintf(err, errlen, "%s", why);
    return NULL;
}

int cessna_ep_listen(const char *addr, char *err, size_t errlen)
{
    return addr_listen(addr, err, errlen);
}

struct cessna_ep *cessna_ep_accept(int listen_fd, char *err, size_t errlen)
{
    uint8_t frame[WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX];
    struct cessna_ep *ep;
    struct wire_frame f;
    int fd, rc;

    do
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    while (fd == -1 && errno == EINTR);
    if (fd == -1) {
        snprintf(err, errlen, "accept: %s", strerror(errno));
        return NULL;
    }
    ep_set_nodelay(fd);
    ep = ep_new(fd);
    if (!ep) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rc = ep_read_frame(ep, &f, EP_HANDSHAKE_MS);
    if (rc == -EAGAIN)
        ep_seterr(ep, "no HELLO from the edge in %d ms", EP_HANDSHAKE_MS);
    else if (rc == 0 && f.type == WIRE_RESUME)
        rc = ep_fail(ep, -EPROTO, WIRE_ERR_UNSUPPORTED, "RESUME not supported yet");
    else if (rc == 0 && (f.type != WIRE_HELLO || f.u.hello.role != WIRE_ROLE_EDGE))
        rc = ep_fail(ep, -EPROTO, WIRE_ERR_UNEXPECTED, "unexpected %s frame, want HELLO role EDGE",
                     wire_type_name(f.type));
    if (rc < 0)
        goto fail;
    ep->session_id = f.u.hello.session_id;
    memcpy(ep->token, f.u.hello.token, WIRE_TOKEN_LEN);
    rc = ep_write_frame(ep, frame, wire_put_welcome(frame, ep->session_id, NULL, f.u.hello.epoch));
    if (rc < 0) {
        ep_seterr(ep, "send WELCOME: %s", strerror(-rc));
        goto fail;
    }
    return ep;
fail:
    snprintf(err, errlen, "%s", ep->err);
    cessna_ep_free(ep);
    return NULL;
}

int cessna_ep_send(struct cessna_ep *ep, const void *data, size_t len)
{
    uint8_t hdr[WIRE_DATA_HDR_LEN];
    struct iovec iov[2];
    int rc;

    if (len > ep->max_msg)
        return -EMSGSIZE;
    pthread_mutex_lock(&ep->wlock);
    iov[0].iov_base = hdr;
    iov[0].iov_len = wire_put_data_hdr(hdr, ep->next_seq, len);
    iov[1].iov_base = (void *)data;
    iov[1].iov_len = len;
    rc = ep_writev(ep, iov, len ? 2 : 1);
    if (rc == 0)
        ep->next_seq++;
    pthread_mutex_unlock(&ep->wlock);
    return rc;
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
    ep->max_body = bytes + WIRE_MAX_OVERHEAD;
}

int cessna_ep_close(struct cessna_ep *ep, int timeout_ms)
{
    uint8_t frame[WIRE_HDR_LEN];
    int64_t deadline = now_ms() + timeout_ms;
    const void *data;
    int rc = 0;

    if (ep->fd < 0)
        return -EBADF;
    if (ep->state < 0) {
        rc = ep->state;
        goto out;
    }
    rc = ep_write_frame(ep, frame, wire_put_close(frame));
    if (rc < 0) {
        ep_seterr(ep, "send CLOSE: %s", strerror(-rc));
        goto out;
    }
    for (;;) {
        int64_t left = deadline - now_ms();
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
    close(ep->fd);
    ep->fd = -1;
    return rc;
}

void cessna_ep_free(struct cessna_ep *ep)
{
    if (!ep)
        return;
    if (ep->fd >= 0)
        close(ep->fd);
    pthread_mutex_destroy(&ep->wlock);
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

const uint8_t *cessna_ep_order(const struct cessna_ep *ep, size_t *len)
{
    *len = ep->order_len;
    return ep->order;
}
