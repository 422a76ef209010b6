/* it_apps_iotagg.c - apps/iotagg.c under faults (suite iotagg).
 *
 * A native client (libcessna-endpoint: one message is one message) plays a gateway: batches
 * of readings from a fixed seed (tests/t_iotagg.h), many sensors, spikes above the alert
 * limit, sensors appearing for one batch that fill the table (refusals) and age out. A
 * native server that stores snapshots records every message and acknowledges each window
 * report; the app passes the ACK to the client, which sends the next batch only then, so
 * window N holds exactly batch N whatever the timing.
 *
 * A run without faults, then runs with the session's worker SIGKILLed at random moments,
 * right after each batch went out (its window timer pending) and right after alerts
 * arrive, cold and hot; and a run whose edge nodes are killed whole (right after a batch
 * and after alerts) so that the session resumes at the other edge. Each run must be what
 * the model in t_iotagg.h works out from the readings sent (count, min, max, mean exactly,
 * percentiles within the histogram's 1/32, alerts and refusals exactly), and every byte
 * either side got must equal the run without faults. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "t_iotagg.h"

#define BATCHES   12
#define WINDOW_MS 300   /* a batch must be sent within it: room for a loaded machine */
#define SEED      20261201
#define EDGES_MAX 2

TestSuite(iotagg, .timeout = 120);

struct transcript {
    char *buf;
    size_t len, cap;
};

static void keep(struct transcript *t, const void *data, size_t len)
{
    if (t->len + len + 2 > t->cap) {
        t->cap = (t->len + len + 2) * 2;
        t->buf = realloc(t->buf, t->cap);
    }
    memcpy(t->buf + t->len, data, len);
    t->len += len;
    t->buf[t->len++] = IOT_SEP;
    t->buf[t->len] = 0;
}

enum fault { NONE, WORKER_KILLS, EDGE_KILLS };

struct run {
    const char *dir, *standby;
    enum fault fault;
    int nedges, lfd;
    char server_addr[64], edges[256];
    struct cessna_ep_server *srv;
    struct t_proc edge[EDGES_MAX];
    int port[EDGES_MAX], restarts[EDGES_MAX];
    pthread_mutex_t lock;
    struct transcript client, server;
    struct cessna_ep *server_ep;
    volatile int server_done, stop;
    char server_why[300];
    uint64_t session;
    volatile int kills;            /* faults that landed */
};

/* ---- the server: records every message, answers "ACK N" to window N ---- */

static void *server_session(void *p)
{
    struct run *r = p;
    struct cessna_ep *ep = r->server_ep;

    for (;;) {
        const void *data;
        long n = cessna_ep_recv(ep, &data);
        if (n < 0) {
            if (n != CESSNA_EP_CLOSED)
                snprintf(r->server_why, sizeof(r->server_why), "server recv: %ld %s", n,
                         cessna_ep_error(ep));
            break;
        }
        pthread_mutex_lock(&r->lock);
        keep(&r->server, data, (size_t)n);
        pthread_mutex_unlock(&r->lock);
        char head[32], ack[32];
        unsigned window;
        snprintf(head, sizeof(head), "%.*s", (int)(n < 31 ? n : 31), (const char *)data);
        if (sscanf(head, "window %u ", &window) == 1) {
            int len = snprintf(ack, sizeof(ack), "ACK %u", window);
            if (cessna_ep_send(ep, ack, (size_t)len) < 0) {
                snprintf(r->server_why, sizeof(r->server_why), "server send: %s",
                         cessna_ep_error(ep));
                break;
            }
        }
    }
    r->server_done = 1;
    return NULL;
}

/* The session, then the edges' RESUMEs of it: cessna_ep_server_accept handles those inside,
 * so it is called for as long as the process lives. */
static void *server_accept(void *p)
{
    struct run *r = p;
    char err[300];

    for (;;) {
        struct cessna_ep *ep = cessna_ep_server_accept(r->srv, err, sizeof(err));
        if (ep && !r->server_ep) {
            pthread_t th;
            r->server_ep = ep;
            pthread_create(&th, NULL, server_session, r);
            pthread_detach(th);
        }
    }
    return NULL;
}

/* A fresh run with its server endpoint listening (store: where it keeps the snapshots edges
 * ship, NULL: in memory) and its accept loop on a thread of its own. */
static void server_start(struct run *r, const char *store)
{
    char err[300];
    pthread_t th;

    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    r->lfd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(r->lfd >= 0, "%s", err);
    snprintf(r->server_addr, sizeof(r->server_addr), "127.0.0.1:%d", addr_local_port(r->lfd));
    r->srv = cessna_ep_server_new(r->lfd, store, NULL, err, sizeof(err));
    cr_assert_not_null(r->srv, "%s", err);
    pthread_create(&th, NULL, server_accept, r);
    pthread_detach(th);
}

/* ---- edges: each a node of its own (setsid), killed whole ---- */

static void edge_start(struct run *r, int i)
{
    char cfg[400], name[32];
    FILE *f;

    snprintf(cfg, sizeof(cfg), "%s/edge%d.ini", r->dir, i);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, "[edge]\nlisten = 127.0.0.1:%d\nserver = %s\napp = %s\nstate_dir = %s/edge%d-run%d\n"
               "control = %s/edge%d.sock\nsnapshot_interval_ms = 50\nstandby = %s\n"
               "heartbeat_interval_ms = 100\n" IOT_APP_CONFIG "window_ms = %d\n",
            r->port[i], r->server_addr, t_app("iotagg"), r->dir, i, r->restarts[i], r->dir, i,
            r->standby, WINDOW_MS);
    fclose(f);
    snprintf(name, sizeof(name), "edge%d-%d", i, r->restarts[i]++);
    char *argv[] = { "/usr/bin/setsid", (char *)t_bin("cessna-supervisor"), "-c", cfg, NULL };
    t_start(&r->edge[i], r->dir, name, argv);
}

/* cessna-ctl's protocol on edge i, without asserting (the killer thread uses it too). */
static int ctl(struct run *r, int i, const char *cmd, char *out, size_t len)
{
    char path[300];

    snprintf(path, sizeof(path), "%s/edge%d.sock", r->dir, i);
    return t_ctl_try(path, cmd, out, len);
}

static void kill_worker(struct run *r)
{
    char cmd[64], out[256];

    snprintf(cmd, sizeof(cmd), "kill-worker %llu", (unsigned long long)r->session);
    for (int i = 0; i < r->nedges; i++)
        if (ctl(r, i, cmd, out, sizeof(out)) == 0 && strncmp(out, "ok", 2) == 0)
            __atomic_add_fetch(&r->kills, 1, __ATOMIC_SEQ_CST);
}

/* A killed supervisor's listening socket outlives it a moment (its io_uring is torn down
 * after the process): wait until the port can be bound again. */
static void wait_port_free(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int one = 1;

    for (int k = 0; k < 500; k++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        close(fd);
        if (rc == 0)
            return;
        usleep(10000);
    }
    cr_assert_fail("port %d still in use 5 s after its edge was killed", port);
}

/* SIGKILL the node that holds the session, as a whole, and start it again empty. */
static void kill_edge(struct run *r)
{
    char out[4096];

    for (int i = 0; i < r->nedges; i++) {
        if (ctl(r, i, "sessions", out, sizeof(out)) < 0 || !strstr(out, "state=live"))
            continue;
        kill(-r->edge[i].pid, SIGKILL);
        t_stop(&r->edge[i]);
        wait_port_free(r->port[i]);
        edge_start(r, i);
        r->kills++;
        return;
    }
}

/* Worker kills at random moments (seeded), besides the ones at chosen moments. */
static void *killer_main(void *p)
{
    struct run *r = p;
    uint64_t s = SEED;

    while (!r->stop) {
        usleep((useconds_t)(40 + iot_rand(&s) % 120) * 1000);
        kill_worker(r);
    }
    return NULL;
}

/* ---- the gateway ---- */

static void fault(struct run *r)
{
    if (r->fault == WORKER_KILLS)
        kill_worker(r);
    else if (r->fault == EDGE_KILLS)
        kill_edge(r);
}

static void client_run(struct run *r)
{
    static char buf[IOT_PER_BATCH * 48];
    size_t off[IOT_PER_BATCH + 1];
    char err[300];
    int alerts = 0;

    struct cessna_ep *ep = cessna_ep_connect(r->edges, err, sizeof(err));
    cr_assert_not_null(ep, "connect %s: %s", r->edges, err);
    cessna_ep_set_heartbeat(ep, 400);
    cessna_ep_set_resume_timeout(ep, 20000);
    r->session = cessna_ep_session_id(ep);
    pthread_t killer;
    if (r->fault == WORKER_KILLS)
        pthread_create(&killer, NULL, killer_main, r);

    for (int b = 0; b < BATCHES; b++) {
        int n = iot_messages(SEED, b, buf, sizeof(buf), off);
        for (int k = 0; k < n; k++)
            cr_assert_eq(cessna_ep_send(ep, buf + off[k], off[k + 1] - off[k]), 0,
                         "send: %s", cessna_ep_error(ep));
        if (b % 2 == 1)
            fault(r);                          /* the window's timer is pending */
        char ack[32];
        snprintf(ack, sizeof(ack), "ACK %d", b + 1);
        for (;;) {
            const void *data;
            long got = cessna_ep_recv(ep, &data);
            cr_assert(got >= 0, "recv in batch %d: %ld %s", b, got, cessna_ep_error(ep));
            keep(&r->client, data, (size_t)got);
            if ((size_t)got == strlen(ack) && memcmp(data, ack, (size_t)got) == 0)
                break;
            if (got > 6 && memcmp(data, "ALERT ", 6) == 0 && alerts++ % 3 == 0)
                fault(r);                      /* right after an alert */
        }
    }
    r->stop = 1;
    if (r->fault == WORKER_KILLS)
        pthread_join(killer, NULL);
    cr_assert_eq(cessna_ep_close(ep, 10000), 0, "close: %s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    for (int k = 0; k < 500 && !r->server_done; k++)
        usleep(10000);
    cr_assert(r->server_done, "the server's session did not end");
    cr_assert_str_empty(r->server_why, "%s", r->server_why);
}

static void run(struct run *r, enum fault fault, int nedges, const char *standby)
{
    const char *dir = t_tmpdir();
    char err[300], store[300];

    snprintf(store, sizeof(store), "%s/store", dir);
    server_start(r, store);
    r->dir = dir;
    r->fault = fault;
    r->nedges = nedges;
    r->standby = standby;
    for (int i = 0; i < nedges; i++) {
        int fd = addr_listen("127.0.0.1:0", err, sizeof(err));
        cr_assert(fd >= 0, "%s", err);
        r->port[i] = addr_local_port(fd);
        close(fd);
        edge_start(r, i);
        snprintf(r->edges + strlen(r->edges), sizeof(r->edges) - strlen(r->edges),
                 "%s127.0.0.1:%d", i ? "," : "", r->port[i]);
    }
    client_run(r);
    for (int i = 0; i < nedges; i++) {
        kill(-r->edge[i].pid, SIGKILL);
        t_stop(&r->edge[i]);
    }
}

/* The run against the model: the client's messages exactly; the server's alerts exactly,
 * each window report within what the readings allow. */
static int check_model(const struct run *r)
{
    static struct iot_model m;
    static char client[1 << 16], server[1 << 14];
    char *srv = r->server.buf, *end = srv + r->server.len, why[400];

    memset(&m, 0, sizeof(m));
    client[0] = 0;
    for (int b = 0; b < BATCHES; b++) {
        char ack[32];
        server[0] = 0;
        iot_model_batch(&m, SEED, b, client, sizeof(client), server, sizeof(server));
        snprintf(ack, sizeof(ack), "ACK %d", b + 1);
        iot_put(client, sizeof(client), ack);
        size_t alerts = strlen(server);
        cr_assert((size_t)(end - srv) >= alerts && memcmp(srv, server, alerts) == 0,
                  "batch %d: the server's alerts differ from the model's:\n%s", b, server);
        srv += alerts;
        char *sep = memchr(srv, IOT_SEP, (size_t)(end - srv));
        cr_assert_not_null(sep, "batch %d: no window report", b);
        cr_assert(iot_model_window(&m, b + 1, srv, (size_t)(sep - srv), why, sizeof(why)) == 0,
                  "%s (counts split over two windows: the batch took longer than window_ms "
                  "to send)", why);
        srv = sep + 1;
    }
    cr_assert_eq(srv, end, "the server got more: %.200s", srv);
    cr_assert_str_eq(r->client.buf, client, "the client's messages differ from the model's");
    cr_assert(m.alerts > 5 && m.refusals > 5, "the plan makes few alerts (%d) or refusals (%d)",
              m.alerts, m.refusals);
    return m.alerts;
}

/* Lines of the app's log (cessna_log) in edge i's first log that contain needle. */
static int app_log_lines(const struct run *r, int i, const char *needle)
{
    char path[400], line[2048];
    int n = 0;

    snprintf(path, sizeof(path), "%s/edge%d-0.log", r->dir, i);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    while (fgets(line, sizeof(line), f))
        n += strstr(line, " app=iotagg ") && strstr(line, needle);
    fclose(f);
    return n;
}

static void same_bytes(const struct transcript *a, const struct transcript *b, const char *side)
{
    size_t i = 0;

    while (i < a->len && i < b->len && a->buf[i] == b->buf[i])
        i++;
    cr_assert(a->len == b->len && i == a->len,
              "%s: %zu bytes without faults, %zu with; first difference at %zu: \"%.80s\" / \"%.80s\"",
              side, a->len, b->len, i, a->buf + i, b->buf + i);
}

static void compare_with_clean(enum fault fault, int nedges, const char *standby, int min_kills)
{
    static struct run clean, faulty;

    run(&clean, NONE, 1, "cold");
    check_model(&clean);
    run(&faulty, fault, nedges, standby);
    cr_log_info("%d faults landed", faulty.kills);
    int alerts = check_model(&faulty);
    same_bytes(&clean.client, &faulty.client, "client");
    same_bytes(&clean.server, &faulty.server, "server");
    cr_assert(faulty.kills >= min_kills, "only %d faults landed", faulty.kills);
    /* The app's log lines are not repeated by the replays of the many recoveries: each is
     * a numbered output the supervisor writes once, a worker killed right after one too. */
    if (fault == WORKER_KILLS) {
        int lines = app_log_lines(&faulty, 0, "msg=\"ALERT ");
        cr_assert_eq(lines, alerts, "%d alerts, %d ALERT lines in the log, %d kills", alerts,
                     lines, faulty.kills);
        lines = app_log_lines(&faulty, 0, " first seen (1 of 44)");
        cr_assert_eq(lines, 1, "the first sensor was logged %d times", lines);
    }
}

Test(iotagg, worker_kills_cold)
{
    compare_with_clean(WORKER_KILLS, 1, "cold", 10);
}

Test(iotagg, worker_kills_hot)
{
    compare_with_clean(WORKER_KILLS, 1, "hot", 10);
}

Test(iotagg, edge_node_kills)
{
    compare_with_clean(EDGE_KILLS, 2, "cold", 6);
}

/* ---- bad input: the session ends with an ERROR that names the cause ---- */

/* One session on a single edge with [app] lines app_cfg: send msg, expect the session to
 * end with an ERROR containing want (after the messages in before, if any). */
static void expect_app_error(const char *app_cfg, const char *before, const char *msg,
                             const char *want)
{
    static struct run r;
    struct t_edge e;

    server_start(&r, NULL);
    t_edge_start(&e, t_app("iotagg"), r.server_addr, app_cfg);
    struct cessna_ep *ep = t_ep_connect(&e);
    if (before)
        cr_assert_eq(cessna_ep_send(ep, before, strlen(before)), 0);
    cr_assert_eq(cessna_ep_send(ep, msg, strlen(msg)), 0);
    const void *data;
    long n;
    while ((n = cessna_ep_recv(ep, &data)) >= 0)
        ;   /* what came before the error */
    cr_assert_eq(n, -ECONNABORTED, "recv: %ld %s", n, cessna_ep_error(ep));
    cr_assert(strstr(cessna_ep_error(ep), want), "the client's error: %s", cessna_ep_error(ep));
    for (int k = 0; k < 500 && !r.server_done; k++)
        usleep(10000);
    cr_assert(strstr(r.server_why, want), "the server's error: %s", r.server_why);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

Test(iotagg, a_malformed_reading_ends_the_session_quoting_it)
{
    expect_app_error("[app]\nwindow_ms = 100000\n", "t01 5\nt02 6\n", "t01 5\nt01 five\n",
                     "app error 2: iotagg: bad reading \"t01 five\": expected SENSOR VALUE");
}

Test(iotagg, a_value_past_32_bits_is_refused)
{
    expect_app_error("", NULL, "t01 4294967296",
                     "bad reading \"t01 4294967296\": expected SENSOR VALUE (VALUE 0..4294967295)");
}

Test(iotagg, a_bad_app_value_is_named)
{
    expect_app_error("[app]\nwindow_ms = soon\n", NULL, "t01 1",
                     "app error 3: iotagg: [app] window_ms = soon: expected a whole number");
    expect_app_error("[app]\nmax_sensors = 0\n", NULL, "t01 1",
                     "[app] max_sensors = 0: expected a whole number 1..65536");
}

/* ---- behind the proxies: plain TCP programs, lines cut by --framing line ---- */

struct sink {
    int lfd;
    char buf[4096];
    volatile size_t len;
    volatile int done;
};

/* The server program: keeps every byte of its one connection until EOF. */
static void *sink_main(void *p)
{
    struct sink *k = p;
    int fd = accept(k->lfd, NULL, NULL);
    ssize_t n;

    while (fd >= 0 && (n = read(fd, k->buf + k->len, sizeof(k->buf) - 1 - k->len)) > 0)
        k->len += (size_t)n;
    k->done = 1;
    return NULL;
}

Test(iotagg, behind_the_proxies_lines_cut_anywhere)
{
    static struct sink k;
    char err[200], addr[64], got[128] = "";
    struct t_proc sp, cp;
    struct t_edge e;
    const char *dir = t_tmpdir();
    pthread_t th;

    k.lfd = addr_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(k.lfd >= 0, "%s", err);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", addr_local_port(k.lfd));
    pthread_create(&th, NULL, sink_main, &k);
    char *sargv[] = { (char *)t_bin("cessna-server-proxy"), "--listen", "127.0.0.1:0",
                      "--target", addr, "--framing", "line", NULL };
    t_start(&sp, dir, "server-proxy", sargv);
    t_edge_start(&e, t_app("iotagg"), sp.addr, "[app]\nwindow_ms = 300\nalert_above = 100\n");
    char *cargv[] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0",
                      "--edge", e.sup.addr, "--framing", "line", NULL };
    t_start(&cp, dir, "client-proxy", cargv);

    /* Readings cut in the middle of lines, one write each, apart. */
    int fd = t_connect(cp.addr);
    const char *pieces[] = { "a 5\nb", " 7\na 1", "50\r\nb 9\n" };
    for (int i = 0; i < 3; i++) {
        t_write_all(fd, pieces[i], strlen(pieces[i]));
        usleep(20000);
    }
    const char *alert = "ALERT a 150 above 100\n";
    cr_assert_eq(t_read_n(fd, got, strlen(alert), 3000), (long)strlen(alert), "client: %s", got);
    cr_assert_str_eq(got, alert);
    usleep(600 * 1000);                        /* the window ends */
    close(fd);
    for (int i = 0; i < 300 && !k.done; i++)
        usleep(10000);
    /* Worked out by hand: a 5 and 150, b 7 and 9. p90 of a is rank 2, 150, in the bucket
     * 144..151 whose middle is 148; p50 is rank 1, 5, exact below 16. */
    cr_assert_str_eq(k.buf, "ALERT a 150 above 100\n"
                            "window 1 sensors=2 refused=0\n"
                            "a count=2 min=5 max=150 mean=77.500 p50=5 p90=148 p99=148\n"
                            "b count=2 min=7 max=9 mean=8.000 p50=7 p90=9 p99=9\n");
    t_stop(&cp);
    t_edge_stop(&e);
    t_stop(&sp);
}

/* A gateway that closes with a window open: the window is reported before the CLOSE. */
Test(iotagg, the_open_window_is_reported_when_the_gateway_closes)
{
    static struct run r;
    struct t_edge e;

    server_start(&r, NULL);
    t_edge_start(&e, t_app("iotagg"), r.server_addr, "[app]\nwindow_ms = 60000\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    cr_assert_eq(cessna_ep_send(ep, "a 1\na 2", 7), 0);
    cr_assert_eq(cessna_ep_close(ep, 5000), 0, "close: %s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    for (int k = 0; k < 500 && !r.server_done; k++)
        usleep(10000);
    cr_assert(r.server_done, "the server's session did not end");
    cr_assert_str_eq(r.server.buf, "window 1 sensors=1 refused=0\n"
                                   "a count=2 min=1 max=2 mean=1.500 p50=1 p90=2 p99=2\n\x1e");
    t_edge_stop(&e);
}
