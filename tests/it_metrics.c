/* it_metrics.c - integration: the Prometheus endpoint (metrics_listen) and cessna-ctl --json.
 *
 *   metrics/scraped_by_prometheus  sessions run through an edge (one closed, one whose worker
 *                                  is killed and recovered); /metrics says so, promtool accepts
 *                                  the text, and a real Prometheus server started here scrapes
 *                                  it: its query API returns the same numbers
 *   metrics/hostile_requests       404, 405, 400, a request without end (431), a partial one
 *                                  and connections that never send (closed by the timeout),
 *                                  more connections than slots: the session and the control
 *                                  socket are served all along, and /metrics afterwards
 *   metrics/hibernation           a session goes to sleep and wakes: the gauges and counters
 *                                  follow, and every durable snapshot is in the histogram
 *   metrics/remote_move            a session moved between two edges (t_world): the old edge
 *                                  counts the move and the end, the new one a remote recovery,
 *                                  timed
 *   metrics/ctl_json               cessna-ctl --json stats, sessions, snapshot, an error:
 *                                  parsed with jansson, numbers as numbers, "-" as null
 *
 * Real processes on loopback; Prometheus is Debian's /usr/bin/prometheus (the test is
 * skipped, not passed, where it is not installed). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "t_world.h"

#define PROMETHEUS "/usr/bin/prometheus"
#define PROMTOOL   "/usr/bin/promtool"
#define METRICS_TIMEOUT_MS 3000   /* supervisor/metrics.h */
#define METRICS_CONNS      16

TestSuite(metrics, .timeout = 120);

/* A port free on loopback now (bound, read, released: the caller binds it next). */
static int free_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
              getsockname(fd, (struct sockaddr *)&sa, &len) == 0, "free port: %s", strerror(errno));
    close(fd);
    return ntohs(sa.sin_port);
}

/* A connection to 127.0.0.1:port, or -1 (refused: a server still starting). */
static int try_connect(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                              .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    cr_assert(fd >= 0, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
        close(fd);
        return -1;
    }
    return fd;
}

static int connect_port(int port)
{
    int fd = try_connect(port);

    cr_assert(fd >= 0, "connect to 127.0.0.1:%d: %s", port, strerror(errno));
    return fd;
}

/* Send req on a new connection and read until the peer closes (within timeout_ms). The
 * bytes read, NUL-terminated in out; -ETIMEDOUT when it stayed open. */
static long http_raw(int port, const char *req, size_t reqlen, char *out, size_t cap,
                     int timeout_ms)
{
    int fd = try_connect(port);
    long got = 0, deadline = t_now_ms() + timeout_ms;

    if (fd < 0)
        return -ECONNREFUSED;

    if (reqlen)
        t_write_all(fd, req, reqlen);
    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        long left = deadline - t_now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
            got = -ETIMEDOUT;
            break;
        }
        ssize_t n = read(fd, out + got, cap - 1 - (size_t)got);
        if (n <= 0)
            break;
        got += n;
        if ((size_t)got + 1 >= cap)
            break;
    }
    out[got > 0 ? got : 0] = 0;
    close(fd);
    return got;
}

static long http_get(int port, const char *path, char *out, size_t cap)
{
    char req[512];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Connection: close\r\n\r\n", path, port);
    return http_raw(port, req, (size_t)n, out, cap, 5000);
}

/* The value of the series `series` (name with its labels, exactly as written) in an
 * exposition, or -1 when it is not there. */
static double series(const char *text, const char *name)
{
    size_t len = strlen(name);

    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, name, len) == 0 && p[len] == ' ')
            return strtod(p + len + 1, NULL);
    return -1;
}

static double scrape(int port, const char *name)
{
    static char body[65536];

    cr_assert_gt(http_get(port, "/metrics", body, sizeof(body)), 0, "GET /metrics on %d", port);
    cr_assert(strncmp(body, "HTTP/1.1 200 ", 13) == 0, "GET /metrics: %.80s", body);
    return series(body, name);
}

static void round_trip(struct cessna_ep *ep, size_t len, uint64_t seed)
{
    char msg[4096];
    const void *got;

    cr_assert(len <= sizeof(msg));
    t_fill(msg, len, seed);
    cr_assert_eq(cessna_ep_send(ep, msg, len), 0, "send: %s", cessna_ep_error(ep));
    long n = cessna_ep_recv(ep, &got);
    cr_assert_eq(n, (long)len, "echo of %zu bytes came back as %ld (%s)", len, n,
                 cessna_ep_error(ep));
    cr_assert(memcmp(got, msg, len) == 0, "echo differs");
}

static struct t_edge *edge_with_metrics_and(struct t_edge *e, struct t_echo_ep *srv, int *port,
                                            const char *more)
{
    char extra[256];

    *port = free_port();
    snprintf(extra, sizeof(extra), "metrics_listen = 127.0.0.1:%d\n%s", *port, more);
    t_echo_ep_start(srv);
    t_edge_start(e, t_app("passthrough"), srv->addr, extra);
    return e;
}

static struct t_edge *edge_with_metrics(struct t_edge *e, struct t_echo_ep *srv, int *port)
{
    return edge_with_metrics_and(e, srv, port, "");
}

/* Wait until the series has the value want (within timeout_ms); the last value. */
static double scrape_wait(int port, const char *name, double want, int timeout_ms)
{
    long deadline = t_now_ms() + timeout_ms;
    double v;

    while ((v = scrape(port, name)) != want && t_now_ms() < deadline)
        usleep(50000);
    return v;
}

/* ---- Prometheus, started by the test and always stopped ---- */

static pid_t prom_pid;

static void prom_stop(void)
{
    if (prom_pid > 0) {
        kill(prom_pid, SIGKILL);
        waitpid(prom_pid, NULL, 0);
        prom_pid = 0;
    }
}

static void prom_start(const char *dir, int web_port, int target_port)
{
    char cfg[512], data[512], log[512], listen[64], cfgarg[600], dataarg[600];
    FILE *f;

    snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", dir);
    snprintf(data, sizeof(data), "%s/prometheus-data", dir);
    snprintf(log, sizeof(log), "%s/prometheus.log", dir);
    f = fopen(cfg, "w");
    cr_assert(f, "write %s", cfg);
    fprintf(f, "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
               "scrape_configs:\n  - job_name: cessna\n    static_configs:\n"
               "      - targets: ['127.0.0.1:%d']\n", target_port);
    fclose(f);
    snprintf(listen, sizeof(listen), "--web.listen-address=127.0.0.1:%d", web_port);
    snprintf(cfgarg, sizeof(cfgarg), "--config.file=%s", cfg);
    snprintf(dataarg, sizeof(dataarg), "--storage.tsdb.path=%s", data);
    char *argv[] = { PROMETHEUS, cfgarg, dataarg, listen, "--log.level=warn", NULL };
    prom_pid = fork();
    cr_assert(prom_pid >= 0, "fork: %s", strerror(errno));
    if (prom_pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* a test killed by its timeout leaves none */
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
}

/* The value of an instant query with one result, as Prometheus's API gives it; -1 while it
 * has none (not scraped yet), -2 when Prometheus does not answer. */
static double prom_query(int web_port, const char *query)
{
    static char resp[65536];
    char path[512];
    long n;

    snprintf(path, sizeof(path), "/api/v1/query?query=%s", query);
    n = http_get(web_port, path, resp, sizeof(resp));
    char *body = n > 0 ? strstr(resp, "\r\n\r\n") : NULL;
    if (!body || strncmp(resp, "HTTP/1.1 200", 12) != 0)
        return -2;
    json_error_t jerr;
    json_t *root = json_loads(body + 4, 0, &jerr);
    cr_assert(root, "Prometheus answered what is not JSON (%s): %s", jerr.text, body + 4);
    const char *status = json_string_value(json_object_get(root, "status"));
    cr_assert(status && strcmp(status, "success") == 0, "query %s: %s", query, body + 4);
    json_t *result = json_object_get(json_object_get(root, "data"), "result");
    double v = -1;
    if (json_array_size(result) == 1) {
        const char *s = json_string_value(json_array_get(json_object_get(json_array_get(result, 0),
                                                                          "value"), 1));
        cr_assert(s, "query %s: no value in %s", query, body + 4);
        v = strtod(s, NULL);
    }
    json_decref(root);
    return v;
}

/* Wait (up to timeout_ms) until the query returns want; the last value otherwise. */
static double prom_wait(int web_port, const char *query, double want, int timeout_ms)
{
    long deadline = t_now_ms() + timeout_ms;
    double v;

    while ((v = prom_query(web_port, query)) != want && t_now_ms() < deadline)
        usleep(250000);
    return v;
}

Test(metrics, scraped_by_prometheus, .fini = prom_stop)
{
    struct t_edge e;
    struct t_echo_ep srv;
    struct cessna_ep *ep[3];
    int port;
    size_t sent = 0;
    char cmd[64], out[4096];

    edge_with_metrics(&e, &srv, &port);
    for (int i = 0; i < 3; i++) {
        ep[i] = t_ep_connect(&e);
        for (int k = 0; k < 4; k++) {
            round_trip(ep[i], 100 + 10 * (size_t)k, (uint64_t)(i * 10 + k));
            sent += 100 + 10 * (size_t)k;
        }
    }
    /* One session ends; another's worker is killed and comes back (a fresh or cold
     * recovery, depending on whether a snapshot was durable yet). */
    cr_assert_eq(cessna_ep_close(ep[0], 5000), 0, "close: %s", cessna_ep_error(ep[0]));
    cessna_ep_free(ep[0]);
    snprintf(cmd, sizeof(cmd), "kill-worker %llu", (unsigned long long)cessna_ep_session_id(ep[1]));
    t_ctl(&e, cmd, out, sizeof(out));
    cr_assert(strncmp(out, "ok", 2) == 0, "%s", out);
    round_trip(ep[1], 500, 99);   /* answered by the recovered worker */
    sent += 500;

    /* The endpoint itself: the numbers of what was done, once the recovery is timed (the
     * supervisor's tick sees the replay end) and the closed session's slot is freed. */
    long deadline = t_now_ms() + 10000;
    while ((scrape(port, "cessna_sessions_ended_total") != 1 ||
            scrape(port, "cessna_recovery_duration_seconds_count{mode=\"fresh\"}") +
            scrape(port, "cessna_recovery_duration_seconds_count{mode=\"cold\"}") != 1) &&
           t_now_ms() < deadline)
        usleep(50000);
    static char body[65536];
    cr_assert_gt(http_get(port, "/metrics", body, sizeof(body)), 0);
    cr_assert_not_null(strstr(body, "Content-Type: text/plain; version=0.0.4"), "%.300s", body);
    cr_assert_not_null(strstr(body, "# TYPE cessna_sessions gauge\n"));
    cr_assert_not_null(strstr(body, "# TYPE cessna_snapshot_duration_seconds histogram\n"));
    cr_assert_not_null(strstr(body, "# HELP cessna_events_total "));
    cr_assert_eq(series(body, "cessna_sessions_opened_total"), 3, "%s", body);
    cr_assert_eq(series(body, "cessna_sessions_ended_total"), 1, "%s", body);
    cr_assert_eq(series(body, "cessna_sessions{state=\"live\"}"), 2, "%s", body);
    cr_assert_eq(series(body, "cessna_sessions_failed_total"), 0, "%s", body);
    cr_assert_eq(series(body, "cessna_worker_deaths_total"), 1, "%s", body);
    double fresh = series(body, "cessna_recoveries_total{mode=\"fresh\"}");
    double cold = series(body, "cessna_recoveries_total{mode=\"cold\"}");
    cr_assert_eq(fresh + cold, 1, "one local recovery: fresh %g cold %g\n%s", fresh, cold, body);
    cr_assert_eq(series(body, "cessna_recoveries_total{mode=\"hot\"}"), 0);
    cr_assert_eq(series(body, "cessna_recovery_duration_seconds_count{mode=\"fresh\"}") +
                 series(body, "cessna_recovery_duration_seconds_count{mode=\"cold\"}"), 1,
                 "the recovery is timed:\n%s", body);
    cr_assert_eq(series(body, "cessna_recovery_duration_seconds_bucket{mode=\"cold\",le=\"+Inf\"}") +
                 series(body, "cessna_recovery_duration_seconds_bucket{mode=\"fresh\",le=\"+Inf\"}"), 1);
    /* Each message crosses the edge twice inbound (client, then the echo from the server). */
    cr_assert_eq(series(body, "cessna_bytes_in_total"), 2.0 * (double)sent, "%s", body);
    cr_assert_geq(series(body, "cessna_bytes_out_total"), 2.0 * (double)sent);
    cr_assert_geq(series(body, "cessna_events_total"), 2 * 13, "every message is an event");

    /* promtool (from the same package) lints the exposition. */
    if (access(PROMTOOL, X_OK) == 0) {
        char *text = strstr(body, "\r\n\r\n");
        cr_assert(text);
        FILE *p = popen(PROMTOOL " check metrics > /dev/null 2>&1", "w");
        cr_assert(p);
        fputs(text + 4, p);
        int st = pclose(p);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "promtool check metrics failed");
    }

    if (access(PROMETHEUS, X_OK) != 0)
        cr_skip_test("%s is not installed (Debian package prometheus; scripts/install-deps.sh)",
                     PROMETHEUS);
    int web = free_port();
    prom_start(e.dir, web, port);
    /* Prometheus starts, scrapes every second; its API answers once it has the series. */
    cr_assert_eq(prom_wait(web, "up%7Bjob%3D%22cessna%22%7D", 1, 60000), 1,
                 "Prometheus never scraped the edge (log: %s/prometheus.log)", e.dir);
    cr_assert_eq(prom_wait(web, "cessna_sessions_opened_total", 3, 10000), 3);
    cr_assert_eq(prom_wait(web, "cessna_sessions_ended_total", 1, 10000), 1);
    cr_assert_eq(prom_wait(web, "cessna_sessions%7Bstate%3D%22live%22%7D", 2, 10000), 2);
    cr_assert_eq(prom_wait(web, "sum(cessna_recoveries_total)", 1, 10000), 1);
    cr_assert_eq(prom_wait(web, "cessna_worker_deaths_total", 1, 10000), 1);
    cr_assert_eq(prom_wait(web, "sum(cessna_recovery_duration_seconds_count)", 1, 10000), 1);
    cr_assert_eq(prom_wait(web, "cessna_bytes_in_total", 2.0 * (double)sent, 10000),
                 2.0 * (double)sent);
    /* A histogram Prometheus can compute a quantile from. */
    double q = prom_query(web, "histogram_quantile(0.5%2Csum%20by%20(le)"
                               "(cessna_recovery_duration_seconds_bucket))");
    cr_assert(q > 0 && q <= 30, "median recovery time from Prometheus: %g", q);

    /* More traffic shows up in the next scrapes. */
    round_trip(ep[2], 1000, 7);
    cr_assert_eq(prom_wait(web, "cessna_bytes_in_total", 2.0 * (double)(sent + 1000), 10000),
                 2.0 * (double)(sent + 1000));
    prom_stop();
    for (int i = 1; i < 3; i++)
        cessna_ep_free(ep[i]);
    t_edge_stop(&e);
}

/* ---- hostile scrapers ---- */

static void expect_status(int port, const char *req, size_t len, const char *status)
{
    char out[4096];
    long n = http_raw(port, req, len, out, sizeof(out), METRICS_TIMEOUT_MS + 2000);

    cr_assert_gt(n, 0, "no answer to %.40s (%ld)", req, n);
    cr_assert(strncmp(out, status, strlen(status)) == 0, "to %.40s: %.80s", req, out);
}

/* Wait until fd is closed by the peer; the ms it took, or -1 after timeout_ms. */
static long wait_closed(int fd, int timeout_ms)
{
    long start = t_now_ms();
    char buf[4096];

    while (t_now_ms() - start < timeout_ms) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            return t_now_ms() - start;
    }
    return -1;
}

Test(metrics, hostile_requests)
{
    struct t_edge e;
    struct t_echo_ep srv;
    int port, silent[METRICS_CONNS + 4], partial;
    char big[8192], out[4096];

    edge_with_metrics(&e, &srv, &port);
    struct cessna_ep *ep = t_ep_connect(&e);
    round_trip(ep, 200, 1);

    static const char r404[] = "GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char r405[] = "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    static const char r400[] = "hello there\r\n\r\n";
    static const char rnul[] = "GET /metrics HTTP/1.1\r\nX: a\0b\r\n\r\n";
    expect_status(port, r404, sizeof(r404) - 1, "HTTP/1.1 404 ");
    expect_status(port, "GET / HTTP/1.0\r\n\r\n", 18, "HTTP/1.1 404 ");
    expect_status(port, r405, sizeof(r405) - 1, "HTTP/1.1 405 ");
    expect_status(port, r400, sizeof(r400) - 1, "HTTP/1.1 400 ");
    expect_status(port, rnul, sizeof(rnul) - 1, "HTTP/1.1 400 ");
    /* Headers without end, as long as the endpoint reads (4 KiB). */
    int n = snprintf(big, sizeof(big), "GET /metrics HTTP/1.1\r\nX-Pad: ");
    memset(big + n, 'a', sizeof(big) - (size_t)n);
    expect_status(port, big, 4096, "HTTP/1.1 431 ");
    /* Far more than that: whatever the scraper gets, the node is unharmed. */
    for (int k = 0; k < 4; k++) {
        int fd = connect_port(port);
        for (int j = 0; j < 16; j++)
            if (send(fd, big, sizeof(big), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                break;
        close(fd);
    }
    round_trip(ep, 200, 2);

    /* More silent connections than the endpoint has slots, and one that stops in the
     * middle of its request: none of them holds up the session or the control socket. */
    for (int i = 0; i < METRICS_CONNS + 4; i++)
        silent[i] = connect_port(port);
    partial = connect_port(port);
    t_write_all(partial, "GET /metrics HTTP/1.1\r\nHost: x\r\n", 32);
    long t0 = t_now_ms();
    for (int k = 0; k < 10; k++)
        round_trip(ep, 300, 10 + (uint64_t)k);
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "sessions"), 1, "%s", out);
    cr_assert_lt(t_now_ms() - t0, METRICS_TIMEOUT_MS, "the session waited for the scrapers");

    /* The timeout closes them all (those beyond the slots at once). */
    long took = wait_closed(partial, METRICS_TIMEOUT_MS + 3000);
    cr_assert(took >= 0, "a partial request was held open past the timeout");
    for (int i = 0; i < METRICS_CONNS + 4; i++) {
        cr_assert(wait_closed(silent[i], METRICS_TIMEOUT_MS + 3000) >= 0,
                  "silent connection %d still open", i);
        close(silent[i]);
    }
    close(partial);

    /* Served again afterwards, and the session never noticed. */
    cr_assert_eq(scrape(port, "cessna_sessions{state=\"live\"}"), 1);
    cr_assert_eq(scrape(port, "cessna_sessions_failed_total"), 0);
    round_trip(ep, 400, 3);
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "sessions_failed"), 0, "%s", out);
    cr_assert_eq(t_field(out, "worker_deaths"), 0, "%s", out);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

Test(metrics, hibernation)
{
    struct t_edge e;
    struct t_echo_ep srv;
    int port;

    edge_with_metrics_and(&e, &srv, &port, "hibernate_after_ms = 200\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    round_trip(ep, 64, 1);
    cr_assert_eq(scrape_wait(port, "cessna_hibernated_sessions", 1, 10000), 1, "never slept");
    cr_assert_eq(scrape(port, "cessna_sessions{state=\"hibernated\"}"), 1);
    cr_assert_eq(scrape(port, "cessna_sessions{state=\"live\"}"), 0);
    cr_assert_eq(scrape(port, "cessna_hibernations_total"), 1);
    cr_assert_eq(scrape(port, "cessna_wakes_total"), 0);
    double snaps = scrape(port, "cessna_snapshots_total");
    cr_assert_geq(snaps, 1, "a session sleeps on a durable snapshot");
    cr_assert_eq(scrape(port, "cessna_snapshot_duration_seconds_count"), snaps);
    cr_assert_eq(scrape(port, "cessna_snapshot_duration_seconds_bucket{le=\"+Inf\"}"), snaps);
    cr_assert_gt(scrape(port, "cessna_snapshot_duration_seconds_sum"), 0);

    round_trip(ep, 64, 2);   /* wakes it */
    cr_assert_eq(scrape(port, "cessna_wakes_total"), 1);
    cr_assert_eq(scrape(port, "cessna_wake_failures_total"), 0);
    cr_assert_eq(scrape(port, "cessna_worker_deaths_total"), 0, "a sleep is not a death");
    double total = 0;
    for (const char *m = "fresh\0cold\0hot\0remote\0"; *m; m += strlen(m) + 1) {
        char name[96];
        snprintf(name, sizeof(name), "cessna_recoveries_total{mode=\"%s\"}", m);
        total += scrape(port, name);
    }
    cr_assert_eq(total, 0, "a wake is not a recovery");
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

Test(metrics, remote_move)
{
    static struct world w;
    struct w_opts o = { .edges = 2, .sessions = 2, .rounds = 300 };
    struct w_clients c;
    char extra[2][64], cmd[64], out[4096], name[96];
    int port[2];
    uint64_t ids[W_SESSIONS_MAX];

    for (int i = 0; i < 2; i++) {
        port[i] = w_free_port();
        snprintf(extra[i], sizeof(extra[i]), "metrics_listen = 127.0.0.1:%d\n", port[i]);
        o.edge_extra[i] = extra[i];
    }
    world_start(&w, &o);
    run_clients(&w, &c);
    cr_assert_eq(wait_rounds(&w, 40, 30000), 0, "the clients did not get going");
    cr_assert_eq(edge_session_ids(&w, 0, ids, W_SESSIONS_MAX), 2);
    cr_assert_eq(scrape(port[0], "cessna_sessions_opened_total"), 2);
    snprintf(cmd, sizeof(cmd), "move %llu", (unsigned long long)ids[0]);
    edge_ctl(&w, 0, cmd, out, sizeof(out));
    cr_assert(strstr(out, "ok moving"), "move: %s", out);

    snprintf(name, sizeof(name), "cessna_recoveries_total{mode=\"remote\"}");
    cr_assert_eq(scrape_wait(port[1], name, 1, 15000), 1, "the session never resumed at edge 1");
    cr_assert_eq(scrape(port[1], "cessna_sessions_opened_total"), 1, "resumed counts as opened");
    cr_assert_eq(scrape_wait(port[1], "cessna_recovery_duration_seconds_count{mode=\"remote\"}",
                             1, 10000), 1, "the remote recovery is timed");
    cr_assert_eq(scrape_wait(port[0], "cessna_moves_total", 1, 10000), 1);
    cr_assert_eq(scrape_wait(port[0], "cessna_sessions_ended_total", 1, 10000), 1,
                 "the moved copy ended at edge 0");
    cr_assert_eq(scrape(port[0], "cessna_sessions{state=\"live\"}"), 1);
    cr_assert_eq(scrape(port[0], "cessna_recoveries_total{mode=\"remote\"}"), 0);
    join_clients(&w, &c);
    wait_server_transcripts(&w);
    cr_assert_eq(scrape(port[0], "cessna_sessions_failed_total") +
                 scrape(port[1], "cessna_sessions_failed_total"), 0);
    world_stop(&w);
}

/* ---- cessna-ctl --json ---- */

/* Run cessna-ctl --json with args; its parsed output (the test stops unless it is one JSON
 * object) and its exit status in *rc. */
static json_t *ctl_json(const struct t_edge *e, const char *args, int *rc)
{
    char cmd[1024];
    static char text[1 << 16];
    size_t len;

    snprintf(cmd, sizeof(cmd), "%s --socket %s --json %s", t_bin("cessna-ctl"), e->control, args);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "popen %s", cmd);
    len = fread(text, 1, sizeof(text) - 1, p);
    text[len] = 0;
    int st = pclose(p);
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    cr_assert(len && strchr(text, '\n') == text + len - 1,
              "%s: want one line, got: %s", args, text);
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    cr_assert(root, "%s: not JSON (%s at %d): %s", args, jerr.text, jerr.position, text);
    cr_assert(json_is_object(root), "%s: not an object: %s", args, text);
    return root;
}

Test(metrics, ctl_json)
{
    struct t_edge e;
    struct t_echo_ep srv;
    int port, rc;

    edge_with_metrics(&e, &srv, &port);
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trip(ep, 123, 1);

    json_t *st = ctl_json(&e, "stats", &rc);
    cr_assert_eq(rc, 0);
    cr_assert(json_is_integer(json_object_get(st, "sessions")));
    cr_assert_eq(json_integer_value(json_object_get(st, "sessions")), 1);
    cr_assert_eq(json_integer_value(json_object_get(st, "sessions_total")), 1);
    cr_assert_eq(json_integer_value(json_object_get(st, "bytes_in")), 2 * 123);
    cr_assert_str_eq(json_string_value(json_object_get(st, "zygote")), "up",
                     "text stays a string");
    cr_assert(json_object_size(st) > 30, "every field of stats: %zu", json_object_size(st));
    json_decref(st);

    json_t *ss = ctl_json(&e, "sessions", &rc);
    cr_assert_eq(rc, 0);
    json_t *list = json_object_get(ss, "sessions");
    cr_assert(json_is_array(list) && json_array_size(list) == 1);
    json_t *s = json_array_get(list, 0);
    /* The id is a string: 63-bit ids do not survive a double (jq 1.6, JavaScript). */
    char idtext[32];
    snprintf(idtext, sizeof(idtext), "%llu", (unsigned long long)id);
    cr_assert(json_is_string(json_object_get(s, "id")), "the session id is a string");
    cr_assert_str_eq(json_string_value(json_object_get(s, "id")), idtext);
    cr_assert_str_eq(json_string_value(json_object_get(s, "state")), "live");
    cr_assert(json_is_integer(json_object_get(s, "worker")) &&
              json_integer_value(json_object_get(s, "worker")) > 0);
    cr_assert(json_is_null(json_object_get(s, "standby")), "'-' (none) is null");
    cr_assert_eq(json_integer_value(json_object_get(s, "recoveries")), 0);
    json_decref(ss);

    char args[64];
    snprintf(args, sizeof(args), "snapshot %llu", (unsigned long long)id);
    json_t *ok = ctl_json(&e, args, &rc);
    cr_assert_eq(rc, 0);
    cr_assert(json_is_true(json_object_get(ok, "ok")));
    cr_assert_not_null(strstr(json_string_value(json_object_get(ok, "message")), "snapshot"));
    json_decref(ok);

    json_t *bad = ctl_json(&e, "kill-worker 12345", &rc);
    cr_assert_eq(rc, 1, "an error is a failure");
    cr_assert(json_is_false(json_object_get(bad, "ok")));
    cr_assert_not_null(strstr(json_string_value(json_object_get(bad, "error")), "no session"));
    json_decref(bad);

    /* Empty: no session left is an empty list, not an error. */
    cr_assert_eq(cessna_ep_close(ep, 5000), 0);
    cessna_ep_free(ep);
    long deadline = t_now_ms() + 10000;
    for (;;) {
        json_t *none = ctl_json(&e, "sessions", &rc);
        size_t left = json_array_size(json_object_get(none, "sessions"));
        cr_assert(json_is_array(json_object_get(none, "sessions")));
        json_decref(none);
        if (!left)
            break;
        cr_assert(t_now_ms() < deadline, "the closed session stays listed");
        usleep(50000);
    }
    t_edge_stop(&e);
}
