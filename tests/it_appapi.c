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

struct rec_arg {
    struct rec_server *r;
    struct cessna_ep *ep;
};

static void *rec_session(void *arg)
{
    struct rec_arg *a = arg;
    struct rec_server *r = a->r;
    const void *msg;
    long n;

    while ((n = cessna_ep_recv(a->ep, &msg)) >= 0) {
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
    snprintf(r->error, sizeof(r->error), "%s", cessna_ep_error(a->ep));
    pthread_mutex_unlock(&r->lock);
    cessna_ep_free(a->ep);
    free(a);
    return NULL;
}

/* What is kept is the newest session's (the tests that look at it run one at a time). */
static void *rec_accept(void *arg)
{
    struct rec_server *r = arg;
    char err[256];

    for (;;) {
        struct cessna_ep *ep = cessna_ep_accept(r->listen_fd, err, sizeof(err));
        if (!ep)
            continue;
        struct rec_arg *a = malloc(sizeof(*a));
        pthread_t t;
        pthread_mutex_lock(&r->lock);
        r->sessions++;
        r->len = 0;
        r->got[0] = 0;
        r->ended = 0;
        r->error[0] = 0;
        pthread_mutex_unlock(&r->lock);
        a->r = r;
        a->ep = ep;
        pthread_create(&t, NULL, rec_session, a);
        pthread_detach(t);
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
    static struct rec_server srv;   /* its threads outlive the test */
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
    static struct rec_server srv;   /* its threads outlive the test */
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
    cr_assert(strstr(line, "reason=\"app error 42: quota \\\"exceeded\\\" for you\""), "%s", line);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* A timer's callback closes: no later message reaches the app. */
Test(appapi, close_from_a_timer)
{
    static struct rec_server srv;   /* its threads outlive the test */
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
    static struct rec_server srv;   /* its threads outlive the test */
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
    static struct rec_server srv;   /* its threads outlive the test */
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
    cr_assert(strstr(line, "prog=cessna-supervisor "), "%s", line);
    cr_assert(strstr(line, " level=warn session="), "%s", line);
    cr_assert(strstr(line, " app=appapi msg=\"HOSTILE\\\" level=error session=1\\nts=forged "
                           "prog=cessna-supervisor msg=\\\"x\\r\\t\\x01\\\\ AAA"), "%s", line);
    cr_assert(strstr(line, "AAA\" truncated=1\n"), "cut, and says so: %s", line);
    cessna_ep_close(ep, 2000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* ---- through the proxies: plain TCP programs at both ends ---- */

/* A plain TCP server that keeps what it reads from its one connection and how it ended. */
struct tcp_rec {
    int lfd;
    char addr[64];
    char got[4096];
    volatile long len;
    volatile int end;       /* 1 EOF, 2 reset or error */
};

static void *tcp_rec_run(void *arg)
{
    struct tcp_rec *t = arg;
    int fd = accept(t->lfd, NULL, NULL);
    ssize_t n = -1;

    while (fd >= 0 && (n = read(fd, t->got + t->len, sizeof(t->got) - 1 - (size_t)t->len)) > 0)
        t->len += n;
    t->end = n == 0 ? 1 : 2;
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void tcp_rec_start(struct tcp_rec *t)
{
    char err[256];
    pthread_t th;

    memset(t, 0, sizeof(*t));
    t->lfd = addr_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(t->lfd >= 0, "listen: %s", err);
    snprintf(t->addr, sizeof(t->addr), "127.0.0.1:%d", addr_local_port(t->lfd));
    pthread_create(&th, NULL, tcp_rec_run, t);
    pthread_detach(th);
}

struct chain {
    struct t_proc sproxy, cproxy;
    struct t_edge edge;
    struct tcp_rec server;
};

static void chain_start(struct chain *c)
{
    const char *dir = t_tmpdir();

    tcp_rec_start(&c->server);
    char *sargv[] = { (char *)t_bin("cessna-server-proxy"), "--listen", "127.0.0.1:0",
                      "--target", c->server.addr, NULL };
    t_start(&c->sproxy, dir, "server-proxy", sargv);
    edge_with(&c->edge, c->sproxy.addr, NULL);
    char *cargv[] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0",
                      "--edge", c->edge.sup.addr, NULL };
    t_start(&c->cproxy, dir, "client-proxy", cargv);
}

static void chain_stop(struct chain *c)
{
    t_stop(&c->cproxy);
    t_edge_stop(&c->edge);
    t_stop(&c->sproxy);
}

static void tcp_expect(int fd, const char *want)
{
    char buf[256];
    size_t n = strlen(want);
    long got = t_read_n(fd, buf, n, 5000);

    cr_assert_eq(got, (long)n, "read %ld of %zu bytes (want '%s')", got, n, want);
    buf[n] = 0;
    cr_assert_str_eq(buf, want);
}

static void wait_log(const char *path, const char *needle)
{
    long deadline = t_now_ms() + 5000;
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "grep -qF -- '%s' %s", needle, path);
    while (system(cmd) != 0) {
        cr_assert(t_now_ms() < deadline, "no '%s' in %s", needle, path);
        usleep(20000);
    }
}

static void close_through_proxies(int code)
{
    static struct chain c;   /* its server thread outlives this function */
    char cmd[64];

    chain_start(&c);
    int fd = t_connect(c.cproxy.addr);
    t_write_all(fd, "M 1", 3);
    tcp_expect(fd, "R 1 n=1 greeting=-");
    snprintf(cmd, sizeof(cmd), "CLOSE %d over and out", code);
    t_write_all(fd, cmd, strlen(cmd));
    tcp_expect(fd, "BYEAGAIN -114");   /* two messages, one byte stream */
    t_expect_eof(fd, 5000, "the client proxy closes cleanly after the last output");
    close(fd);
    long deadline = t_now_ms() + 5000;
    while (!c.server.end && t_now_ms() < deadline)
        usleep(10000);
    cr_assert_eq(c.server.end, 1, "the server program sees a clean EOF");
    cr_assert_eq(c.server.len, 3, "and got its output first: %ld bytes", c.server.len);
    cr_assert(memcmp(c.server.got, "BYE", 3) == 0);
    if (code) {
        wait_log(c.cproxy.log, "text=\"app error 9: over and out\"");
        wait_log(c.sproxy.log, "text=\"app error 9: over and out\"");
    }
    chain_stop(&c);
}

Test(appapi, close_with_code_0_through_the_proxies)
{
    close_through_proxies(0);
}

Test(appapi, close_with_an_error_through_the_proxies)
{
    close_through_proxies(9);
}

/* ---- under worker kills ---- */

struct killer {
    const struct t_edge *e;
    uint64_t id;
    volatile int stop, kills;
    unsigned seed;
};

/* kill-worker at random moments, 3 to 25 ms apart */
static void *killer_run(void *arg)
{
    struct killer *k = arg;
    char cmd[64], out[256];

    snprintf(cmd, sizeof(cmd), "kill-worker %llu", (unsigned long long)k->id);
    while (!k->stop) {
        usleep(3000 + rand_r(&k->seed) % 22000);
        t_ctl(k->e, cmd, out, sizeof(out));
        if (strncmp(out, "ok", 2) == 0)
            k->kills++;
    }
    return NULL;
}

/* Every reply exactly as a run without faults gives it, and every log line once. */
static void log_once_under_kills(const char *extra)
{
    static struct rec_server srv;   /* its threads outlive the test */
    struct t_edge e;
    struct killer k = { .seed = 7 };
    pthread_t th;
    char cfg[300], want[128], needle[64];
    enum { N = 300 };

    rec_start(&srv);
    snprintf(cfg, sizeof(cfg), "%s\n[app]\ngreeting = hi\n", extra);
    edge_with(&e, srv.addr, cfg);
    struct cessna_ep *ep = t_ep_connect(&e);
    k.e = &e;
    k.id = cessna_ep_session_id(ep);
    pthread_create(&th, NULL, killer_run, &k);
    for (int i = 1; i <= N; i++) {
        char cmd[32];
        snprintf(cmd, sizeof(cmd), "M %d", i);
        snprintf(want, sizeof(want), "R %d n=%d greeting=hi", i, i);
        expect(ep, cmd, want);
        if (i % 50 == 0)
            usleep(30000);   /* time for snapshots between the kills */
    }
    k.stop = 1;
    pthread_join(th, NULL);
    cr_assert(k.kills >= 5, "only %d kills", k.kills);
    expect(ep, "M end", "R end n=301 greeting=hi");   /* the last lines are out */
    for (int i = 1; i <= N; i++) {
        snprintf(needle, sizeof(needle), "msg=\"got %d\"", i);
        int n = log_lines(&e, needle, NULL, 0);
        cr_assert_eq(n, 1, "'got %d' logged %d times (%d kills)", i, n, k.kills);
    }
    cr_assert_eq(log_lines(&e, "msg=\"debug ", NULL, 0), 0, "debug lines stay out at info");
    cessna_ep_close(ep, 2000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

Test(appapi, log_lines_once_under_kills_cold_standby)
{
    log_once_under_kills("standby = cold\nsnapshot_interval_ms = 20\n");
}

Test(appapi, log_lines_once_under_kills_hot_standby)
{
    log_once_under_kills("standby = hot\nsnapshot_interval_ms = 20\n");
}

Test(appapi, log_lines_once_under_kills_without_snapshots)
{
    log_once_under_kills("snapshot_interval_ms = 0\n");
}

/* The worker killed right around the close: the recovered one closes once, after the same
 * outputs, and nothing is lost or doubled. */
static void close_around_kills(const char *extra)
{
    static struct rec_server srv;   /* its threads outlive the test */
    struct t_edge e;
    char out[256], cmd[64], want[64], line[2048];
    unsigned seed = 11;
    int killed = 0, in_window = 0;

    rec_start(&srv);
    edge_with(&e, srv.addr, extra);
    for (int round = 0; round < 12; round++) {
        struct cessna_ep *ep = t_ep_connect(&e);
        uint64_t id = cessna_ep_session_id(ep);
        for (int i = 1; i <= 20; i++) {
            snprintf(cmd, sizeof(cmd), "M %d", i);
            snprintf(want, sizeof(want), "R %d n=%d greeting=-", i, i);
            expect(ep, cmd, want);
            if (i == 10)
                usleep(40000);   /* a snapshot in the middle */
        }
        /* even rounds: killed just before the close, whose event a new worker runs;
         * odd rounds: killed while shutdown() runs, after the close's outputs */
        char kill[64];
        snprintf(kill, sizeof(kill), "kill-worker %llu", (unsigned long long)id);
        if (round % 2 == 0) {
            t_ctl(&e, kill, out, sizeof(out));
            killed += strncmp(out, "ok", 2) == 0;
        }
        snprintf(cmd, sizeof(cmd), "%sCLOSE %d round %d", round % 2 ? "S" : "", round + 1,
                 round);
        send_str(ep, cmd);
        if (round % 2) {
            usleep(1000 + rand_r(&seed) % 6000);
            t_ctl(&e, kill, out, sizeof(out));
            killed += strncmp(out, "ok", 2) == 0;
        }
        cr_assert_str_eq(recv_str(ep), "BYE");
        cr_assert_str_eq(recv_str(ep), "AGAIN -114");
        const void *msg;
        long n = cessna_ep_recv(ep, &msg);
        cr_assert_eq(n, -ECONNABORTED, "round %d: got %ld, not the ERROR", round, n);
        snprintf(want, sizeof(want), "app error %d: round %d", round + 1, round);
        cr_assert(strstr(cessna_ep_error(ep), want), "%s", cessna_ep_error(ep));
        cr_assert_eq(rec_wait_end(&srv, 5000), 2, "round %d: the server's end", round);
        cr_assert_str_eq(srv.got, "BYE\n", "round %d: the server got BYE once", round);
        session_end_line(&e, id, line, sizeof(line));
        cr_assert(strstr(line, " end=app_error"), "%s", line);
        in_window += round % 2 && t_field(line, "recoveries") > 0;
        cessna_ep_free(ep);
    }
    cr_assert(killed >= 8, "only %d kills landed before the end", killed);
    cr_assert(in_window >= 2, "only %d kills landed between the close and the end", in_window);
    t_edge_stop(&e);
}

Test(appapi, close_survives_a_kill_around_it_cold)
{
    close_around_kills("standby = cold\nsnapshot_interval_ms = 20\n");
}

Test(appapi, close_survives_a_kill_around_it_hot)
{
    close_around_kills("standby = hot\nsnapshot_interval_ms = 20\n");
}

Test(appapi, close_survives_a_kill_around_it_without_snapshots)
{
    close_around_kills("snapshot_interval_ms = 0\n");
}

/* ---- [app] across recovery and reload ---- */

static void write_config(const struct t_edge *e, const char *greeting, const char *level)
{
    char path[300];
    FILE *f;

    snprintf(path, sizeof(path), "%s/edge.ini", e->dir);
    /* keep [edge] as t_edge_start wrote it: only what follows [app] changes */
    char *text = NULL;
    size_t cap = 0;
    f = fopen(path, "r");
    cr_assert(f);
    ssize_t n = getdelim(&text, &cap, 0, f);
    fclose(f);
    cr_assert(n > 0);
    char *app = strstr(text, "\n[app]");
    if (app)
        *app = 0;
    /* a level given replaces the one an earlier call wrote (a key twice is an error) */
    char *old = level ? strstr(text, "\nlog_level = ") : NULL;
    if (old) {
        char *end = strchr(old + 1, '\n');
        memmove(old, end ? end : old + strlen(old), strlen(end ? end : old + strlen(old)) + 1);
    }
    f = fopen(path, "w");
    fprintf(f, "%s\n%s%s\n[app]\ngreeting = %s\n", text, level ? "log_level = " : "",
            level ? level : "", greeting);
    fclose(f);
    free(text);
}

static void kill_worker(const struct t_edge *e, uint64_t id)
{
    char cmd[64], out[256];

    snprintf(cmd, sizeof(cmd), "kill-worker %llu", (unsigned long long)id);
    t_ctl(e, cmd, out, sizeof(out));
    cr_assert(strncmp(out, "ok", 2) == 0, "%s", out);
}

static void config_across_reload(const char *extra)
{
    static struct rec_server srv;   /* its threads outlive the test */
    struct t_edge e;
    char cfg[300];

    rec_start(&srv);
    snprintf(cfg, sizeof(cfg), "%s\n[app]\ngreeting = one\n", extra);
    edge_with(&e, srv.addr, cfg);
    struct cessna_ep *a = t_ep_connect(&e);
    uint64_t ida = cessna_ep_session_id(a);
    expect(a, "M 1", "R 1 n=1 greeting=one");
    usleep(50000);   /* a snapshot, where they are on */
    kill_worker(&e, ida);
    expect(a, "M 2", "R 2 n=2 greeting=one");

    write_config(&e, "two", "debug");
    kill(e.sup.pid, SIGHUP);
    wait_log(e.sup.log, "reload: [app] changed");
    wait_log(e.sup.log, "applied=\"log_level\"");

    /* the running session keeps its values, through a recovery too */
    kill_worker(&e, ida);
    expect(a, "M 3", "R 3 n=3 greeting=one");
    expect(a, "CFG greeting", "CFG greeting=one");
    /* and the new level reaches its worker */
    wait_log(e.sup.log, "msg=\"debug 3\"");

    struct cessna_ep *b = t_ep_connect(&e);
    uint64_t idb = cessna_ep_session_id(b);
    expect(b, "M 1", "R 1 n=1 greeting=two");
    usleep(50000);
    kill_worker(&e, idb);
    expect(b, "M 2", "R 2 n=2 greeting=two");
    kill_worker(&e, ida);
    expect(a, "M 4", "R 4 n=5 greeting=one");
    cessna_ep_close(a, 2000);
    cessna_ep_close(b, 2000);
    cessna_ep_free(a);
    cessna_ep_free(b);
    t_edge_stop(&e);
}

Test(appapi, config_kept_across_recovery_and_reload)
{
    config_across_reload("snapshot_interval_ms = 20\n");
}

Test(appapi, config_kept_across_recovery_and_reload_without_snapshots)
{
    config_across_reload("snapshot_interval_ms = 0\n");
}

/* ---- remote recovery: the session's [app] values on an edge whose [app] differs ---- */

#define REDGES 3


struct rworld {
    const char *dir;
    char secret[300], store[300], edges[256], server_addr[64];
    struct cessna_ep_server *srv;
    struct t_proc edge[REDGES];
    int port[REDGES];
};

static void *rworld_session(void *p)
{
    struct cessna_ep *ep = p;
    const void *msg;

    while (cessna_ep_recv(ep, &msg) >= 0)
        ;   /* the app sends the server nothing in these tests */
    cessna_ep_free(ep);
    return NULL;
}

/* Accepting also serves the resumes of its sessions: it must keep going. */
static void *rworld_accept(void *p)
{
    struct rworld *w = p;
    char err[512];

    for (;;) {
        struct cessna_ep *ep = cessna_ep_server_accept(w->srv, err, sizeof(err));
        pthread_t th;
        if (!ep)
            continue;
        pthread_create(&th, NULL, rworld_session, ep);
        pthread_detach(th);
    }
    return NULL;
}

static void rworld_start(struct rworld *w, int snapshot_ms, const char *const greeting[REDGES])
{
    char err[512];
    pthread_t th;
    FILE *f;
    int lfd;

    memset(w, 0, sizeof(*w));
    signal(SIGPIPE, SIG_IGN);   /* endpoints write to edges that are killed */
    w->dir = t_tmpdir();
    snprintf(w->secret, sizeof(w->secret), "%s/edge.secret", w->dir);
    f = fopen(w->secret, "w");
    fprintf(f, "the-edges-secret\n");
    fclose(f);
    chmod(w->secret, 0600);
    snprintf(w->store, sizeof(w->store), "%s/store", w->dir);
    lfd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(lfd >= 0, "%s", err);
    snprintf(w->server_addr, sizeof(w->server_addr), "127.0.0.1:%d", addr_local_port(lfd));
    w->srv = cessna_ep_server_new(lfd, w->store, w->secret, err, sizeof(err));
    cr_assert_not_null(w->srv, "%s", err);
    pthread_create(&th, NULL, rworld_accept, w);
    pthread_detach(th);
    for (int i = 0; i < REDGES; i++) {
        char cfg[400], name[32];
        int pfd = addr_listen("127.0.0.1:0", err, sizeof(err));
        w->port[i] = addr_local_port(pfd);
        close(pfd);
        snprintf(cfg, sizeof(cfg), "%s/edge%d.ini", w->dir, i);
        f = fopen(cfg, "w");
        fprintf(f, "[edge]\nlisten = 127.0.0.1:%d\nserver = %s\napp = %s\n"
                   "state_dir = %s/edge%d\ncontrol = %s/edge%d.sock\n"
                   "snapshot_interval_ms = %d\nheartbeat_interval_ms = 100\n"
                   "edge_secret_file = %s\n[app]\ngreeting = %s\n",
                w->port[i], w->server_addr, t_test_app("appapi"), w->dir, i, w->dir, i,
                snapshot_ms, w->secret, greeting[i]);
        fclose(f);
        snprintf(name, sizeof(name), "edge%d", i);
        char *argv[] = { "/usr/bin/setsid", (char *)t_bin("cessna-supervisor"), "-c", cfg, NULL };
        t_start(&w->edge[i], w->dir, name, argv);
        snprintf(w->edges + strlen(w->edges), sizeof(w->edges) - strlen(w->edges),
                 "%s127.0.0.1:%d", i ? "," : "", w->port[i]);
    }
}

static void rworld_stop(struct rworld *w)
{
    for (int i = 0; i < REDGES; i++) {
        if (w->edge[i].pid > 0)   /* 0 once stopped: kill(0) would be our own group */
            kill(-w->edge[i].pid, SIGKILL);
        t_stop(&w->edge[i]);
    }
}

static int count_in(const char *path, const char *needle)
{
    struct t_edge e;

    snprintf(e.sup.log, sizeof(e.sup.log), "%s", path);
    return log_lines(&e, needle, NULL, 0);
}

/* Edge 0 holds the session and is lost with its node; the client resumes on the next edge
 * that can take it. Returns the edge that did. */
static int lose_edge0(struct rworld *w, struct cessna_ep *ep, int snapshots)
{
    char want[64], needle[64];

    for (int i = 1; i <= 5; i++) {
        char cmd[16];
        snprintf(cmd, sizeof(cmd), "M %d", i);
        snprintf(want, sizeof(want), "R %d n=%d greeting=one", i, i);
        expect(ep, cmd, want);
    }
    /* Snapshots shipped, where they are on (then one reaches the server's store): the
     * client endpoint answers the edge's RECEIPT only while it reads. */
    char stored[400];
    snprintf(stored, sizeof(stored), "test -n \"$(ls %s/%llu 2>/dev/null | grep -v tmp)\"",
             w->store, (unsigned long long)cessna_ep_session_id(ep));
    cessna_ep_set_nonblocking(ep, 1);
    for (long end = t_now_ms() + (snapshots ? 15000 : 500); t_now_ms() < end;) {
        const void *msg;
        long n = cessna_ep_recv(ep, &msg);
        cr_assert(n == -EAGAIN, "nothing to read now: %ld", n);
        struct pollfd p = { cessna_ep_fd(ep), POLLIN, 0 };
        poll(&p, 1, 20);
        if (snapshots && system(stored) == 0)
            break;
    }
    cessna_ep_set_nonblocking(ep, 0);
    cr_assert(!snapshots || system(stored) == 0, "no snapshot reached %s", w->store);
    kill(-w->edge[0].pid, SIGKILL);
    t_stop(&w->edge[0]);
    expect(ep, "M 6", "R 6 n=6 greeting=one");
    expect(ep, "CFG greeting", "CFG greeting=one");
    for (int i = 1; i <= 2; i++) {
        snprintf(needle, sizeof(needle), "msg=\"got 6\"");
        if (count_in(w->edge[i].log, needle) == 1) {
            for (int k = 1; k <= 5; k++) {
                snprintf(needle, sizeof(needle), "msg=\"got %d\"", k);
                cr_assert_eq(count_in(w->edge[0].log, needle), 1, "edge 0 logged %s", needle);
                cr_assert_eq(count_in(w->edge[i].log, needle), 0,
                             "edge %d replayed %s quietly", i, needle);
            }
            return i;
        }
    }
    cr_assert_fail("no edge logged the event after the resume");
    return -1;
}

/* No snapshot left the node: the next edge would rebuild the session from its start with
 * other [app] values, and refuses; the one after has the same values and takes it. */
Test(appapi, remote_rebuild_from_the_start_needs_the_same_app_values, .timeout = 90)
{
    static const char *const greeting[REDGES] = { "one", "other", "one" };
    static struct rworld w;   /* its threads outlive this function */
    char err[512];

    rworld_start(&w, 0, greeting);
    struct cessna_ep *ep = cessna_ep_connect(w.edges, err, sizeof(err));
    cr_assert_not_null(ep, "%s", err);
    cessna_ep_set_heartbeat(ep, 400);
    cessna_ep_set_resume_timeout(ep, 30000);
    cr_assert_eq(lose_edge0(&w, ep, 0), 2, "edge 2 took it");
    cr_assert_eq(count_in(w.edge[1].log, "the session started with other [app] values"), 1,
                 "edge 1 refused it");
    cessna_ep_close(ep, 2000);
    cessna_ep_free(ep);
    rworld_stop(&w);
}

/* A snapshot left the node: the values come with it, whatever the next edge's [app]. */
Test(appapi, remote_recovery_from_a_snapshot_keeps_the_app_values, .timeout = 90)
{
    static const char *const greeting[REDGES] = { "one", "other", "other" };
    static struct rworld w;
    char err[512];

    rworld_start(&w, 50, greeting);
    struct cessna_ep *ep = cessna_ep_connect(w.edges, err, sizeof(err));
    cr_assert_not_null(ep, "%s", err);
    cessna_ep_set_heartbeat(ep, 400);
    cessna_ep_set_resume_timeout(ep, 30000);
    cr_assert_eq(lose_edge0(&w, ep, 1), 1, "edge 1 took it");
    cessna_ep_close(ep, 2000);
    cessna_ep_free(ep);
    rworld_stop(&w);
}

/* ---- cessna-supervisor --check ---- */

/* --check on [edge] plus `app_section`: its exit status; its output in out. */
static int check_config(const char *app_section, char *out, size_t len)
{
    const char *dir = t_tmpdir();
    char cfg[300], cmd[1200];
    FILE *f;

    snprintf(cfg, sizeof(cfg), "%s/edge.ini", dir);
    f = fopen(cfg, "w");
    fprintf(f, "[edge]\nlisten = 127.0.0.1:0\nserver = 127.0.0.1:1\napp = %s\nstate_dir = %s/s\n"
               "%s", t_test_app("appapi"), dir, app_section);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "%s -c %s --check > %s/out 2>&1", t_bin("cessna-supervisor"),
             cfg, dir);
    int st = system(cmd);
    snprintf(cmd, sizeof(cmd), "%s/out", dir);
    f = fopen(cmd, "r");
    size_t n = f ? fread(out, 1, len - 1, f) : 0;
    out[n] = 0;
    if (f)
        fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(appapi, check_validates_the_app_section)
{
    char out[1024];

    cr_assert_eq(check_config("[app]\ngreeting = hi\nlimit = 5\n", out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, ": ok"), "%s", out);
    cr_assert_eq(check_config("[app]\nbad key = 1\n", out, sizeof(out)), 2, "%s", out);
    cr_assert(strstr(out, "edge.ini:7: bad [app] key 'bad key'"), "%s", out);
    cr_assert_eq(check_config("[app]\nx = 1\nx = 2\n", out, sizeof(out)), 2, "%s", out);
    cr_assert(strstr(out, "edge.ini:8: key 'x' given twice in [app]"), "%s", out);
}

/* ---- cessna-replay ---- */

/* Offline, the session's [app] values come from its log (or snapshot), whatever the file
 * says now, and its log lines go to stderr marked replay=1. */
Test(appapi, cessna_replay_has_the_values_and_marks_the_lines)
{
    static struct rec_server srv;
    struct t_edge e;
    char cmd[64], out[4096], path[400];

    rec_start(&srv);
    edge_with(&e, srv.addr, "snapshot_interval_ms = 0\n[app]\ngreeting = kept\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    expect(ep, "M 1", "R 1 n=1 greeting=kept");
    expect(ep, "LOGCFG", "LOGGED");
    snprintf(cmd, sizeof(cmd), "log %llu", (unsigned long long)id);
    t_ctl(&e, cmd, out, sizeof(out));
    cr_assert(!strncmp(out, "ok log of session", 17), "%s", out);

    char state[300], sid[32];
    int fd;
    snprintf(state, sizeof(state), "%s/state", e.dir);
    snprintf(sid, sizeof(sid), "%llu", (unsigned long long)id);
    char *argv[] = { (char *)t_bin("cessna-replay"), "--app", (char *)t_test_app("appapi"),
                     "--state-dir", state, "--session", sid, NULL };
    pid_t pid = t_start_raw(e.dir, "replay", argv, &fd);
    memset(out, 0, sizeof(out));
    t_read_n(fd, out, sizeof(out) - 1, 20000);
    int status = t_wait(pid, 20000);
    close(fd);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s", out);
    cr_assert(strstr(out, "without a crash"), "%s", out);
    snprintf(path, sizeof(path), "%s/replay.log", e.dir);
    cr_assert_eq(count_in(path, "msg=\"cfg greeting=kept\" replay=1"), 1, "see %s", path);
    cr_assert_eq(count_in(path, "msg=\"got 1\" replay=1"), 1, "see %s", path);
    cr_assert_eq(count_in(e.sup.log, "msg=\"cfg greeting=kept\""), 1, "once at the edge");
    cessna_ep_close(ep, 2000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* An app can refuse a session from init(): the client gets what it sent, then the ERROR. */
Test(appapi, close_from_init_refuses_the_session)
{
    static struct rec_server srv;
    struct t_edge e;
    char line[2048];

    rec_start(&srv);
    edge_with(&e, srv.addr, "[app]\nrefuse = 403\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    cr_assert_str_eq(recv_str(ep), "NO");
    const void *msg;
    long n = cessna_ep_recv(ep, &msg);
    cr_assert_eq(n, -ECONNABORTED, "got %ld", n);
    cr_assert(strstr(cessna_ep_error(ep), "app error 403: refused at init"), "%s",
              cessna_ep_error(ep));
    session_end_line(&e, id, line, sizeof(line));
    cr_assert(strstr(line, " end=app_error"), "%s", line);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* A session that hibernated wakes with its values, and logs each line once. */
Test(appapi, values_and_log_lines_across_hibernation)
{
    static struct rec_server srv;
    struct t_edge e;
    char out[4096], cmd[64];

    rec_start(&srv);
    edge_with(&e, srv.addr, "hibernate_after_ms = 100\n[app]\ngreeting = sleepy\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    expect(ep, "M 1", "R 1 n=1 greeting=sleepy");
    snprintf(cmd, sizeof(cmd), "session=%llu", (unsigned long long)id);
    long deadline = t_now_ms() + 5000;
    do {
        usleep(50000);
        t_ctl(&e, "sessions", out, sizeof(out));
    } while (!strstr(out, "hibernated") && t_now_ms() < deadline);
    cr_assert(strstr(out, "hibernated"), "the session never slept: %s", out);
    expect(ep, "M 2", "R 2 n=2 greeting=sleepy");
    expect(ep, "CFG greeting", "CFG greeting=sleepy");
    cr_assert_eq(log_lines(&e, "msg=\"got 1\"", NULL, 0), 1);
    cr_assert_eq(log_lines(&e, "msg=\"got 2\"", NULL, 0), 1);
    cessna_ep_close(ep, 2000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* A reload's log_level reaches a worker that is already running (no recovery, no new
 * worker): it reads the node's level page. */
Test(appapi, reloaded_log_level_reaches_a_running_worker)
{
    static struct rec_server srv;   /* its threads outlive the test */
    struct t_edge e;
    char line[4096];

    rec_start(&srv);
    edge_with(&e, srv.addr, "snapshot_interval_ms = 0\n[app]\ngreeting = one\n");
    struct cessna_ep *a = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(a);
    expect(a, "M 1", "R 1 n=1 greeting=one");
    uint64_t pid = t_session_field(&e, id, "worker");
    cr_assert_gt(pid, 0);
    wait_log(e.sup.log, "msg=\"got 1\"");
    cr_assert_eq(log_lines(&e, "msg=\"debug 1\"", line, sizeof(line)), 0,
                 "a debug line at level info: %s", line);

    write_config(&e, "one", "debug");
    kill(e.sup.pid, SIGHUP);
    wait_log(e.sup.log, "applied=\"log_level\"");
    expect(a, "M 2", "R 2 n=2 greeting=one");
    wait_log(e.sup.log, "msg=\"debug 2\"");
    cr_expect_eq(t_session_field(&e, id, "worker"), pid, "the same worker, not a new one");

    write_config(&e, "one", "warn");
    kill(e.sup.pid, SIGHUP);
    usleep(300 * 1000);   /* at warn the reload's own info line is not written either */
    expect(a, "M 3", "R 3 n=3 greeting=one");
    expect(a, "M 4", "R 4 n=4 greeting=one");
    usleep(200 * 1000);
    cr_expect_eq(log_lines(&e, "msg=\"got 4\"", line, sizeof(line)), 0,
                 "an info line at level warn: %s", line);
    cessna_ep_close(a, 2000);
    cessna_ep_free(a);
    t_edge_stop(&e);
}
