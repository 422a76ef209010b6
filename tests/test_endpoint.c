/* test_endpoint.c - libcessna-endpoint and the two proxies, against a fake edge played by
 * the test on loopback sockets (no supervisor). */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "order.h"
#include "wire.h"

#define T_FRAME_MAX (WIRE_HDR_LEN + (1u << 20) + WIRE_MAX_OVERHEAD)

static const uint8_t t_token[WIRE_TOKEN_LEN] = "0123456789abcdef";

/* ---- socket helpers ---- */

static int t_listen(int *port)
{
    char err[256];
    int fd = addr_listen("127.0.0.1:0", err, sizeof(err));

    cr_assert_geq(fd, 0, "listen: %s", err);
    *port = addr_local_port(fd);
    return fd;
}

static int t_connect(int port)
{
    char addr[64], err[256];
    int fd;

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    fd = addr_connect(addr, err, sizeof(err));
    cr_assert_geq(fd, 0, "connect: %s", err);
    return fd;
}

/* A port nothing listens on. */
static int t_dead_port(void)
{
    int port, fd = t_listen(&port);

    close(fd);
    return port;
}

static int t_write(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Exactly len bytes; -1 at end of stream or on error. */
static int t_readn(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t n = recv(fd, p, len, 0);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One whole frame into buf (cap bytes): 0 with *f, or -1 at end of stream. Pointers in
 * *f point into buf. */
static int t_read_frame(int fd, uint8_t *buf, size_t cap, struct wire_frame *f)
{
    struct wire_hdr h;

    if (t_readn(fd, buf, WIRE_HDR_LEN) < 0)
        return -1;
    if (wire_parse_hdr(buf, WIRE_HDR_LEN, cap - WIRE_HDR_LEN, &h) < 0)
        return -2;
    if (t_readn(fd, buf + WIRE_HDR_LEN, h.len) < 0)
        return -1;
    return wire_decode(&h, buf + WIRE_HDR_LEN, f) < 0 ? -2 : 0;
}

static void t_expect_frame(int fd, uint8_t type, struct wire_frame *f)
{
    static uint8_t buf[T_FRAME_MAX];

    cr_assert_eq(t_read_frame(fd, buf, sizeof(buf), f), 0, "want a %s frame",
                 wire_type_name(type));
    cr_assert_eq(f->type, type, "got %s, want %s", wire_type_name(f->type),
                 wire_type_name(type));
}

/* The peer sent an ERROR with this code and closed. */
static void t_expect_error(int fd, uint32_t code, const char *text)
{
    struct wire_frame f;
    uint8_t buf[WIRE_RESUME_MAX];

    t_expect_frame(fd, WIRE_ERROR, &f);
    cr_expect_eq(f.u.error.code, code, "error code %u, want %u (%.*s)", f.u.error.code, code,
                 (int)f.u.error.text_len, f.u.error.text);
    if (text)
        cr_expect(memmem(f.u.error.text, f.u.error.text_len, text, strlen(text)),
                  "error text '%.*s' lacks '%s'", (int)f.u.error.text_len, f.u.error.text, text);
    cr_expect_lt(recv(fd, buf, sizeof(buf), 0), 1, "nothing after ERROR");
}

static size_t t_put_out(uint8_t *buf, uint64_t no, const void *order, uint32_t olen,
                        const void *payload, size_t len)
{
    size_t n = wire_put_out_hdr(buf, no, order, olen, len);

    memcpy(buf + n, payload, len);
    return n + len;
}

static void t_send_out(int fd, uint64_t no, const char *payload)
{
    uint8_t buf[256];

    cr_assert_eq(t_write(fd, buf, t_put_out(buf, no, NULL, 0, payload, strlen(payload))), 0);
}

static void t_send_data(int fd, uint64_t seq, const char *payload)
{
    uint8_t buf[256];
    size_t n = wire_put_data_hdr(buf, seq, strlen(payload));

    memcpy(buf + n, payload, strlen(payload));
    cr_assert_eq(t_write(fd, buf, n + strlen(payload)), 0);
}

static void t_send_close(int fd)
{
    uint8_t buf[WIRE_HDR_LEN];

    cr_assert_eq(t_write(fd, buf, wire_put_close(buf)), 0);
}

/* ---- a fake edge that accepts one client endpoint ---- */

struct t_edge {
    int lfd, port;
    int fd;                 /* the accepted connection, after the handshake */
    uint64_t sid;
    const char *refuse;     /* answer HELLO with ERROR and this text */
    int got_hello;
    uint8_t role;
    uint64_t hello_sid;
    uint8_t hello_token[WIRE_TOKEN_LEN];
    pthread_t th;
};

static void *t_edge_main(void *arg)
{
    struct t_edge *e = arg;
    uint8_t buf[1024];
    struct wire_frame f;
    size_t n;

    e->fd = accept(e->lfd, NULL, NULL);
    if (e->fd < 0 || t_read_frame(e->fd, buf, sizeof(buf), &f) < 0 || f.type != WIRE_HELLO)
        return NULL;
    e->got_hello = 1;
    e->role = f.u.hello.role;
    e->hello_sid = f.u.hello.session_id;
    memcpy(e->hello_token, f.u.hello.token, WIRE_TOKEN_LEN);
    if (e->refuse)
        n = wire_put_error(buf, sizeof(buf), WIRE_ERR_UNAVAILABLE, "%s", e->refuse);
    else
        n = wire_put_welcome(buf, e->sid, t_token, 1);
    t_write(e->fd, buf, n);
    return NULL;
}

static void t_edge_start(struct t_edge *e, uint64_t sid, const char *refuse)
{
    memset(e, 0, sizeof(*e));
    e->sid = sid;
    e->refuse = refuse;
    e->fd = -1;
    e->lfd = t_listen(&e->port);
    cr_assert_eq(pthread_create(&e->th, NULL, t_edge_main, e), 0);
}

static void t_edge_join(struct t_edge *e)
{
    pthread_join(e->th, NULL);
    close(e->lfd);
}

/* A client endpoint with a session open at a fake edge. */
static struct cessna_ep *t_client(struct t_edge *e, uint64_t sid)
{
    char addr[64], err[256];
    struct cessna_ep *ep;

    t_edge_start(e, sid, NULL);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", e->port);
    ep = cessna_ep_connect(addr, err, sizeof(err));
    t_edge_join(e);
    cr_assert_not_null(ep, "connect: %s", err);
    cr_assert(e->got_hello);
    return ep;
}

/* ---- the library, client side ---- */

Test(endpoint, connect_handshake, .timeout = 10)
{
    static const uint8_t zero[WIRE_TOKEN_LEN];
    struct t_edge e = { 0 };
    struct cessna_ep *ep = t_client(&e, 42);
    size_t olen;

    cr_expect_eq(e.role, WIRE_ROLE_CLIENT);
    cr_expect_eq(e.hello_sid, 0);
    cr_expect_arr_eq(e.hello_token, zero, WIRE_TOKEN_LEN);
    cr_expect_eq(cessna_ep_session_id(ep), 42);
    cr_expect_geq(cessna_ep_fd(ep), 0);
    cr_expect_str_empty(cessna_ep_error(ep));
    cr_expect_eq(cessna_ep_last_out(ep), 0);
    cessna_ep_order(ep, &olen);
    cr_expect_eq(olen, 0);
    cessna_ep_free(ep);
    close(e.fd);
}

Test(endpoint, connect_tries_each_edge, .timeout = 10)
{
    char addr[128], err[256];
    struct t_edge e = { 0 };
    struct cessna_ep *ep;

    t_edge_start(&e, 9, NULL);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d,127.0.0.1:%d", t_dead_port(), e.port);
    ep = cessna_ep_connect(addr, err, sizeof(err));
    t_edge_join(&e);
    cr_assert_not_null(ep, "connect: %s", err);
    cr_expect_eq(cessna_ep_session_id(ep), 9);
    cessna_ep_free(ep);
    close(e.fd);
}

Test(endpoint, connect_no_edge_answers, .timeout = 10)
{
    char addr[128], err[256] = "";

    snprintf(addr, sizeof(addr), "127.0.0.1:%d,127.0.0.1:%d", t_dead_port(), t_dead_port());
    cr_expect_null(cessna_ep_connect(addr, err, sizeof(err)));
    cr_expect(strstr(err, "connect"), "err: %s", err);
    cr_expect_null(cessna_ep_connect("nonsense", err, sizeof(err)));
    cr_expect_str_not_empty(err);
}

Test(endpoint, connect_refused_with_error, .timeout = 10)
{
    char addr[64], err[256] = "";
    struct t_edge e;

    t_edge_start(&e, 1, "edge is full");
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", e.port);
    cr_expect_null(cessna_ep_connect(addr, err, sizeof(err)));
    t_edge_join(&e);
    cr_expect(strstr(err, "edge is full"), "err: %s", err);
    close(e.fd);
}

Test(endpoint, send_numbers_data, .timeout = 10)
{
    struct t_edge e = { 0 };
    struct cessna_ep *ep = t_client(&e, 1);
    struct wire_frame f;

    cr_assert_eq(cessna_ep_send(ep, "abc", 3), 0);
    cr_assert_eq(cessna_ep_send(ep, NULL, 0), 0);
    cr_assert_eq(cessna_ep_send(ep, "defg", 4), 0);
    t_expect_frame(e.fd, WIRE_DATA, &f);
    cr_expect_eq(f.u.data.seq, 1);
    cr_expect_eq(f.u.data.len, 3);
    cr_expect_arr_eq(f.u.data.payload, "abc", 3);
    t_expect_frame(e.fd, WIRE_DATA, &f);
    cr_expect_eq(f.u.data.seq, 2);
    cr_expect_eq(f.u.data.len, 0);
    t_expect_frame(e.fd, WIRE_DATA, &f);
    cr_expect_eq(f.u.data.seq, 3);
    cr_expect_arr_eq(f.u.data.payload, "defg", 4);
    cr_expect_eq(cessna_ep_send(ep, "x", (1u << 20) + 1), -EMSGSIZE);
    cessna_ep_free(ep);
    close(e.fd);
}

Test(endpoint, recv_drops_duplicates_and_keeps_order, .timeout = 10)
{
    struct order_entry start = { .src = ORDER_START, .time_ms = 100 };
    struct order_entry c1 = { .src = ORDER_CLIENT, .time_ms = 150 };
    struct order_entry t1 = { .src = ORDER_TIMER, .time_ms = 400, .timer_id = 3 };
    uint8_t o1[64], o2[64], o3[64], want[192], buf[512];
    size_t n1, n2, n3, olen, n;
    uint64_t t = 0;
    struct t_edge e = { 0 };
    struct cessna_ep *ep = t_client(&e, 1);
    const void *data;
    const uint8_t *order;

    n1 = order_encode(o1, &start, &t);
    n2 = order_encode(o2, &c1, &t);
    n3 = order_encode(o3, &t1, &t);
    n = t_put_out(buf, 1, o1, (uint32_t)n1, "one", 3);
    n += t_put_out(buf + n, 1, o2, (uint32_t)n2, "one", 3);   /* duplicate: dropped */
    n += t_put_out(buf + n, 2, o2, (uint32_t)n2, "two", 3);
    n += t_put_out(buf + n, 2, NULL, 0, "two", 3);            /* duplicate: dropped */
    n += wire_put_snap_durable(buf + n, 7, 0, 0);          /* frees nothing here */
    n += t_put_out(buf + n, 4, o3, (uint32_t)n3, "", 0);      /* gaps are allowed */
    n += wire_put_close(buf + n);
    cr_assert_eq(t_write(e.fd, buf, n), 0);

    cr_assert_eq(cessna_ep_recv(ep, &data), 3);
    cr_expect_arr_eq(data, "one", 3);
    cr_assert_eq(cessna_ep_recv(ep, &data), 3);
    cr_expect_arr_eq(data, "two", 3);
    cr_assert_eq(cessna_ep_recv(ep, &data), 0);
    cr_expect_eq(cessna_ep_last_out(ep), 4);
    cr_expect_eq(cessna_ep_recv(ep, &data), CESSNA_EP_CLOSED);
    cr_expect_eq(cessna_ep_recv(ep, &data), CESSNA_EP_CLOSED, "CLOSED is sticky");

    memcpy(want, o1, n1);
    memcpy(want + n1, o2, n2);
    memcpy(want + n1 + n2, o3, n3);
    order = cessna_ep_order(ep, &olen);
    cr_assert_eq(olen, n1 + n2 + n3);
    cr_expect_arr_eq(order, want, olen);
    cessna_ep_free(ep);
    close(e.fd);
}

Test(endpoint, error_frame_aborts, .timeout = 10)
{
    struct t_edge e = { 0 };
    struct cessna_ep *ep = t_client(&e, 1);
    uint8_t buf[600];
    const void *data;

    t_send_out(e.fd, 1, "last words");
    cr_assert_eq(t_write(e.fd, buf, wire_put_error(buf, sizeof(buf), WIRE_ERR_SESSION,
                                                   "worker died at event 5 (signal 11)")), 0);
    cr_assert_eq(cessna_ep_recv(ep, &data), 10);
    cr_expect_eq(cessna_ep_recv(ep, &data), -ECONNABORTED);
    cr_expect(strstr(cessna_ep_error(ep), "worker died at event 5"), "error: %s",
              cessna_ep_error(ep));
    cr_expect_eq(cessna_ep_recv(ep, &data), -ECONNABORTED, "the failure is sticky");
    cessna_ep_free(ep);
    close(e.fd);
}

/* Each bad input from the edge: recv fails with want_rc, and the edge gets ERROR code. */
struct t_bad {
    const char *name;
    uint8_t bytes[WIRE_RESUME_MAX];
    size_t len;
    int shut;               /* close the edge's side after the bytes */
    long want_rc;
    uint32_t code;          /* 0: no ERROR frame expected */
};

static void t_bad_input(const struct t_bad *b)
{
    struct t_edge e = { 0 };
    struct cessna_ep *ep = t_client(&e, 1);
    const void *data;
    long rc;

    cessna_ep_set_resume_timeout(ep, 300);   /* the fake edge takes no resume */
    cr_assert_eq(t_write(e.fd, b->bytes, b->len), 0);
    if (b->shut)
        shutdown(e.fd, SHUT_WR);
    rc = cessna_ep_recv(ep, &data);
    cr_expect_eq(rc, b->want_rc, "%s: recv %ld, want %ld (%s)", b->name, rc, b->want_rc,
                 cessna_ep_error(ep));
    cr_expect_str_not_empty(cessna_ep_error(ep), "%s: no error text", b->name);
    if (b->code)
        t_expect_error(e.fd, b->code, NULL);
    cessna_ep_free(ep);
    close(e.fd);
}

Test(endpoint, bad_frames_fail_cleanly, .timeout = 10)
{
    struct t_bad cases[8] = {
        { "garbage", "this is not a CESSNA frame", 26, 0, -EPROTO, WIRE_ERR_PROTO },
        { "oversized", {0}, WIRE_HDR_LEN, 0, -EMSGSIZE, WIRE_ERR_TOO_BIG },
        { "short OUT body", {0}, WIRE_HDR_LEN + 4, 0, -EPROTO, WIRE_ERR_PROTO },
        { "bad order", {0}, 0, 0, -EPROTO, WIRE_ERR_PROTO },
        { "unexpected DATA", {0}, WIRE_DATA_HDR_LEN, 0, -EPROTO, WIRE_ERR_UNEXPECTED },
        /* A lost edge, cut mid-frame or not: resumed (here: nowhere, in time). */
        { "truncated", {0}, 0, 1, -ETIMEDOUT, 0 },
        { "eof without CLOSE", {0}, 0, 1, -ETIMEDOUT, 0 },
        { "HELLO mid-session", {0}, 0, 0, -EPROTO, WIRE_ERR_UNEXPECTED },
    };
    uint8_t bad_order[] = { 99, 0 };

    wire_put_hdr(cases[1].bytes, WIRE_OUT, (1u << 20) + WIRE_MAX_OVERHEAD + 1);
    wire_put_hdr(cases[2].bytes, WIRE_OUT, 4);
    cases[3].len = t_put_out(cases[3].bytes, 1, bad_order, sizeof(bad_order), "x", 1);
    wire_put_data_hdr(cases[4].bytes, 1, 0);
    cases[5].len = t_put_out(cases[5].bytes, 1, NULL, 0, "abcdef", 6) - 3;
    cases[7].len = wire_put_hello_edge(cases[7].bytes, 1, 1, (const uint8_t[WIRE_VERIFIER_LEN]){0}, NULL, 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        t_bad_input(&cases[i]);
}

Test(endpoint, nonblocking_recv, .timeout = 10)
{
    struct t_edge e = { 0 };
    struct cessna_ep *ep = t_client(&e, 1);
    struct pollfd pfd = { .events = POLLIN };
    uint8_t buf[WIRE_RESUME_MAX];
    const void *data;
    size_t n = t_put_out(buf, 1, NULL, 0, "split", 5);

    cessna_ep_set_nonblocking(ep, 1);
    pfd.fd = cessna_ep_fd(ep);
    cr_expect_eq(cessna_ep_recv(ep, &data), -EAGAIN);
    cr_assert_eq(t_write(e.fd, buf, 7), 0);
    cr_assert_eq(poll(&pfd, 1, 5000), 1);
    cr_expect_eq(cessna_ep_recv(ep, &data), -EAGAIN, "half a frame is not a message");
    cr_assert_eq(t_write(e.fd, buf + 7, n - 7), 0);
    cr_assert_eq(poll(&pfd, 1, 5000), 1);
    cr_assert_eq(cessna_ep_recv(ep, &data), 5);
    cr_expect_arr_eq(data, "split", 5);
    cr_expect_eq(cessna_ep_recv(ep, &data), -EAGAIN);
    cessna_ep_free(ep);
    close(e.fd);
}

struct t_big {
    int fd;
    uint8_t *frame;
    size_t len;
};

static void *t_big_writer(void *arg)
{
    struct t_big *b = arg;

    t_write(b->fd, b->frame, b->len);
    return NULL;
}

Test(endpoint, largest_message, .timeout = 10)
{
    size_t max = 1u << 20;
    struct t_edge e = { 0 };
    struct cessna_ep *ep = t_client(&e, 1);
    struct t_big b = { .frame = malloc(WIRE_OUT_HDR_LEN + max) };
    uint8_t *payload = malloc(max);
    pthread_t th;
    const void *data;

    cr_assert(b.frame && payload);
    for (size_t i = 0; i < max; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    b.fd = e.fd;
    b.len = t_put_out(b.frame, 1, NULL, 0, payload, max);
    pthread_create(&th, NULL, t_big_writer, &b);
    cr_assert_eq(cessna_ep_recv(ep, &data), (long)max);
    cr_expect_arr_eq(data, payload, max);
    pthread_join(th, NULL);
    cr_assert_eq(cessna_ep_send(ep, payload, max), 0);
    cessna_ep_free(ep);
    close(e.fd);
    free(b.frame);
    free(payload);
}

/* The edge of close_*: read CLOSE, send an OUT (to be discarded) and, if answer, CLOSE. */
struct t_closer {
    int fd, answer, got_close;
};

static void *t_closer_main(void *arg)
{
    struct t_closer *c = arg;
    uint8_t buf[256];
    struct wire_frame f;

    if (t_read_frame(c->fd, buf, sizeof(buf), &f) == 0 && f.type == WIRE_CLOSE)
        c->got_close = 1;
    t_write(c->fd, buf, t_put_out(buf, 1, NULL, 0, "late", 4));
    if (c->answer)
        t_write(c->fd, buf, wire_put_close(buf));
    return NULL;
}

Test(endpoint, close_waits_for_edge_close, .timeout = 10)
{
    struct t_edge e = { 0 };
    struct cessna_ep *ep = t_client(&e, 1);
    struct t_closer c = { .fd = e.fd, .answer = 1 };
    pthread_t th;

    pthread_create(&th, NULL, t_closer_main, &c);
    cr_expect_eq(cessna_ep_close(ep, 5000), 0, "%s", cessna_ep_error(ep));
    pthread_join(th, NULL);
    cr_expect(c.got_close);
    cr_expect_eq(cessna_ep_fd(ep), -1);
    cessna_ep_free(ep);
    close(e.fd);
}

Test(endpoint, close_times_out, .timeout = 10)
{
    struct t_edge e = { 0 };
    struct cessna_ep *ep = t_client(&e, 1);
    struct t_closer c = { .fd = e.fd };
    pthread_t th;

    pthread_create(&th, NULL, t_closer_main, &c);
    cr_expect_eq(cessna_ep_close(ep, 300), -ETIMEDOUT);
    pthread_join(th, NULL);
    cessna_ep_free(ep);
    close(e.fd);
}

Test(endpoint, close_after_edge_closed, .timeout = 10)
{
    struct t_edge e = { 0 };
    struct cessna_ep *ep = t_client(&e, 1);
    const void *data;
    struct wire_frame f;

    t_send_close(e.fd);
    cr_assert_eq(cessna_ep_recv(ep, &data), CESSNA_EP_CLOSED);
    cr_expect_eq(cessna_ep_close(ep, 1000), 0);
    t_expect_frame(e.fd, WIRE_CLOSE, &f);
    cessna_ep_free(ep);
    close(e.fd);
}

/* One sender thread and one receiver thread on the same endpoint; the edge echoes. */
struct t_echo_edge {
    int fd, n;
};

static void *t_echo_edge_main(void *arg)
{
    struct t_echo_edge *x = arg;
    uint8_t *in = malloc(T_FRAME_MAX), *out = malloc(T_FRAME_MAX);
    struct wire_frame f;

    for (int i = 0; in && out && i < x->n; i++) {
        if (t_read_frame(x->fd, in, T_FRAME_MAX, &f) < 0 || f.type != WIRE_DATA)
            break;
        if (t_write(x->fd, out, t_put_out(out, f.u.data.seq, NULL, 0, f.u.data.payload,
                                          f.u.data.len)) < 0)
            break;
    }
    free(in);
    free(out);
    return NULL;
}

static void *t_sender_main(void *arg)
{
    struct cessna_ep *ep = arg;
    char msg[32];

    for (int i = 0; i < 2000; i++) {
        int n = snprintf(msg, sizeof(msg), "message %d", i);
        if (cessna_ep_send(ep, msg, (size_t)n) < 0)
            break;
    }
    return NULL;
}

Test(endpoint, one_sender_one_receiver, .timeout = 10)
{
    struct t_edge e = { 0 };
    struct cessna_ep *ep = t_client(&e, 1);
    struct t_echo_edge x = { .fd = e.fd, .n = 2000 };
    pthread_t edge, sender;
    const void *data;
    char want[32];

    pthread_create(&edge, NULL, t_echo_edge_main, &x);
    pthread_create(&sender, NULL, t_sender_main, ep);
    for (int i = 0; i < 2000; i++) {
        long n = cessna_ep_recv(ep, &data);
        int wn = snprintf(want, sizeof(want), "message %d", i);
        cr_assert_eq(n, wn, "message %d: %ld (%s)", i, n, cessna_ep_error(ep));
        cr_assert_arr_eq(data, want, (size_t)n);
    }
    pthread_join(sender, NULL);
    pthread_join(edge, NULL);
    cr_expect_eq(cessna_ep_last_out(ep), 2000);
    cessna_ep_free(ep);
    close(e.fd);
}

/* ---- the library, server side ---- */

static int t_edge_hello(int port, uint8_t role, uint64_t sid)
{
    uint8_t buf[WIRE_RESUME_MAX];
    int fd = t_connect(port);

    size_t n = role == WIRE_ROLE_EDGE
        ? wire_put_hello_edge(buf, sid, 1, (const uint8_t[WIRE_VERIFIER_LEN]){0}, NULL, 0)
        : wire_put_hello(buf, role, sid, t_token);
    cr_assert_eq(t_write(fd, buf, n), 0);
    return fd;
}

Test(endpoint, accept_handshake, .timeout = 10)
{
    char err[256];
    int port, lfd = t_listen(&port);
    int fd = t_edge_hello(port, WIRE_ROLE_EDGE, 77);
    struct cessna_ep *ep = cessna_ep_accept(lfd, err, sizeof(err));
    struct wire_frame f;
    const void *data;

    cr_assert_not_null(ep, "accept: %s", err);
    cr_expect_eq(cessna_ep_session_id(ep), 77);
    t_expect_frame(fd, WIRE_WELCOME, &f);
    cr_expect_eq(f.u.welcome.session_id, 77);
    cr_expect_eq(f.u.welcome.epoch, 1, "the epoch of a new session");
    t_send_out(fd, 1, "to the server");
    cr_assert_eq(cessna_ep_recv(ep, &data), 13);
    cr_assert_eq(cessna_ep_send(ep, "reply", 5), 0);
    t_expect_frame(fd, WIRE_DATA, &f);
    cr_expect_eq(f.u.data.seq, 1);
    cessna_ep_free(ep);
    close(fd);
    close(lfd);
}

Test(endpoint, accept_refuses_bad_handshake, .timeout = 10)
{
    char err[256] = "";
    int port, lfd = t_listen(&port);
    int bad = t_edge_hello(port, WIRE_ROLE_CLIENT, 0);
    int garbage = t_connect(port);
    int good;
    struct cessna_ep *ep;

    cr_assert_eq(t_write(garbage, "GET / HTTP/1.0\r\n\r\n", 18), 0);
    good = t_edge_hello(port, WIRE_ROLE_EDGE, 5);
    cr_expect_null(cessna_ep_accept(lfd, err, sizeof(err)));
    cr_expect(strstr(err, "HELLO"), "err: %s", err);
    t_expect_error(bad, WIRE_ERR_UNEXPECTED, "want HELLO role EDGE");
    cr_expect_null(cessna_ep_accept(lfd, err, sizeof(err)));
    t_expect_error(garbage, WIRE_ERR_PROTO, "bad frame");
    ep = cessna_ep_accept(lfd, err, sizeof(err));
    cr_assert_not_null(ep, "accept: %s", err);
    cr_expect_eq(cessna_ep_session_id(ep), 5);
    cessna_ep_free(ep);
    close(bad);
    close(garbage);
    close(good);
    close(lfd);
}

/* Random bytes and random frames from the edge: always an error or a message, never a
 * crash or a hang. */
Test(endpoint, random_input, .timeout = 10)
{
    char err[256];
    int port, lfd = t_listen(&port);
    unsigned seed = 12345;

    for (int round = 0; round < 300; round++) {
        uint8_t buf[512];
        size_t n = 0;
        int fd = t_edge_hello(port, WIRE_ROLE_EDGE, (uint64_t)round);
        struct cessna_ep *ep = cessna_ep_accept(lfd, err, sizeof(err));
        const void *data;
        long rc;

        cr_assert_not_null(ep, "accept: %s", err);
        while (n < sizeof(buf) - 64) {
            size_t len = (size_t)rand_r(&seed) % 48;
            if (rand_r(&seed) % 2) { /* a plausible header with a random type and body */
                wire_put_hdr(buf + n, (uint8_t)(rand_r(&seed) % 13), (uint32_t)len);
                n += WIRE_HDR_LEN;
            }
            for (size_t i = 0; i < len; i++)
                buf[n++] = (uint8_t)rand_r(&seed);
        }
        t_write(fd, buf, n);
        shutdown(fd, SHUT_WR);
        do
            rc = cessna_ep_recv(ep, &data);
        while (rc >= 0);
        cr_expect(rc == -EPROTO || rc == -EMSGSIZE || rc == -ECONNRESET ||
                  rc == -ECONNABORTED || rc == CESSNA_EP_CLOSED, "round %d: %ld", round, rc);
        cessna_ep_free(ep);
        close(fd);
    }
    close(lfd);
}

/* ---- the proxies, as processes ---- */

/* Start build/bin/NAME --listen 127.0.0.1:0 OPT ARG [--max-message-bytes MAX]; wait for
 * its ready line. Skips the test when the binary is not built. */
static pid_t t_proxy(const char *name, const char *opt, const char *arg, const char *max,
                     int *port)
{
    char path[512], line[256];
    size_t n = 0;
    int p[2];
    pid_t pid;

    snprintf(path, sizeof(path), "%s/bin/%s", CESSNA_BUILD_DIR, name);
    if (access(path, X_OK) != 0)
        cr_skip_test("%s is not built", path);
    cr_assert_eq(pipe(p), 0);
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no proxy behind */
        dup2(p[1], STDOUT_FILENO);
        close(p[0]);
        close(p[1]);
        setenv("CESSNA_LOG", "error", 1);
        if (max)
            execl(path, name, "--listen", "127.0.0.1:0", opt, arg, "--max-message-bytes", max,
                  (char *)NULL);
        else
            execl(path, name, "--listen", "127.0.0.1:0", opt, arg, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    while (n < sizeof(line) - 1 && read(p[0], line + n, 1) == 1 && line[n] != '\n')
        n++;
    line[n] = 0;
    close(p[0]);
    cr_assert_eq(sscanf(line, "ready listen=127.0.0.1:%d", port), 1, "ready line: '%s'", line);
    return pid;
}

static void t_proxy_stop(pid_t pid)
{
    int status;

    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
}

/* A plain TCP server for the server proxy: echoes (or, with hangup, closes at once). */
struct t_target {
    int lfd, port, hangup, conns;
    pthread_t th;
};

static void *t_target_main(void *arg)
{
    struct t_target *t = arg;
    static uint8_t buf[1 << 16];

    for (int i = 0; i < t->conns; i++) {
        int fd = accept(t->lfd, NULL, NULL);
        ssize_t n;
        if (fd < 0)
            return NULL;
        while (!t->hangup && (n = recv(fd, buf, sizeof(buf), 0)) > 0)
            if (t_write(fd, buf, (size_t)n) < 0)
                break;
        close(fd);
    }
    return NULL;
}

static void t_target_start(struct t_target *t, int conns, int hangup)
{
    t->conns = conns;
    t->hangup = hangup;
    t->lfd = t_listen(&t->port);
    pthread_create(&t->th, NULL, t_target_main, t);
}

/* An edge session at the server proxy. */
static int t_server_session(int proxy_port, uint64_t sid)
{
    int fd = t_edge_hello(proxy_port, WIRE_ROLE_EDGE, sid);
    struct wire_frame f;

    t_expect_frame(fd, WIRE_WELCOME, &f);
    cr_expect_eq(f.u.welcome.session_id, sid);
    cr_expect_eq(f.u.welcome.epoch, 1, "the epoch of a new session");
    return fd;
}

static pid_t t_server_proxy(struct t_target *t, int *port)
{
    char target[64];

    snprintf(target, sizeof(target), "127.0.0.1:%d", t->port);
    return t_proxy("cessna-server-proxy", "--target", target, NULL, port);
}

Test(server_proxy, relays_and_closes, .timeout = 10)
{
    struct t_target t;
    int port, fd;
    pid_t pid;
    struct wire_frame f;

    t_target_start(&t, 1, 0);
    pid = t_server_proxy(&t, &port);
    fd = t_server_session(port, 3);
    t_send_out(fd, 1, "ping");
    t_expect_frame(fd, WIRE_DATA, &f);
    cr_expect_eq(f.u.data.seq, 1);
    cr_expect_eq(f.u.data.len, 4);
    cr_expect_arr_eq(f.u.data.payload, "ping", 4);
    t_send_out(fd, 1, "ping");          /* duplicate: dropped */
    t_send_out(fd, 2, "pong");
    t_expect_frame(fd, WIRE_DATA, &f);
    cr_expect_eq(f.u.data.seq, 2);
    cr_expect_eq(f.u.data.len, 4);
    cr_expect_arr_eq(f.u.data.payload, "pong", 4);
    t_send_close(fd);
    t_expect_frame(fd, WIRE_CLOSE, &f);
    close(fd);
    pthread_join(t.th, NULL);           /* the target saw its connection end */
    t_proxy_stop(pid);
    close(t.lfd);
}

Test(server_proxy, target_eof_sends_close, .timeout = 10)
{
    struct t_target t;
    int port, fd;
    pid_t pid;
    struct wire_frame f;
    uint8_t c;

    t_target_start(&t, 1, 1);
    pid = t_server_proxy(&t, &port);
    fd = t_server_session(port, 4);
    t_expect_frame(fd, WIRE_CLOSE, &f);
    t_send_close(fd);
    cr_expect_leq(recv(fd, &c, 1, 0), 0);
    close(fd);
    pthread_join(t.th, NULL);
    t_proxy_stop(pid);
    close(t.lfd);
}

Test(server_proxy, bad_frames_end_only_their_session, .timeout = 10)
{
    struct t_target t;
    int port, good, bad;
    pid_t pid;
    struct wire_frame f;
    uint8_t buf[WIRE_RESUME_MAX];

    t_target_start(&t, 5, 0);
    pid = t_server_proxy(&t, &port);
    good = t_server_session(port, 1);

    bad = t_server_session(port, 2);
    cr_assert_eq(t_write(bad, "\x5a\xc5\x01\x63garbage!", 12), 0);
    t_expect_error(bad, WIRE_ERR_PROTO, "bad frame");
    close(bad);

    bad = t_server_session(port, 3);
    wire_put_hdr(buf, WIRE_OUT, (1u << 20) + WIRE_MAX_OVERHEAD + 1);
    cr_assert_eq(t_write(bad, buf, WIRE_HDR_LEN), 0);
    t_expect_error(bad, WIRE_ERR_TOO_BIG, "exceeds limit");
    close(bad);

    bad = t_server_session(port, 4);
    t_send_data(bad, 1, "servers do not get DATA");
    t_expect_error(bad, WIRE_ERR_UNEXPECTED, "DATA");
    close(bad);

    bad = t_server_session(port, 5);
    cr_assert_eq(t_write(bad, buf, t_put_out(buf, 1, NULL, 0, "cut short", 9) - 4), 0);
    shutdown(bad, SHUT_WR);
    /* An edge that ends mid-frame is lost like a crashed one (a killed edge cuts frames
     * too): the session waits for a resume, and the connection is closed without a frame. */
    struct pollfd pfd = { .fd = bad, .events = POLLIN };
    char c;
    cr_assert_eq(poll(&pfd, 1, 5000), 1, "the proxy closes the connection");
    cr_assert_eq(recv(bad, &c, 1, 0), 0, "closed without a frame");
    close(bad);

    t_send_out(good, 1, "still here");
    t_expect_frame(good, WIRE_DATA, &f);
    cr_expect_arr_eq(f.u.data.payload, "still here", 10);
    t_send_close(good);   /* without CLOSE the proxy would wait --linger-ms for a RESUME */
    t_expect_frame(good, WIRE_CLOSE, &f);
    close(good);
    t_proxy_stop(pid);    /* the session whose edge ended mid-frame still lingers */
    pthread_join(t.th, NULL);
    close(t.lfd);
}

Test(server_proxy, refuses_bad_hello, .timeout = 10)
{
    struct t_target t = { .port = t_dead_port() };
    int port, fd;
    pid_t pid = t_server_proxy(&t, &port);

    fd = t_edge_hello(port, WIRE_ROLE_CLIENT, 0);
    t_expect_error(fd, WIRE_ERR_UNEXPECTED, "HELLO");
    close(fd);
    fd = t_edge_hello(port, WIRE_ROLE_EDGE, 8);
    t_expect_error(fd, WIRE_ERR_UNAVAILABLE, "server unreachable");
    close(fd);
    t_proxy_stop(pid);
}

/* Both directions at once, far beyond every buffer on the way: the edge writes 32 MiB of
 * OUT while the echo target sends it all back as DATA. */
struct t_pump {
    int fd;
    size_t total, chunk;
};

/* The test stream: byte k is (k * 7 + 3) mod 256. */
static void t_stream_fill(uint8_t *buf, size_t off, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)((off + i) * 7 + 3);
}

static void t_stream_check(const uint8_t *buf, size_t off, size_t len)
{
    static uint8_t want[T_FRAME_MAX];

    cr_assert_leq(len, sizeof(want));
    t_stream_fill(want, off, len);
    cr_assert_arr_eq(buf, want, len, "stream bytes %zu..%zu differ", off, off + len);
}

static void *t_pump_main(void *arg)
{
    struct t_pump *p = arg;
    uint8_t *frame = malloc(WIRE_OUT_HDR_LEN + p->chunk);
    uint64_t no = 0;

    for (size_t off = 0; frame && off < p->total; off += p->chunk) {
        size_t n = wire_put_out_hdr(frame, ++no, NULL, 0, p->chunk);
        t_stream_fill(frame + n, off, p->chunk);
        if (t_write(p->fd, frame, n + p->chunk) < 0)
            break;
    }
    free(frame);
    return NULL;
}

Test(server_proxy, pipelined_both_ways, .timeout = 10)
{
    struct t_target t;
    int port, fd;
    pid_t pid;
    struct t_pump p = { .total = 32u << 20, .chunk = 60000 };
    pthread_t th;
    struct wire_frame f;
    size_t got = 0;
    uint64_t seq = 0;

    p.total -= p.total % p.chunk;
    t_target_start(&t, 1, 0);
    pid = t_server_proxy(&t, &port);
    fd = t_server_session(port, 6);
    p.fd = fd;
    pthread_create(&th, NULL, t_pump_main, &p);
    while (got < p.total) {
        t_expect_frame(fd, WIRE_DATA, &f);
        cr_assert_eq(f.u.data.seq, ++seq);
        t_stream_check(f.u.data.payload, got, f.u.data.len);
        got += f.u.data.len;
    }
    cr_expect_eq(got, p.total);
    pthread_join(th, NULL);
    t_send_close(fd);
    t_expect_frame(fd, WIRE_CLOSE, &f);
    close(fd);
    pthread_join(t.th, NULL);
    t_proxy_stop(pid);
    close(t.lfd);
}

/* A client proxy in front of a fake edge; a plain client connected through it. */
static pid_t t_client_proxy(struct t_edge *e, uint64_t sid, const char *refuse, int *plain)
{
    char edges[128];
    int port;
    pid_t pid;

    t_edge_start(e, sid, refuse);
    snprintf(edges, sizeof(edges), "127.0.0.1:%d,127.0.0.1:%d", t_dead_port(), e->port);
    pid = t_proxy("cessna-client-proxy", "--edge", edges, NULL, &port);
    *plain = t_connect(port);
    t_edge_join(e);
    return pid;
}

static void t_expect_plain(int fd, const char *want)
{
    char buf[256] = "";
    size_t n = strlen(want);

    cr_assert_eq(t_readn(fd, buf, n), 0, "want '%s'", want);
    cr_expect_arr_eq(buf, want, n, "got '%.*s', want '%s'", (int)n, buf, want);
}

static void t_expect_plain_eof(int fd)
{
    char c;

    cr_expect_leq(recv(fd, &c, 1, 0), 0, "want end of stream");
}

Test(client_proxy, relays_and_closes, .timeout = 10)
{
    struct t_edge e = { 0 };
    int plain;
    pid_t pid = t_client_proxy(&e, 11, NULL, &plain);
    struct wire_frame f;

    cr_assert(e.got_hello);
    cr_expect_eq(e.role, WIRE_ROLE_CLIENT);
    cr_expect_eq(e.hello_sid, 0);
    cr_assert_eq(t_write(plain, "hi", 2), 0);
    t_expect_frame(e.fd, WIRE_DATA, &f);
    cr_expect_eq(f.u.data.seq, 1);
    cr_expect_arr_eq(f.u.data.payload, "hi", 2);
    t_send_out(e.fd, 1, "yo");
    t_send_out(e.fd, 1, "yo");          /* duplicate: dropped */
    t_send_out(e.fd, 2, "!");
    t_expect_plain(plain, "yo!");
    cr_assert_eq(t_write(plain, "again", 5), 0);
    t_expect_frame(e.fd, WIRE_DATA, &f);
    cr_expect_eq(f.u.data.seq, 2);

    shutdown(plain, SHUT_WR);           /* the client is done sending... */
    t_expect_frame(e.fd, WIRE_CLOSE, &f);
    t_send_out(e.fd, 3, "late reply");  /* ...but still gets what the edge sends */
    t_send_close(e.fd);
    t_expect_plain(plain, "late reply");
    t_expect_plain_eof(plain);
    close(plain);
    close(e.fd);
    t_proxy_stop(pid);
}

Test(client_proxy, edge_close_and_error_end_the_client, .timeout = 10)
{
    struct t_edge e = { 0 };
    int plain;
    pid_t pid = t_client_proxy(&e, 12, NULL, &plain);
    struct wire_frame f;
    uint8_t buf[128];

    t_send_out(e.fd, 1, "bye");
    t_send_close(e.fd);
    t_expect_plain(plain, "bye");
    t_expect_plain_eof(plain);
    t_expect_frame(e.fd, WIRE_CLOSE, &f); /* the proxy answers CLOSE */
    close(plain);
    close(e.fd);
    t_proxy_stop(pid);

    pid = t_client_proxy(&e, 13, NULL, &plain);
    t_send_out(e.fd, 1, "partial");
    cr_assert_eq(t_write(e.fd, buf, wire_put_error(buf, sizeof(buf), WIRE_ERR_SESSION,
                                                   "app crashed")), 0);
    t_expect_plain(plain, "partial");
    t_expect_plain_eof(plain);
    close(plain);
    close(e.fd);
    t_proxy_stop(pid);
}

Test(client_proxy, bad_frames_get_error, .timeout = 10)
{
    struct t_edge e = { 0 };
    int plain;
    pid_t pid = t_client_proxy(&e, 14, NULL, &plain);
    uint8_t buf[WIRE_RESUME_MAX];

    t_send_data(e.fd, 1, "clients do not get DATA");
    t_expect_error(e.fd, WIRE_ERR_UNEXPECTED, "DATA");
    t_expect_plain_eof(plain);
    close(plain);
    close(e.fd);
    t_proxy_stop(pid);

    pid = t_client_proxy(&e, 15, NULL, &plain);
    cr_assert_eq(t_write(e.fd, buf, wire_put_hello_edge(buf, 1, 1, (const uint8_t[WIRE_VERIFIER_LEN]){0}, NULL, 0)), 0);
    t_expect_error(e.fd, WIRE_ERR_UNEXPECTED, "HELLO");
    t_expect_plain_eof(plain);
    close(plain);
    close(e.fd);
    t_proxy_stop(pid);
}

Test(client_proxy, refused_session_closes_client, .timeout = 10)
{
    struct t_edge e;
    int plain;
    pid_t pid = t_client_proxy(&e, 16, "no capacity", &plain);

    t_expect_plain_eof(plain);
    close(plain);
    close(e.fd);
    t_proxy_stop(pid);
}

/* The plain client writes 32 MiB while the edge echoes each DATA as an OUT, reading one
 * frame and writing one at a time: only a proxy that never blocks one direction on the
 * other gets through. */
struct t_plain_pump {
    int fd;
    size_t total;
};

static void *t_plain_pump_main(void *arg)
{
    struct t_plain_pump *p = arg;
    static uint8_t buf[1 << 16];

    for (size_t off = 0; off < p->total; off += sizeof(buf)) {
        t_stream_fill(buf, off, sizeof(buf));
        if (t_write(p->fd, buf, sizeof(buf)) < 0)
            break;
    }
    return NULL;
}

Test(client_proxy, pipelined_both_ways, .timeout = 10)
{
    struct t_edge e = { 0 };
    struct t_plain_pump p = { .total = 32u << 20 };
    struct t_echo_edge x;
    pthread_t pump, edge;
    static uint8_t buf[1 << 16];
    size_t got = 0;
    pid_t pid = t_client_proxy(&e, 17, NULL, &p.fd);

    x.fd = e.fd;
    x.n = 1 << 30;
    pthread_create(&edge, NULL, t_echo_edge_main, &x);
    pthread_create(&pump, NULL, t_plain_pump_main, &p);
    while (got < p.total) {
        ssize_t n = recv(p.fd, buf, sizeof(buf), 0);
        cr_assert_gt(n, 0, "plain stream ended at %zu", got);
        t_stream_check(buf, got, (size_t)n);
        got += (size_t)n;
    }
    pthread_join(pump, NULL);
    shutdown(p.fd, SHUT_RDWR);
    shutdown(e.fd, SHUT_RDWR);
    pthread_join(edge, NULL);
    close(p.fd);
    close(e.fd);
    t_proxy_stop(pid);
}
