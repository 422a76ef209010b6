/* relay.c - see relay.h. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "addr.h"
#include "log.h"
#include "order.h"
#include "relay.h"

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int buf_init(struct buf *b, size_t cap)
{
    b->p = malloc(cap);
    b->cap = cap;
    b->off = b->len = 0;
    return b->p ? 0 : -ENOMEM;
}

static void buf_shift(struct buf *b)
{
    if (b->len)
        memmove(b->p, b->p + b->off, b->len);
    b->off = 0;
}

/* Room for at least need bytes after the pending ones (the caller sized cap for it). */
static void buf_compact(struct buf *b, size_t need)
{
    if (b->len == 0 || b->cap - b->off - b->len < need)
        buf_shift(b);
}

void buf_put(struct buf *b, const void *data, size_t len)
{
    buf_compact(b, len);
    memcpy(b->p + b->off + b->len, data, len);
    b->len += len;
}

/* Write what b holds without blocking. 0 (maybe with bytes left), or -errno. */
static int buf_flush(struct buf *b, int fd)
{
    while (b->len) {
        ssize_t n = send(fd, b->p + b->off, b->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -errno;
        }
        b->off += (size_t)n;
        b->len -= (size_t)n;
    }
    b->off = 0;
    return 0;
}

int relay_init(struct relay *r, int efd, int pfd, size_t max_msg)
{
    memset(r, 0, sizeof(*r));
    r->efd = efd;
    r->pfd = pfd;
    r->max_msg = max_msg;
    r->max_body = max_msg + WIRE_MAX_OVERHEAD;
    r->close_wait_ms = -1;
    if (buf_init(&r->in, RELAY_IN_MIN) < 0 ||
        buf_init(&r->to_edge, RELAY_LIMIT + WIRE_DATA_HDR_LEN + max_msg + RELAY_CTL_ROOM) < 0 ||
        buf_init(&r->to_plain, RELAY_LIMIT + r->max_body) < 0)
        return -ENOMEM;
    return 0;
}

static void relay_send_close(struct relay *r)
{
    uint8_t frame[WIRE_HDR_LEN];

    if (r->close_sent || r->edge_dead)
        return;
    buf_put(&r->to_edge, frame, wire_put_close(frame));
    r->close_sent = true;
}

/* The edge sent something wrong: answer ERROR and end the session. */

void relay_fail(struct relay *r, uint32_t code, const char *fmt, ...)
{
    uint8_t frame[WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX];
    char text[WIRE_ERROR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    LOG(LOG_WARN, "session=%llu msg=\"%s\"", (unsigned long long)r->session_id, text);
    if (!r->edge_dead)
        buf_put(&r->to_edge, frame, wire_put_error(frame, sizeof(frame), code, "%s", text));
    r->done = true;
}

static void relay_edge_gone(struct relay *r, const char *why)
{
    LOG(LOG_WARN, "session=%llu msg=\"edge connection lost\" why=\"%s\"",
        (unsigned long long)r->session_id, why);
    r->edge_dead = true;
    r->to_edge.len = 0;
    r->done = true;
}

static void relay_plain_gone(struct relay *r)
{
    r->plain_eof = r->plain_dead = true;
    r->to_plain.len = 0;
    relay_send_close(r);
    if (r->deadline == 0)
        r->deadline = now_ms() + (r->close_wait_ms >= 0 ? r->close_wait_ms : CLOSE_WAIT_MS);
}

/* Check the order bytes of an OUT or ORDER frame. 0 with the last entry's time in *t. */
static int relay_check_order(struct relay *r, const struct wire_frame *f, uint64_t *t)
{
    struct order_entry e;
    size_t off = 0;

    *t = r->order_time;
    while (off < f->u.out.order_len) {
        if (order_decode(f->u.out.order, f->u.out.order_len, &off, &e, t) < 0) {
            relay_fail(r, WIRE_ERR_PROTO, "bad frame: bad event order in %s at byte %zu",
                       wire_type_name(f->type), off);
            return -EPROTO;
        }
    }
    return 0;
}

/* Check an OUT's order bytes and queue its payload unless it is a duplicate. */
static void relay_out(struct relay *r, const struct wire_frame *f)
{
    uint64_t t;

    if (relay_check_order(r, f, &t) < 0)
        return;
    if (f->type == WIRE_ORDER) {
        r->order_time = t;
        return;
    }
    if (f->u.out.out_no <= r->last_out)
        return;
    r->last_out = f->u.out.out_no;
    r->order_time = t;
    if (!r->plain_dead)
        buf_put(&r->to_plain, f->u.out.payload, f->u.out.len);
}

/* Handle the frames buffered from the edge while the plain side has room for them. */
static void relay_frames(struct relay *r)
{
    while (!r->done && r->to_plain.len < RELAY_LIMIT) {
        const uint8_t *p = r->in.p + r->in.off;
        struct wire_hdr h;
        struct wire_frame f;
        int rc = wire_parse_hdr(p, r->in.len, r->max_body, &h);

        if (rc == -EAGAIN || (rc == 0 && r->in.len < WIRE_HDR_LEN + h.len))
            break;
        if (rc == -EPROTO) {
            relay_fail(r, WIRE_ERR_PROTO, "bad frame: bad magic, version or type in header");
            return;
        }
        if (rc == -EMSGSIZE) {
            relay_fail(r, WIRE_ERR_TOO_BIG, "frame of %zu bytes exceeds limit %zu",
                       WIRE_HDR_LEN + (size_t)h.len, WIRE_HDR_LEN + r->max_body);
            return;
        }
        if (wire_decode(&h, p + WIRE_HDR_LEN, &f) < 0) {
            relay_fail(r, WIRE_ERR_PROTO, "bad frame: malformed %s body of %u bytes",
                       wire_type_name(h.type), h.len);
            return;
        }
        r->in.off += WIRE_HDR_LEN + h.len;
        r->in.len -= WIRE_HDR_LEN + h.len;
        switch (f.type) {
        case WIRE_OUT:
        case WIRE_ORDER:
            relay_out(r, &f);
            break;
        case WIRE_CLOSE:
            LOG(LOG_DEBUG, "session=%llu msg=\"edge closed the session\"",
                (unsigned long long)r->session_id);
            relay_send_close(r);
            r->done = true;
            break;
        case WIRE_ERROR:
            LOG(LOG_WARN, "session=%llu msg=\"edge error\" code=%u text=\"%.*s\"",
                (unsigned long long)r->session_id, f.u.error.code,
                (int)f.u.error.text_len, f.u.error.text);
            r->to_edge.len = 0; /* the edge closes after ERROR */
            r->edge_dead = true;
            r->done = true;
            break;
        case WIRE_SNAP_DURABLE:
            break; /* buffers of sent messages come with remote recovery */
        default:
            relay_fail(r, WIRE_ERR_UNEXPECTED, "unexpected %s frame in session",
                       wire_type_name(f.type));
            break;
        }
    }
    if (r->in.len == 0)
        r->in.off = 0;
}

/* One read from the edge, into the input buffer grown to fit the frame being read. */
static void relay_edge_read(struct relay *r)
{
    struct buf *b = &r->in;
    struct wire_hdr h;
    size_t need = RELAY_IN_MIN;
    ssize_t n;

    if (wire_parse_hdr(b->p + b->off, b->len, r->max_body, &h) == 0 &&
        WIRE_HDR_LEN + h.len > need)
        need = WIRE_HDR_LEN + h.len;
    if (need > b->cap) {
        size_t cap = b->cap;
        while (cap < need)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            relay_fail(r, WIRE_ERR_SESSION, "proxy out of memory");
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (b->off >= RELAY_IN_MIN || b->cap - b->off < need)
        buf_shift(b);
    do
        n = recv(r->efd, b->p + b->off + b->len, b->cap - b->off - b->len, MSG_DONTWAIT);
    while (n == -1 && errno == EINTR);
    if (n > 0) {
        b->len += (size_t)n;
        relay_frames(r);
    } else if (n == 0 && b->len) {
        relay_fail(r, WIRE_ERR_PROTO, "bad frame: connection closed mid-frame (%zu bytes)",
                   b->len);
    } else if (n == 0) {
        relay_edge_gone(r, "closed without CLOSE");
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        relay_edge_gone(r, strerror(errno));
    }
}

/* One read from the plain peer, straight into a DATA frame in the edge buffer. */
static void relay_plain_read(struct relay *r)
{
    struct buf *b = &r->to_edge;
    uint8_t *frame;
    ssize_t n;

    buf_compact(b, WIRE_DATA_HDR_LEN + r->max_msg);
    frame = b->p + b->off + b->len;
    do
        n = recv(r->pfd, frame + WIRE_DATA_HDR_LEN, r->max_msg, MSG_DONTWAIT);
    while (n == -1 && errno == EINTR);
    if (n > 0) {
        wire_put_data_hdr(frame, ++r->seq, (size_t)n);
        b->len += WIRE_DATA_HDR_LEN + (size_t)n;
    } else if (n == 0) {
        r->plain_eof = true;
        relay_send_close(r);
        if (r->close_wait_ms >= 0)
            r->deadline = now_ms() + r->close_wait_ms;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        relay_plain_gone(r);
    }
}

static void relay_flush(struct relay *r)
{
    int rc;

    if (!r->edge_dead && (rc = buf_flush(&r->to_edge, r->efd)) < 0)
        relay_edge_gone(r, strerror(-rc));
    if (!r->plain_dead && buf_flush(&r->to_plain, r->pfd) < 0)
        relay_plain_gone(r);
}

/* Relay until the session ends and what is left is flushed (or the time is up). */
void relay_run(struct relay *r)
{
    for (;;) {
        relay_frames(r);
        relay_flush(r);
        if (r->done && !r->edge_dead && r->to_edge.len == 0)
            r->edge_dead = true; /* nothing more to say to the edge */
        if (r->done && (r->plain_dead || r->to_plain.len == 0) &&
            (r->edge_dead || r->to_edge.len == 0))
            return;
        if (r->done && (r->deadline == 0 || r->deadline > now_ms() + RELAY_DRAIN_MS))
            r->deadline = now_ms() + RELAY_DRAIN_MS;

        struct pollfd pf[2] = { { .fd = r->pfd }, { .fd = r->efd } };
        if (!r->plain_dead) {
            if (!r->done && !r->plain_eof && r->to_edge.len < RELAY_LIMIT)
                pf[0].events |= POLLIN;
            if (r->to_plain.len)
                pf[0].events |= POLLOUT;
        }
        if (!r->edge_dead) {
            if (!r->done && r->to_plain.len < RELAY_LIMIT)
                pf[1].events |= POLLIN;
            if (r->to_edge.len)
                pf[1].events |= POLLOUT;
        }
        for (int i = 0; i < 2; i++)
            if (!pf[i].events)
                pf[i].fd = -1;
        int timeout = -1;
        if (r->deadline) {
            int64_t left = r->deadline - now_ms();
            timeout = left > 0 ? (int)left : 0;
        }
        int n = poll(pf, 2, timeout);
        if (n == -1 && errno != EINTR) {
            LOG(LOG_ERROR, "session=%llu msg=\"poll failed\" err=\"%s\"",
                (unsigned long long)r->session_id, strerror(errno));
            return;
        }
        if (n == 0) {
            LOG(LOG_WARN, "session=%llu msg=\"gave up waiting\" closing=%s",
                (unsigned long long)r->session_id, r->done ? "flush" : "edge CLOSE");
            return;
        }
        if (n > 0 && pf[0].revents && (pf[0].events & POLLIN))
            relay_plain_read(r);
        if (n > 0 && pf[1].revents && (pf[1].events & POLLIN))
            relay_edge_read(r);
    }
}

void relay_free(struct relay *r)
{
    free(r->in.p);
    free(r->to_edge.p);
    free(r->to_plain.p);
}

/* Wait for one whole frame from the edge into r->in; it stays there. 0 with *f, or
 * -errno (-ETIMEDOUT, -ECONNRESET at end of stream, -EPROTO, -EMSGSIZE). */
int handshake_frame(struct relay *r, struct wire_frame *f, size_t *flen)
{
    int64_t deadline = now_ms() + HANDSHAKE_MS;
    struct wire_hdr h;

    for (;;) {
        int rc = wire_parse_hdr(r->in.p, r->in.len, r->max_body, &h);
        if (rc == 0 && r->in.len >= WIRE_HDR_LEN + h.len) {
            *flen = WIRE_HDR_LEN + h.len;
            return wire_decode(&h, r->in.p + WIRE_HDR_LEN, f);
        }
        if (rc != 0 && rc != -EAGAIN)
            return rc;
        int64_t left = deadline - now_ms();
        struct pollfd pfd = { .fd = r->efd, .events = POLLIN };
        if (left <= 0)
            return -ETIMEDOUT;
        if (poll(&pfd, 1, (int)left) == -1 && errno != EINTR)
            return -errno;
        if (r->in.cap - r->in.len == 0)
            return -EMSGSIZE; /* handshake frames are small */
        ssize_t n = recv(r->efd, r->in.p + r->in.len, r->in.cap - r->in.len, MSG_DONTWAIT);
        if (n == 0)
            return -ECONNRESET;
        if (n > 0)
            r->in.len += (size_t)n;
        else if (errno != EAGAIN && errno != EINTR)
            return -errno;
    }
}

/* ---- the process: accept, fork one child per connection ---- */

/* Fork a child for one connection. In the child: the listener closed, and death with
 * the parent. The child returns 0 and must leave with _exit(). */
static pid_t proxy_fork(int lfd)
{
    pid_t parent = getpid();
    pid_t pid = fork();

    if (pid != 0)
        return pid;
    close(lfd);
    signal(SIGCHLD, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(0);
    return 0;
}

int proxy_print_ready(int lfd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN];

    if (getsockname(lfd, (struct sockaddr *)&ss, &len) == -1)
        return -errno;
    if (ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
        printf("ready listen=[%s]:%d\n", host, addr_local_port(lfd));
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
        printf("ready listen=%s:%d\n", host, addr_local_port(lfd));
    }
    fflush(stdout);
    return 0;
}

void proxy_accept_loop(int lfd, void (*serve)(int fd))
{
    for (;;) {
        int one = 1;
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno != EINTR && errno != ECONNABORTED) {
                LOG(LOG_ERROR, "msg=\"accept failed\" err=\"%s\"", strerror(errno));
                usleep(100000); /* EMFILE and friends: let connections end */
            }
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pid_t pid = proxy_fork(lfd);
        if (pid == 0) {
            serve(fd);
            _exit(0);
        }
        if (pid == -1)
            LOG(LOG_ERROR, "msg=\"fork failed\" err=\"%s\"", strerror(errno));
        close(fd);
    }
}

/* ---- the command line, the same for both proxies ---- */

int proxy_main(int argc, char **argv, const struct proxy_spec *spec)
{
    const struct option opts[] = {
        { "listen", required_argument, NULL, 'l' },
        { spec->peer_opt, required_argument, NULL, 'p' },
        { "max-message-bytes", required_argument, NULL, 'm' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    struct sigaction sa = { .sa_handler = SIG_DFL, .sa_flags = SA_NOCLDWAIT };
    const char *listen_addr = NULL;
    char err[256], *end;
    int c, lfd;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen_addr = optarg;
            break;
        case 'p':
            *spec->peer = optarg;
            break;
        case 'm': {
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || *end || v == 0 || v > MAX_MESSAGE_MAX) {
                fprintf(stderr, "%s: bad --max-message-bytes '%s' (1..%u)\n", spec->name,
                        optarg, MAX_MESSAGE_MAX);
                return 2;
            }
            *spec->max_msg = (size_t)v;
            break;
        }
        case 'h':
            fputs(spec->usage, stdout);
            return 0;
        default:
            fputs(spec->usage, stderr);
            return 2;
        }
    }
    if (!listen_addr || !*spec->peer || optind != argc) {
        fputs(spec->usage, stderr);
        return 2;
    }
    log_init(spec->name);
    signal(SIGPIPE, SIG_IGN);
    sigaction(SIGCHLD, &sa, NULL);
    lfd = addr_listen(listen_addr, err, sizeof(err));
    if (lfd < 0) {
        LOG(LOG_ERROR, "msg=\"cannot listen\" err=\"%s\"", err);
        return 1;
    }
    if (proxy_print_ready(lfd) < 0) {
        LOG(LOG_ERROR, "msg=\"getsockname failed\" err=\"%s\"", strerror(errno));
        return 1;
    }
    LOG(LOG_INFO, "msg=\"listening\" listen=%s %s=%s max_message_bytes=%zu", listen_addr,
        spec->peer_opt, *spec->peer, *spec->max_msg);
    proxy_accept_loop(lfd, spec->serve);
    return 0;
}
