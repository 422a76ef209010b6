/* it_proxies.c - integration: unmodified TCP programs through both proxies and the edge. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <dirent.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "t_helpers.h"
#include "wire.h"

/* endpoint/relay.h RELAY_LIMIT. A proxy holds about twice that per direction at most; one
 * that does not stop reading holds all of the 96 MiB the tests send. */
#define RELAY_LIMIT_MIB 4

TestSuite(proxies, .timeout = 120);

/* plain server <- server proxy <- edge(app) <- client proxy; returns the client proxy. */
struct chain {
    struct t_proc sproxy, cproxy;
    struct t_edge edge;
};

/* wait_ms: the proxies' --linger-ms and --resume-timeout-ms (NULL: their defaults). */
static void chain_start_wait(struct chain *c, const char *app, const char *target,
                             const char *wait_ms)
{
    const char *dir = t_tmpdir();
    char *sargv[] = { (char *)t_bin("cessna-server-proxy"), "--listen", "127.0.0.1:0",
                      "--target", (char *)target, wait_ms ? "--linger-ms" : NULL,
                      (char *)wait_ms, NULL };
    t_start(&c->sproxy, dir, "server-proxy", sargv);
    t_edge_start(&c->edge, app, c->sproxy.addr, NULL);
    char *cargv[] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0",
                      "--edge", c->edge.sup.addr, wait_ms ? "--resume-timeout-ms" : NULL,
                      (char *)wait_ms, NULL };
    t_start(&c->cproxy, dir, "client-proxy", cargv);
}

static void chain_start(struct chain *c, const char *app, const char *target)
{
    chain_start_wait(c, app, target, NULL);
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
    size_t total;                 /* 0: 1 MiB */
    pthread_barrier_t *hold;      /* if set: wait here twice before closing */
};

/* Streams 1 MiB through the proxies in odd-sized writes while reading the echo. */
static void *plain_stream(void *p)
{
    struct plain_arg *a = p;
    size_t total = a->total ? a->total : 1 << 20, sent = 0, got = 0;
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
    if (a->hold) {   /* every connection stays open while the test looks at the proxies */
        pthread_barrier_wait(a->hold);
        pthread_barrier_wait(a->hold);
    }
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

/* A native server on libcessna-endpoint stores no snapshots (no WIRE_F_STORES): such a
 * session cannot move, and the client proxy must not keep its messages for a resume that
 * cannot happen, or it would stop at --keep-max-bytes. 8 MiB through a 1 MiB keep. */
Test(proxies, a_session_that_cannot_move_does_not_fill_the_keep, .timeout = 120)
{
    struct t_echo_ep echo;
    struct t_proc cp;
    struct t_edge edge;
    enum { TOTAL = 8 << 20, CHUNK = 16384 };
    static uint8_t out[CHUNK], back[TOTAL];

    t_echo_ep_start(&echo);
    t_edge_start(&edge, t_app("passthrough"), echo.addr, "snapshot_interval_ms = 20\n");
    char *argv[] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0", "--edge",
                     edge.sup.addr, "--keep-max-bytes", "1048576", NULL };
    t_start(&cp, t_tmpdir(), "client-proxy", argv);
    int fd = t_connect(cp.addr);
    size_t got = 0;
    for (size_t sent = 0; sent < TOTAL; sent += CHUNK) {
        t_fill(out, CHUNK, sent / CHUNK);
        t_write_all(fd, out, CHUNK);   /* lockstep: each chunk is one message */
        long n = t_read_n(fd, back + got, CHUNK, 10000);
        cr_assert_eq(n, CHUNK, "echo of chunk %zu: %ld (the proxy stopped reading?)",
                     sent / CHUNK, n);
        cr_assert(!memcmp(back + got, out, CHUNK), "chunk %zu differs", sent / CHUNK);
        got += CHUNK;
    }
    close(fd);
    t_stop(&cp);
    t_edge_stop(&edge);
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

/* ---- one process per proxy, and nothing left behind ---- */

/* Open descriptors of a process. */
static int fd_count(pid_t pid)
{
    char path[64];
    struct dirent *de;
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    cr_assert(d, "opendir %s", path);
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Threads of a process (the Threads: line of /proc/PID/status). */
static int thread_count(pid_t pid)
{
    char path[64], line[256];
    int n = -1;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert(f, "open %s", path);
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

/* Fail unless pid has no child process, live or zombie. */
static void expect_no_children(pid_t pid, const char *who)
{
    pid_t live[8];
    int nlive, zombies = t_children(pid, NULL, 0, live, 8, &nlive);

    cr_expect_eq(nlive + zombies, 0, "%s has %d children (%d zombies)", who, nlive + zombies,
                 zombies);
    cr_expect_eq(thread_count(pid), 1, "%s is one thread", who);
}

/* Wait up to timeout_ms for pid's descriptor count to come down to want. The last count. */
static int wait_fds(pid_t pid, int want, int timeout_ms)
{
    long end = t_now_ms() + timeout_ms;
    int n;

    while ((n = fd_count(pid)) > want && t_now_ms() < end)
        usleep(20000);
    return n;
}

Test(proxies, one_process_serves_200_connections_byte_exact, .timeout = 240)
{
    enum { N = 200 };
    struct t_echo_tcp echo;
    struct chain c;
    static struct plain_arg args[N];
    static pthread_t th[N];
    pthread_barrier_t hold;

    t_echo_tcp_start(&echo);
    chain_start(&c, t_app("passthrough"), echo.addr);
    int cfds = fd_count(c.cproxy.pid), sfds = fd_count(c.sproxy.pid);
    pthread_barrier_init(&hold, NULL, N + 1);
    for (int i = 0; i < N; i++) {
        args[i] = (struct plain_arg){ .addr = c.cproxy.addr, .index = i, .total = 96 * 1024,
                                      .hold = &hold };
        cr_assert_eq(pthread_create(&th[i], NULL, plain_stream, &args[i]), 0);
    }
    pthread_barrier_wait(&hold);   /* every stream done, every connection still open */
    int copen = fd_count(c.cproxy.pid), sopen = fd_count(c.sproxy.pid);
    expect_no_children(c.cproxy.pid, "client proxy");
    expect_no_children(c.sproxy.pid, "server proxy");
    pthread_barrier_wait(&hold);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_expect(args[i].ok, "stream %d: %s", i, args[i].why);
    }
    /* One process holds both connections of every session. */
    cr_expect_geq(copen, cfds + 2 * N, "client proxy fds %d -> %d", cfds, copen);
    cr_expect_geq(sopen, sfds + 2 * N, "server proxy fds %d -> %d", sfds, sopen);
    cr_expect_eq(wait_fds(c.cproxy.pid, cfds, 10000), cfds, "client proxy fds back to %d", cfds);
    cr_expect_eq(wait_fds(c.sproxy.pid, sfds, 10000), sfds, "server proxy fds back to %d", sfds);
    chain_stop(&c);
    pthread_barrier_destroy(&hold);
}

static void start_sproxy(struct t_proc *p, const char *target, const char *hs_ms)
{
    char *argv[] = { (char *)t_bin("cessna-server-proxy"), "--listen", "127.0.0.1:0",
                     "--target", (char *)target, hs_ms ? "--handshake-timeout-ms" : NULL,
                     (char *)hs_ms, NULL };
    t_start(p, t_tmpdir(), "server-proxy", argv);
}

Test(proxies, server_proxy_forgets_connections_that_end_before_hello, .timeout = 60)
{
    struct t_echo_tcp echo;
    struct t_proc sp;
    uint8_t hello[WIRE_RESUME_MAX];
    size_t hlen = wire_put_hello_edge(hello, 77, 1, (const uint8_t[WIRE_VERIFIER_LEN]){0}, NULL, 0);

    t_echo_tcp_start(&echo);
    start_sproxy(&sp, echo.addr, NULL);
    int base = fd_count(sp.pid);
    for (int i = 0; i < 100; i++) {
        int fd = t_connect(sp.addr);
        if (i % 2)   /* half of them send part of a HELLO first */
            t_write_all(fd, hello, 1 + (size_t)i % (hlen - 1));
        close(fd);
    }
    /* A real session after them: once it is welcomed, the proxy has taken every one of
     * the 100 from its accept queue. */
    int fd = t_connect(sp.addr);
    uint8_t buf[256];
    t_write_all(fd, hello, hlen);
    long n = t_read_frame(fd, buf, sizeof(buf), 5000);
    cr_assert_gt(n, 0, "WELCOME after the 100 broken connections");
    cr_expect_eq(buf[3], WIRE_WELCOME);
    t_write_all(fd, buf, wire_put_close(buf));   /* an orderly end: no linger */
    cr_expect_gt(t_read_frame(fd, buf, sizeof(buf), 5000), 0, "CLOSE");
    cr_expect_eq(buf[3], WIRE_CLOSE);
    close(fd);
    cr_expect_eq(wait_fds(sp.pid, base, 5000), base, "server proxy fds back to %d", base);
    expect_no_children(sp.pid, "server proxy");
    t_stop(&sp);
}

Test(proxies, silent_connections_closed_after_handshake_timeout, .timeout = 60)
{
    struct t_echo_tcp echo;
    struct t_proc sp, cp;
    char err[128], addr[64];

    /* Server proxy: an edge that connects and says nothing. */
    t_echo_tcp_start(&echo);
    start_sproxy(&sp, echo.addr, "400");
    int base = fd_count(sp.pid);
    long t0 = t_now_ms();
    int fd = t_connect(sp.addr);
    t_expect_eof(fd, 3000, "server proxy closes a silent edge connection");
    long waited = t_now_ms() - t0;
    cr_expect(waited >= 350, "closed after %ld ms, before the 400 ms timeout", waited);
    close(fd);
    cr_expect_eq(wait_fds(sp.pid, base, 2000), base);
    t_stop(&sp);

    /* Client proxy: an edge that accepts (in the kernel) and never answers HELLO. */
    int lfd = addr_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert_geq(lfd, 0, "%s", err);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", addr_local_port(lfd));
    char *cargv[] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0",
                      "--edge", addr, "--handshake-timeout-ms", "400", NULL };
    t_start(&cp, t_tmpdir(), "client-proxy", cargv);
    base = fd_count(cp.pid);
    t0 = t_now_ms();
    fd = t_connect(cp.addr);
    t_expect_eof(fd, 3000, "client proxy gives up on a silent edge");
    waited = t_now_ms() - t0;
    cr_expect(waited >= 350, "closed after %ld ms, before the 400 ms timeout", waited);
    close(fd);
    cr_expect_eq(wait_fds(cp.pid, base, 2000), base);
    t_stop(&cp);
    close(lfd);
}

Test(proxies, clients_that_give_up_right_after_hello_leave_nothing, .timeout = 120)
{
    struct t_echo_tcp echo;
    struct chain c;
    uint8_t hello[WIRE_RESUME_MAX];
    size_t hlen = wire_put_hello(hello, WIRE_ROLE_CLIENT, 0, NULL);

    t_echo_tcp_start(&echo);
    /* A client gone without CLOSE may come back with RESUME: a session that got as far as
     * the server proxy waits --linger-ms for it (1.5 s here), then goes. */
    chain_start_wait(&c, t_app("passthrough"), echo.addr, "1500");
    int cbase = fd_count(c.cproxy.pid), sbase = fd_count(c.sproxy.pid);
    /* Native clients at the edge: HELLO, then gone. The edge drops each session, maybe
     * before its HELLO reaches the server proxy. */
    for (int i = 0; i < 100; i++) {
        int fd = t_connect(c.edge.sup.addr);
        t_write_all(fd, hello, hlen);
        close(fd);
    }
    /* Plain clients at the client proxy: connected, then gone at once. */
    for (int i = 0; i < 100; i++)
        close(t_connect(c.cproxy.addr));
    cr_expect_eq(wait_fds(c.sproxy.pid, sbase, 15000), sbase, "server proxy fds back to %d",
                 sbase);
    cr_expect_eq(wait_fds(c.cproxy.pid, cbase, 15000), cbase, "client proxy fds back to %d",
                 cbase);
    expect_no_children(c.sproxy.pid, "server proxy");
    expect_no_children(c.cproxy.pid, "client proxy");
    chain_stop(&c);
}

/* A plain client and a plain server with one session between them; "ping"/"pong" passed. */
struct pair {
    int lfd, client, server;
    char target[64];
    struct chain c;
};

/* wait_ms: the proxies' linger and resume timeout (NULL: defaults). */
static void pair_start(struct pair *p, const char *wait_ms)
{
    char err[128], buf[8];

    p->lfd = addr_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert_geq(p->lfd, 0, "%s", err);
    snprintf(p->target, sizeof(p->target), "127.0.0.1:%d", addr_local_port(p->lfd));
    chain_start_wait(&p->c, t_app("passthrough"), p->target, wait_ms);
    p->client = t_connect(p->c.cproxy.addr);
    t_write_all(p->client, "ping", 4);
    struct pollfd pf = { .fd = p->lfd, .events = POLLIN };
    cr_assert_eq(poll(&pf, 1, 10000), 1, "the server proxy connects to the plain server");
    p->server = accept(p->lfd, NULL, NULL);
    cr_assert_geq(p->server, 0);
    cr_assert_eq(t_read_n(p->server, buf, 4, 5000), 4);
    cr_assert_arr_eq(buf, "ping", 4);
    t_write_all(p->server, "pong", 4);
    cr_assert_eq(t_read_n(p->client, buf, 4, 5000), 4);
    cr_assert_arr_eq(buf, "pong", 4);
}

/* The only edge is gone: the client proxy cannot resume anywhere and the server proxy gets
 * no RESUME; after the resume timeout and the linger both plain peers see a reset. */
Test(proxies, edge_killed_resets_both_plain_peers_after_resume_timeout_and_linger,
     .timeout = 60)
{
    struct pair p;
    char buf[16];

    pair_start(&p, "1500");
    long t0 = t_now_ms();
    kill(p.c.edge.sup.pid, SIGKILL);
    long rc = t_recv_wait(p.client, buf, sizeof(buf), 8000);
    cr_expect_eq(rc, -ECONNRESET, "the client sees a reset, got %ld", rc);
    cr_expect_geq(t_now_ms() - t0, 1400, "not before the resume timeout");
    rc = t_recv_wait(p.server, buf, sizeof(buf), 8000);
    cr_expect_eq(rc, -ECONNRESET, "the server sees a reset, got %ld", rc);
    close(p.client);
    close(p.server);
    close(p.lfd);
    chain_stop(&p.c);
}

Test(proxies, orderly_close_is_a_clean_eof_at_both_plain_peers, .timeout = 60)
{
    struct pair p;
    char buf[16];

    pair_start(&p, NULL);
    shutdown(p.client, SHUT_WR);   /* the client is done: CLOSE through the edge */
    long rc = t_recv_wait(p.server, buf, sizeof(buf), 5000);
    cr_expect_eq(rc, 0, "the server sees a clean end, got %ld", rc);
    rc = t_recv_wait(p.client, buf, sizeof(buf), 5000);
    cr_expect_eq(rc, 0, "the client sees a clean end, got %ld", rc);
    close(p.client);
    close(p.server);
    close(p.lfd);
    chain_stop(&p.c);
}

Test(proxies, out_of_descriptors_pauses_accepting_without_spinning, .timeout = 60)
{
    struct t_echo_tcp echo;
    struct t_proc sp;
    uint8_t hello[WIRE_RESUME_MAX], buf[256];
    size_t hlen = wire_put_hello_edge(hello, 78, 1, (const uint8_t[WIRE_VERIFIER_LEN]){0}, NULL, 0);
    char nofile[64];
    struct dirent *de;
    int top = 0;

    if (access("/usr/bin/prlimit", X_OK))
        cr_skip_test("prlimit (util-linux) is not installed");
    /* The proxy's descriptor limit, fixed before it starts (an armed accept keeps the limit
     * it was armed with): a few above the highest descriptor it can inherit from us. */
    DIR *d = opendir("/proc/self/fd");
    cr_assert(d);
    while ((de = readdir(d)))
        if (atoi(de->d_name) > top)
            top = atoi(de->d_name);
    closedir(d);
    int limit = top + 16, n_conns = limit + 8;
    snprintf(nofile, sizeof(nofile), "--nofile=%d:%d", limit, limit);
    t_echo_tcp_start(&echo);
    char *argv[] = { "/usr/bin/prlimit", nofile, "--", (char *)t_bin("cessna-server-proxy"),
                     "--listen", "127.0.0.1:0", "--target", echo.addr, NULL };
    t_start(&sp, t_tmpdir(), "server-proxy", argv);
    int *fds = calloc((size_t)n_conns, sizeof(int));
    cr_assert(fds);
    for (int i = 0; i < n_conns; i++)   /* silent edges: some accepted, then EMFILE */
        fds[i] = t_connect(sp.addr);
    usleep(200000);
    long t0 = t_cpu_ticks(sp.pid);
    usleep(1000000);
    long used = t_cpu_ticks(sp.pid) - t0;
    cr_expect_lt(used, 20, "the proxy used %ld ticks in 1 s while out of descriptors", used);
    for (int i = 0; i < n_conns; i++)
        close(fds[i]);
    free(fds);

    /* Descriptors are back: accepting resumes and a real session opens. */
    int fd = -1;
    long n = 0;
    for (long end = t_now_ms() + 5000; n <= 0 && t_now_ms() < end;) {
        fd = t_connect(sp.addr);
        t_write_all(fd, hello, hlen);
        n = t_read_frame(fd, buf, sizeof(buf), 1000);
        if (n <= 0)
            close(fd);
    }
    cr_assert_gt(n, 0, "WELCOME once descriptors are free again");
    cr_expect_eq(buf[3], WIRE_WELCOME);
    close(fd);
    t_stop(&sp);

    char log[8192] = "";
    FILE *f = fopen(sp.log, "r");
    cr_assert(f, "open %s", sp.log);
    log[fread(log, 1, sizeof(log) - 1, f)] = 0;
    fclose(f);
    cr_expect(strstr(log, "accepting paused"), "the proxy logged the pause: %s", log);
}

/* ---- backpressure: a plain peer that does not read stops the edge, not the proxy's memory ---- */

struct out_writer {
    int fd;
    size_t total, chunk;
    volatile size_t written;   /* payload bytes fully written as OUT frames */
};

static void *out_writer_main(void *p)
{
    struct out_writer *w = p;
    uint8_t *frame = malloc(WIRE_OUT_HDR_LEN + w->chunk);
    uint64_t no = 0;

    for (size_t off = 0; frame && off < w->total; off += w->chunk) {
        size_t n = wire_put_out_hdr(frame, ++no, NULL, 0, w->chunk), done = 0;
        t_fill(frame + n, w->chunk, no);
        while (done < n + w->chunk) {
            ssize_t k = write(w->fd, frame + done, n + w->chunk - done);
            if (k <= 0)
                goto out;
            done += (size_t)k;
        }
        w->written = off + w->chunk;
    }
out:
    free(frame);
    return NULL;
}

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert(f, "open %s", path);
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

Test(proxies, a_target_that_does_not_read_stops_the_edge_within_bounded_memory, .timeout = 60)
{
    struct t_proc sp;
    struct out_writer w = { .total = 96u << 20, .chunk = 60000 };
    uint8_t hello[WIRE_RESUME_MAX], buf[1 << 16];
    char err[128], target[64];
    pthread_t th;

    w.total -= w.total % w.chunk;
    int lfd = addr_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert_geq(lfd, 0, "%s", err);
    snprintf(target, sizeof(target), "127.0.0.1:%d", addr_local_port(lfd));
    start_sproxy(&sp, target, NULL);
    long rss0 = rss_kib(sp.pid);
    w.fd = t_connect(sp.addr);
    t_write_all(w.fd, hello, wire_put_hello_edge(hello, 79, 1, (const uint8_t[WIRE_VERIFIER_LEN]){0}, NULL, 0));
    cr_assert_gt(t_read_frame(w.fd, buf, sizeof(buf), 5000), 0, "WELCOME");
    int tfd = accept(lfd, NULL, NULL);   /* the target: it does not read, for now */
    cr_assert_geq(tfd, 0);
    pthread_create(&th, NULL, out_writer_main, &w);

    /* The edge's writes stall once the buffers on the way are full. */
    size_t last = 0;
    for (int still = 0; still < 5; ) {
        usleep(200000);
        still = w.written == last ? still + 1 : 0;
        last = w.written;
    }
    long rss = rss_kib(sp.pid);
    cr_expect_lt(w.written, w.total / 2, "the edge wrote %zu of %zu bytes to a stalled session",
                 (size_t)w.written, w.total);
    /* What waits to be sent, and the same bytes kept for a resume (sanitizer builds: slack) */
    cr_expect_lt(rss - rss0, 12 * (RELAY_LIMIT_MIB << 10),
                 "the proxy grew by %ld KiB while the target did not read", rss - rss0);

    /* The target reads now: everything arrives, in order. */
    size_t got = 0;
    uint8_t *want = malloc(w.chunk);
    while (got < w.total) {
        long n = t_read_n(tfd, buf, sizeof(buf) < w.total - got ? sizeof(buf) : w.total - got,
                          10000);
        cr_assert_gt(n, 0, "the target got %zu of %zu bytes", got, w.total);
        for (long i = 0; i < n; ) {   /* compare against the writer's pattern, chunk by chunk */
            size_t at = (got + (size_t)i) % w.chunk, no = (got + (size_t)i) / w.chunk + 1;
            size_t len = w.chunk - at < (size_t)(n - i) ? w.chunk - at : (size_t)(n - i);
            t_fill(want, w.chunk, no);
            cr_assert_arr_eq(buf + i, want + at, len, "bytes at %zu differ", got + (size_t)i);
            i += (long)len;
        }
        got += (size_t)n;
    }
    pthread_join(th, NULL);
    cr_expect_eq(w.written, w.total);
    free(want);
    close(w.fd);
    close(tfd);
    close(lfd);
    t_stop(&sp);
}

struct plain_writer {
    int fd;
    size_t total;
    volatile size_t written;
};

static void *plain_writer_main(void *p)
{
    struct plain_writer *w = p;
    static uint8_t data[1 << 16];

    for (size_t off = 0; off < w->total; off += sizeof(data)) {
        size_t done = 0;
        for (size_t i = 0; i < sizeof(data); i++)
            data[i] = (uint8_t)((off + i) * 7 + 3);
        while (done < sizeof(data)) {
            ssize_t k = write(w->fd, data + done, sizeof(data) - done);
            if (k <= 0)
                return NULL;
            done += (size_t)k;
        }
        w->written = off + sizeof(data);
    }
    return NULL;
}

Test(proxies, an_edge_that_does_not_read_stops_the_client_within_bounded_memory, .timeout = 60)
{
    struct t_proc cp;
    struct plain_writer w = { .total = 96u << 20 };
    static uint8_t frame[(1 << 20) + 4096];
    char err[128], edge[64];
    pthread_t th;

    int lfd = addr_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert_geq(lfd, 0, "%s", err);
    snprintf(edge, sizeof(edge), "127.0.0.1:%d", addr_local_port(lfd));
    char *argv[] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0", "--edge",
                     edge, NULL };
    t_start(&cp, t_tmpdir(), "client-proxy", argv);
    long rss0 = rss_kib(cp.pid);
    w.fd = t_connect(cp.addr);
    int efd = accept(lfd, NULL, NULL);   /* the edge: WELCOME, then it does not read */
    cr_assert_geq(efd, 0);
    cr_assert_gt(t_read_frame(efd, frame, sizeof(frame), 5000), 0, "HELLO");
    t_write_all(efd, frame, wire_put_welcome(frame, 80, (const uint8_t *)"0123456789abcdef", 1));
    pthread_create(&th, NULL, plain_writer_main, &w);

    size_t last = 0;
    for (int still = 0; still < 5; ) {
        usleep(200000);
        still = w.written == last ? still + 1 : 0;
        last = w.written;
    }
    long rss = rss_kib(cp.pid);
    cr_expect_lt(w.written, w.total / 2, "the client wrote %zu of %zu bytes to a stalled session",
                 (size_t)w.written, w.total);
    /* What waits to be sent, and the same bytes kept for a resume (sanitizer builds: slack) */
    cr_expect_lt(rss - rss0, 12 * (RELAY_LIMIT_MIB << 10),
                 "the proxy grew by %ld KiB while the edge did not read", rss - rss0);

    /* The edge reads now: DATA 1, 2, 3, ... carry every byte in order. */
    size_t got = 0;
    uint64_t seq = 0;
    while (got < w.total) {
        long n = t_read_frame(efd, frame, sizeof(frame), 10000);
        struct wire_frame f;
        cr_assert_gt(n, 0, "the edge got %zu of %zu bytes", got, w.total);
        cr_assert_eq(wire_next(frame, (size_t)n, sizeof(frame), &f), n);
        cr_assert_eq(f.type, WIRE_DATA);
        cr_assert_eq(f.u.data.seq, ++seq);
        for (size_t i = 0; i < f.u.data.len; i++)
            if (f.u.data.payload[i] != (uint8_t)((got + i) * 7 + 3))
                cr_assert_fail("byte %zu differs", got + i);
        got += f.u.data.len;
        if (seq % 64 == 0) {   /* a snapshot off the node now covers them: the proxy frees */
            uint8_t d[WIRE_HDR_LEN + 24];
            t_write_all(efd, d, wire_put_snap_durable(d, 0, seq, 0));
        }
    }
    pthread_join(th, NULL);
    cr_expect_eq(got, w.total);
    close(w.fd);
    close(efd);
    close(lfd);
    t_stop(&cp);
}

/* A plain server that writes len bytes (t_fill, seed 5) on the one connection it accepts,
 * then ends it (FIN) and reads until the peer's end. */
struct blaster {
    int lfd;
    size_t len;
};

static void *blaster_main(void *p)
{
    struct blaster *b = p;
    int fd = accept(b->lfd, NULL, NULL);
    uint8_t *buf = malloc(b->len);
    char sink[4096];

    if (fd >= 0) {
        t_fill(buf, b->len, 5);
        t_write_all(fd, buf, b->len);
        shutdown(fd, SHUT_WR);
        while (read(fd, sink, sizeof(sink)) > 0)
            ;
        close(fd);
    }
    free(buf);
    return NULL;
}

/* The server ends the session (an orderly end) while its client, behind the client proxy,
 * reads slowly: 8 MB at about 700 kB/s, so the proxy still holds most of it well past its
 * 5 s drain deadline after the CLOSE. A reader that keeps reading gets every byte, then a
 * clean EOF (the deadline counted from the CLOSE cut it short with a FIN, ~2 MB missing). */
Test(proxies, a_slow_reader_gets_everything_after_an_orderly_end, .timeout = 90)
{
    static uint8_t want[8 << 20], got[8 << 20];
    struct blaster b = { .len = sizeof(want) };
    struct chain c;
    pthread_t th;
    size_t n = 0;
    long rc = 0;

    char err[128], target[64];
    b.lfd = addr_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert_geq(b.lfd, 0, "%s", err);
    snprintf(target, sizeof(target), "127.0.0.1:%d", addr_local_port(b.lfd));
    chain_start(&c, t_app("passthrough"), target);
    pthread_create(&th, NULL, blaster_main, &b);
    int fd = t_connect(c.cproxy.addr);
    t_write_all(fd, "hello", 5);   /* the session's first message: the server connects */
    for (long deadline = t_now_ms() + 60000; n < sizeof(got) && t_now_ms() < deadline;) {
        size_t ask = sizeof(got) - n < 16384 ? sizeof(got) - n : 16384;
        rc = t_recv_wait(fd, got + n, ask, 6000);
        if (rc <= 0)
            break;
        n += (size_t)rc;
        usleep(20000);   /* about 16 KiB per 20 ms */
    }
    cr_assert_eq(n, sizeof(got), "%zu of %zu bytes, then %ld", n, sizeof(got), rc);
    t_fill(want, sizeof(want), 5);
    cr_assert(memcmp(got, want, sizeof(got)) == 0, "the bytes differ");
    rc = t_recv_wait(fd, got, 16, 6000);
    cr_assert_eq(rc, 0, "after the last byte: %ld, not a clean EOF", rc);
    close(fd);
    pthread_join(th, NULL);
    close(b.lfd);
    chain_stop(&c);
}
