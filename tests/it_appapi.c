/* it_appapi.c - cessna_close_session, cessna_config and cessna_log (include/cessna.h)
 * through real edges, native endpoints and the proxies, with workers killed at random
 * moments (tests/apps/appapi.c is the app). */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "t_helpers.h"

TestSuite(appapi, .timeout = 120);

/* ---- a native server endpoint that keeps what it gets ---- */

struct rec_server {
    int listen_fd;
    char addr[64];
    pthread_mutex_t lock;
    char got[8192];         /* every message, one per line */
    size_t len;
    int sessions, ended;    /* ended: 1 CLOSE, 2 error */
    char error[600];
};

static void *rec_session(void *arg)
{
    struct rec_server *r = arg;
    char err[256];
    struct cessna_ep *ep = cessna_ep_accept(r->listen_fd, err, sizeof(err));
    const void *msg;
    long n;

    if (!ep)
        return NULL;
    while ((n = cessna_ep_recv(ep, &msg)) >= 0) {
        pthread_mutex_lock(&r->lock);
        if (r->len + (size_t)n + 2 < sizeof(r->got)) {
            memcpy(r->got + r->len, msg, (size_t)n);
            r->len += (size_t)n;
            r->got[r->len++] = '\n';
            r->got[r->len] = 0;
        }
        pthread_mutex_unlock(&r->lock);
    }
    pthread_mutex_lock(&r->lock);
    r->ended = n == CESSNA_EP_CLOSED ? 1 : 2;
    snprintf(r->error, sizeof(r->error), "%s", cessna_ep_error(ep));
    pthread_mutex_unlock(&r->lock);
    cessna_ep_free(ep);
    return NULL;
}

/* Serves one session at a time (the tests open them one after the other). */
static void *rec_accept(void *arg)
{
    struct rec_server *r = arg;

    for (;;) {
        struct pollfd p = { r->listen_fd, POLLIN, 0 };
        if (poll(&p, 1, -1) <= 0)
            continue;
        pthread_mutex_lock(&r->lock);
        r->sessions++;
        r->len = 0;
        r->got[0] = 0;
        r->ended = 0;
        r->error[0] = 0;
        pthread_mutex_unlock(&r->lock);
        rec_session(r);
    }
    return NULL;
}

static void rec_start(struct rec_server *r)
{
    char err[256];
    pthread_t t;

    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    r->listen_fd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(r->listen_fd >= 0, "cessna_ep_listen: %s", err);
    snprintf(r->addr, sizeof(r->addr), "127.0.0.1:%d", addr_local_port(r->listen_fd));
    pthread_create(&t, NULL, rec_accept, r);
    pthread_detach(t);
}

/* Wait until the server's session ended; returns how (1 CLOSE, 2 error, 0 not yet). */
static int rec_wait_end(struct rec_server *r, int timeout_ms)
{
    long deadline = t_now_ms() + timeout_ms;
    int ended;

    do {
        pthread_mutex_lock(&r->lock);
        ended = r->ended;
        pthread_mutex_unlock(&r->lock);
        if (ended)
            return ended;
        usleep(5000);
    } while (t_now_ms() < deadline);
    return 0;
}

/* ---- the client side ---- */

static void send_str(struct cessna_ep *ep, const char *s)
{
    cr_assert_eq(cessna_ep_send(ep, s, strlen(s)), 0, "send %s: %s", s, cessna_ep_error(ep));
}

/* The next message as a string; the test stops on an end. */
static const char *recv_str(struct cessna_ep *ep)
{
    static char buf[4096];
    const void *msg;
    long n = cessna_ep_recv(ep, &msg);

    cr_assert(n >= 0, "recv: %ld %s", n, cessna_ep_error(ep));
    if ((size_t)n >= sizeof(buf))
        n = sizeof(buf) - 1;
    memcpy(buf, msg, (size_t)n);
    buf[n] = 0;
    return buf;
}

static void expect(struct cessna_ep *ep, const char *cmd, const char *want)
{
    send_str(ep, cmd);
    const char *got = recv_str(ep);
    cr_assert_str_eq(got, want, "%s: got '%s', want '%s'", cmd, got, want);
}

/* An edge running the test app toward srv; extra: more config (after [edge]'s keys). */
static void edge_with(struct t_edge *e, const char *server, const char *extra)
{
    t_edge_start(e, t_test_app("appapi"), server, extra);
}

static void session_end_line(const struct t_edge *e, uint64_t id, char *line, size_t len)
{
    char pat[64];
    long deadline = t_now_ms() + 5000;

    snprintf(pat, sizeof(pat), "session_end session=%llu ", (unsigned long long)id);
    line[0] = 0;
    do {
        FILE *f = fopen(e->sup.log, "r");
        char l[2048];
        while (f && fgets(l, sizeof(l), f))
            if (strstr(l, pat))
                snprintf(line, len, "%s", l);
        if (f)
            fclose(f);
        if (line[0])
            return;
        usleep(20000);
    } while (t_now_ms() < deadline);
    cr_assert_fail("no session_end line for session %llu in %s", (unsigned long long)id,
                   e->sup.log);
}

/* ---- closing ---- */

Test(appapi, close_with_code_0_through_native_endpoints)
{
    struct rec_server srv;
    struct t_edge e;
    char line[2048];

    rec_start(&srv);
    edge_with(&e, srv.addr, NULL);
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    expect(ep, "M 1", "R 1 n=1 greeting=-");
    send_str(ep, "CLOSE 0 all done");
    cr_assert_str_eq(recv_str(ep), "BYE", "the outputs before the close come first");
    cr_assert_str_eq(recv_str(ep), "AGAIN -114", "a second close is -EALREADY");
    const void *msg;
    long n = cessna_ep_recv(ep, &msg);
    cr_assert_eq(n, CESSNA_EP_CLOSED, "then CLOSE: got %ld (%s)", n, cessna_ep_error(ep));
    cr_assert_eq(rec_wait_end(&srv, 5000), 1, "the server endpoint got CLOSE: %s", srv.error);
    cr_assert_str_eq(srv.got, "BYE\n", "the server got its output before the CLOSE");
    session_end_line(&e, id, line, sizeof(line));
    cr_assert(strstr(line, " end=app_close"), "%s", line);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

Test(appapi, close_with_an_error_through_native_endpoints)
{
    struct rec_server srv;
    struct t_edge e;
    char line[2048];

    rec_start(&srv);
    edge_with(&e, srv.addr, NULL);
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    expect(ep, "M 1", "R 1 n=1 greeting=-");
    send_str(ep, "CLOSE 42 quota \"exceeded\"\nfor you");
    cr_assert_str_eq(recv_str(ep), "BYE");
    cr_assert_str_eq(recv_str(ep), "AGAIN -114");
    const void *msg;
    long n = cessna_ep_recv(ep, &msg);
    cr_assert_eq(n, -ECONNABORTED, "an ERROR ends it: got %ld", n);
    cr_assert(strstr(cessna_ep_error(ep), "app error 42: quota \"exceeded\" for you"),
              "the client's error names the app's text: %s", cessna_ep_error(ep));
    cr_assert_eq(rec_wait_end(&srv, 5000), 2, "the server endpoint got an ERROR");
    cr_assert(strstr(srv.error, "app error 42: quota"), "server: %s", srv.error);
    cr_assert_str_eq(srv.got, "BYE\n");
    session_end_line(&e, id, line, sizeof(line));
    cr_assert(strstr(line, " end=app_error"), "%s", line);
    cr_assert(strstr(line, "reason=\"app error 42: quota 'exceeded' for you\""), "%s", line);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* A timer's callback closes: no later message reaches the app. */
Test(appapi, close_from_a_timer)
{
    struct rec_server srv;
    struct t_edge e;

    rec_start(&srv);
    edge_with(&e, srv.addr, NULL);
    struct cessna_ep *ep = t_ep_connect(&e);
    expect(ep, "TCLOSE 50 3", "ARMED 50");
    cr_assert_str_eq(recv_str(ep), "BYE");
    const void *msg;
    long n = cessna_ep_recv(ep, &msg);
    cr_assert_eq(n, -ECONNABORTED, "got %ld", n);
    cr_assert(strstr(cessna_ep_error(ep), "app error 3: timer"), "%s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* ---- [app] values ---- */

Test(appapi, config_values_from_the_app_section)
{
    struct rec_server srv;
    struct t_edge e;

    rec_start(&srv);
    edge_with(&e, srv.addr, "\n[app]\ngreeting = hello world\nlimit = -42\nnot_int = 12x\n"
                            "long = first part\n   second part\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    expect(ep, "M 1", "R 1 n=1 greeting=hello world");
    expect(ep, "CFG greeting", "CFG greeting=hello world");
    expect(ep, "CFG long", "CFG long=first part\nsecond part");
    expect(ep, "CFG nothing", "CFG nothing absent");
    expect(ep, "INT limit", "INT limit=-42");
    expect(ep, "INT not_int", "INT not_int=-1");
    expect(ep, "INT nothing", "INT nothing=-1");
    cessna_ep_close(ep, 2000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* ---- log lines ---- */

/* The lines of the supervisor's log (workers write to the same stderr) with needle. */
static int log_lines(const struct t_edge *e, const char *needle, char *last, size_t len)
{
    FILE *f = fopen(e->sup.log, "r");
    char *l = NULL;
    size_t cap = 0;
    int n = 0;

    while (f && getline(&l, &cap, f) > 0) {
        if (strstr(l, needle)) {
            n++;
            if (last)
                snprintf(last, len, "%s", l);
        }
    }
    free(l);
    if (f)
        fclose(f);
    return n;
}

Test(appapi, a_hostile_log_line_stays_one_bounded_line)
{
    struct rec_server srv;
    struct t_edge e;
    char line[4096], cmd[12000];

    rec_start(&srv);
    edge_with(&e, srv.addr, NULL);
    struct cessna_ep *ep = t_ep_connect(&e);
    /* forged fields, a quote that would end msg, newlines that would start lines, a NUL
     * stand-in (\x01) and 10 KB */
    int n = snprintf(cmd, sizeof(cmd), "LOG HOSTILE\" level=error session=1\nts=forged "
                     "prog=cessna-supervisor msg=\"x\r\t\x01\\ ");
    memset(cmd + n, 'A', 10000);
    cmd[n + 10000] = 0;
    expect(ep, cmd, "LOGGED");
    expect(ep, "M 1", "R 1 n=2 greeting=-");   /* logged after it: the line is out */
    cr_assert_eq(log_lines(&e, "HOSTILE", line, sizeof(line)), 1, "one line");
    cr_assert_eq(log_lines(&e, "ts=forged", NULL, 0), 1, "the newline did not start a line");
    cr_assert(strlen(line) <= 1024, "bounded: %zu bytes", strlen(line));
    cr_assert(strstr(line, "prog=cessna-worker "), "%s", line);
    cr_assert(strstr(line, " level=warn session="), "%s", line);
    cr_assert(strstr(line, " app=appapi msg=\"HOSTILE\\\" level=error session=1\\nts=forged "
                           "prog=cessna-supervisor msg=\\\"x\\r\\t\\x01\\\\ AAA"), "%s", line);
    cr_assert(strstr(line, "AAA\" truncated=1\n"), "cut, and says so: %s", line);
    cessna_ep_close(ep, 2000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}
