/* it_proxies.c - integration: unmodified TCP programs through both proxies and the edge. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "t_helpers.h"

TestSuite(proxies, .timeout = 120);

/* plain server <- server proxy <- edge(app) <- client proxy; returns the client proxy. */
struct chain {
    struct t_proc sproxy, cproxy;
    struct t_edge edge;
};

static void chain_start(struct chain *c, const char *app, const char *target)
{
    const char *dir = t_tmpdir();
    char *sargv[] = { (char *)t_bin("cessna-server-proxy"), "--listen", "127.0.0.1:0",
                      "--target", (char *)target, NULL };
    t_start(&c->sproxy, dir, "server-proxy", sargv);
    t_edge_start(&c->edge, app, c->sproxy.addr, NULL);
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

Test(proxies, compression_round_trip_against_plain_zlib_server)
{
    struct t_proc zs;
    struct chain c;
    const char *dir = t_tmpdir();
    char *zargv[] = { (char *)t_tool("zlib_server"), "--listen", "127.0.0.1:0", NULL };

    t_start(&zs, dir, "zlib-server", zargv);
    chain_start(&c, t_app("compress"), zs.addr);

    /* The demo client checks the echo byte for byte and exits 0 only on a match. */
    char *cargv[] = { (char *)t_tool("demo_client"), "--connect", c.cproxy.addr, "--bytes",
                      "3000000", NULL };
    int out;
    pid_t pid = t_start_raw(dir, "demo-client", cargv, &out);
    int status = t_wait(pid, 60000);
    char line[256] = "";
    ssize_t n = read(out, line, sizeof(line) - 1);
    line[n > 0 ? n : 0] = 0;
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "demo_client: %s", line);
    cr_assert(strstr(line, "match=yes"), "%s", line);

    /* The server saw zlib data much smaller than the plain text. */
    char conn[512] = "";
    for (int i = 0; i < 300 && !strstr(conn, "conn "); i++) {
        usleep(10000);
        n = read(zs.out_fd, conn, sizeof(conn) - 1);
        conn[n > 0 ? n : 0] = 0;
    }
    cr_assert(strstr(conn, "conn "), "zlib_server reports the connection");
    uint64_t plain = t_field(strstr(conn, "conn "), "plain");
    uint64_t comp = t_field(strstr(conn, "conn "), "compressed_in");
    cr_assert_eq(plain, 3000000, "%s", conn);
    cr_assert(comp > 0 && comp * 4 < plain, "compressed %llu of %llu", (unsigned long long)comp,
              (unsigned long long)plain);
    chain_stop(&c);
    t_stop(&zs);
}

struct plain_arg {
    const char *addr;
    int index;
    int ok;
    char why[200];
};

/* Streams 1 MiB through the proxies in odd-sized writes while reading the echo. */
static void *plain_stream(void *p)
{
    struct plain_arg *a = p;
    size_t total = 1 << 20, sent = 0, got = 0;
    uint8_t *data = malloc(total), *echo = malloc(total);
    int fd = t_connect(a->addr);

    t_fill(data, total, (uint64_t)a->index);
    while (got < total) {
        if (sent < total && sent - got < 256 * 1024) {
            size_t chunk = 1 + (sent * 31 + 977) % 20000;
            if (chunk > total - sent)
                chunk = total - sent;
            t_write_all(fd, data + sent, chunk);
            sent += chunk;
        }
        size_t want = sent - got;
        if (want == 0)
            continue;
        ssize_t n = recv(fd, echo + got, want, sent < total ? MSG_DONTWAIT : 0);
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
            snprintf(a->why, sizeof(a->why), "connection ended after %zu bytes", got);
            goto out;
        }
        if (n > 0)
            got += (size_t)n;
    }
    a->ok = memcmp(data, echo, total) == 0;
    if (!a->ok)
        snprintf(a->why, sizeof(a->why), "echo differs");
out:
    close(fd);
    free(data);
    free(echo);
    return NULL;
}

Test(proxies, ten_plain_tcp_streams_byte_exact)
{
    enum { N = 10 };
    struct t_echo_tcp echo;
    struct chain c;
    struct plain_arg args[N];
    pthread_t th[N];

    t_echo_tcp_start(&echo);
    chain_start(&c, t_app("passthrough"), echo.addr);
    for (int i = 0; i < N; i++) {
        args[i] = (struct plain_arg){ .addr = c.cproxy.addr, .index = i };
        pthread_create(&th[i], NULL, plain_stream, &args[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_expect(args[i].ok, "stream %d: %s", i, args[i].why);
    }
    chain_stop(&c);
}

static int free_port(void)
{
    char err[128];
    int fd = addr_listen("127.0.0.1:0", err, sizeof(err));
    int port = addr_local_port(fd);

    close(fd);
    return port;
}

/* Run a command to completion; its stdout in out. Returns the exit status. */
static int run(char *const argv[], char *out, size_t len, int timeout_ms)
{
    const char *dir = t_tmpdir();
    int fd;
    pid_t pid = t_start_raw(dir, "cmd", argv, &fd);
    memset(out, 0, len);   /* what arrived stays readable even after a timeout */
    t_read_n(fd, out, len - 1, timeout_ms);   /* a hang shows in the status (-1) below */
    int status = t_wait(pid, timeout_ms);
    close(fd);
    if (status == -1) {
        kill(pid, SIGKILL);
        t_wait(pid, 1000);
    }
    return status;
}

Test(proxies, redis_benchmark_through_passthrough, .timeout = 180)
{
    char port[16], target[64], out[8192];
    const char *dir = t_tmpdir();

    if (access("/usr/bin/redis-server", X_OK) || access("/usr/bin/redis-benchmark", X_OK))
        cr_skip_test("redis-server or redis-benchmark is not installed (scripts/install-deps.sh)");
    snprintf(port, sizeof(port), "%d", free_port());
    snprintf(target, sizeof(target), "127.0.0.1:%s", port);
    char *rargv[] = { "/usr/bin/redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", (char *)dir, NULL };
    int rfd;
    pid_t redis = t_start_raw(dir, "redis", rargv, &rfd);
    char *ping[] = { "/usr/bin/redis-cli", "-p", port, "ping", NULL };
    for (int i = 0; i < 100; i++) {
        if (run(ping, out, sizeof(out), 2000) == 0 && strstr(out, "PONG"))
            break;
        usleep(50000);
    }
    cr_assert(strstr(out, "PONG"), "redis-server is up");

    struct chain c;
    chain_start(&c, t_app("passthrough"), target);
    char *colon = strrchr(c.cproxy.addr, ':');
    char *bench[] = { "/usr/bin/redis-benchmark", "-h", "127.0.0.1", "-p", colon + 1, "-c", "20",
                      "-n", "20000", "-P", "4", "-t", "incr,lpush", "-q", NULL };
    int status = run(bench, out, sizeof(out), 120000);
    cr_assert(status == 0, "redis-benchmark failed: %s", out);

    /* The counters, read from the real server directly, show every request arrived once. */
    char *get[] = { "/usr/bin/redis-cli", "-p", port, "get", "counter:__rand_int__", NULL };
    cr_assert_eq(run(get, out, sizeof(out), 5000), 0);
    cr_assert_eq(strtoull(out, NULL, 10), 20000, "INCR counter: %s", out);
    char *llen[] = { "/usr/bin/redis-cli", "-p", port, "llen", "mylist", NULL };
    cr_assert_eq(run(llen, out, sizeof(out), 5000), 0);
    cr_assert_eq(strtoull(out, NULL, 10), 20000, "LPUSH list length: %s", out);

    char stats[1024];
    t_ctl(&c.edge, "stats", stats, sizeof(stats));
    cr_assert_eq(t_field(stats, "worker_deaths"), 0, "%s", stats);
    cr_assert(t_field(stats, "sessions_total") >= 40, "%s", stats);
    chain_stop(&c);
    kill(redis, SIGTERM);
    t_wait(redis, 5000);
    close(rfd);
}
