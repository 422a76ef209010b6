/* it_edgechoice.c - integration: timeouts an operator sets, and the client proxy's choice
 * of edge. An edge that accepts and never answers costs the first connection one handshake
 * timeout, then is skipped (--edge-retry-ms) while a working edge answers, and is tried
 * again after the interval; edges that all failed recently are tried anyway; the connect
 * step has its own timeout; the supervisor's zygote and control timeouts are config keys.
 * Real processes, real sockets on loopback, real signals. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "wire.h"

TestSuite(edgechoice, .timeout = 90);

/* A listening socket nobody accepts from: the kernel completes connections into its
 * queue (up to backlog + 1), so a peer connects and then hears nothing. */
static int dead_listener(int backlog, char *addr, size_t len)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    cr_assert(fd >= 0);
    cr_assert(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind: %s", strerror(errno));
    cr_assert(listen(fd, backlog) == 0, "listen: %s", strerror(errno));
    cr_assert(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    snprintf(addr, len, "127.0.0.1:%d", ntohs(sa.sin_port));
    return fd;
}

/* How many connections reached the dead listener so far (taken off its queue and kept
 * open, silent, in held[]). */
static int held[64], nheld;
static int arrivals(int lfd)
{
    int fd;

    while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
        if (nheld < 64)
            held[nheld++] = fd;
        else
            close(fd);
    }
    return nheld;
}

static void release_held(void)
{
    while (nheld)
        close(held[--nheld]);
}

static void start_cproxy(struct t_proc *p, const char *edges, char *const extra[])
{
    char *argv[24] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0",
                       "--edge", (char *)edges };
    int n = 5;

    for (int i = 0; extra && extra[i] && n < 23; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    t_start(p, t_tmpdir(), "client-proxy", argv);
}

/* A new plain connection through the client proxy, one message there and back: the ms it
 * took (the test stops when the echo does not come). */
static long round_trip_ms(const char *proxy, int i)
{
    char msg[32], buf[32];
    long t0 = t_now_ms();
    int fd = t_connect(proxy);
    int n = snprintf(msg, sizeof(msg), "message %d", i);

    t_write_all(fd, msg, (size_t)n);
    long got = t_read_n(fd, buf, (size_t)n, 8000);
    long took = t_now_ms() - t0;
    close(fd);
    cr_assert_eq(got, n, "connection %d: the echo through the proxy (got %ld)", i, got);
    cr_assert(memcmp(buf, msg, (size_t)n) == 0, "connection %d: the same bytes", i);
    return took;
}

Test(edgechoice, dead_edge_costs_one_timeout_then_is_skipped_until_the_retry_interval)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct t_proc cp;
    char dead[64], edges[160];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    int lfd = dead_listener(64, dead, sizeof(dead));
    snprintf(edges, sizeof(edges), "%s,%s", dead, e.sup.addr);   /* the dead one first */
    start_cproxy(&cp, edges, (char *[]){ "--handshake-timeout-ms", "300",
                                         "--edge-retry-ms", "2000", NULL });

    /* The first connection pays the dead edge's handshake timeout, once. */
    long first = round_trip_ms(cp.addr, 0);
    cr_expect_geq(first, 280, "the first connection waited for the dead edge (%ld ms)", first);
    cr_expect_lt(first, 1500, "and only for its 300 ms timeout (%ld ms)", first);
    cr_assert_eq(arrivals(lfd), 1, "the dead edge was tried once");

    /* The next ones go straight to the working edge (a way through the dead one costs at
     * least its 300 ms timeout; the arrivals at it are counted too). */
    long t_start_ms = t_now_ms();
    for (int i = 1; i <= 8; i++) {
        long took = round_trip_ms(cp.addr, i);
        cr_expect_lt(took, 200, "connection %d skipped the dead edge (%ld ms)", i, took);
    }
    cr_assert_lt(t_now_ms() - t_start_ms, 1800, "the 8 connections ran inside the interval");
    cr_expect_eq(arrivals(lfd), 1, "no connection reached the dead edge meanwhile");

    /* After --edge-retry-ms the dead edge is tried again (it might be back). */
    usleep(2100 * 1000);
    long again = round_trip_ms(cp.addr, 9);
    cr_expect_geq(again, 280, "after the interval the dead edge was tried (%ld ms)", again);
    cr_expect_eq(arrivals(lfd), 2, "a second connection reached the dead edge");
    long after = round_trip_ms(cp.addr, 10);
    cr_expect_lt(after, 200, "and then skipped again (%ld ms)", after);
    cr_expect_eq(arrivals(lfd), 2);

    t_stop(&cp);
    t_edge_stop(&e);
    release_held();
    close(lfd);
}

Test(edgechoice, edges_that_all_failed_recently_are_tried_again_not_refused)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct t_proc cp;
    char dead[64], edges[160];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    int lfd = dead_listener(64, dead, sizeof(dead));
    snprintf(edges, sizeof(edges), "%s,%s", e.sup.addr, dead);
    start_cproxy(&cp, edges, (char *[]){ "--handshake-timeout-ms", "300",
                                         "--edge-retry-ms", "60000", NULL });

    /* The edge hangs (stopped): both edges fail this connection, which is closed. */
    cr_assert_eq(kill(e.sup.pid, SIGSTOP), 0);
    long t0 = t_now_ms();
    int fd = t_connect(cp.addr);
    t_write_all(fd, "x", 1);
    t_expect_eof(fd, 5000, "no edge took the session: the client is closed");
    long took = t_now_ms() - t0;
    close(fd);
    cr_expect_geq(took, 560, "both edges were waited for (%ld ms)", took);
    cr_expect_eq(arrivals(lfd), 1);

    /* Both failed within --edge-retry-ms; the edge is back. The next connection tries them
     * anyway, in list order, and the first one answers at once. */
    cr_assert_eq(kill(e.sup.pid, SIGCONT), 0);
    for (int i = 0; i < 3; i++) {
        long rt = round_trip_ms(cp.addr, i);
        cr_expect_lt(rt, 250, "connection %d: the edge that is back, first (%ld ms)", i, rt);
    }
    cr_expect_eq(arrivals(lfd), 1, "the dead edge was not needed");

    t_stop(&cp);
    t_edge_stop(&e);
    release_held();
    close(lfd);
}

Test(edgechoice, connect_timeout_is_separate_from_the_handshake_timeout)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct t_proc cp;
    char full[64], edges[160];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    /* Backlog 0 holds one connection; with it taken, the kernel drops further SYNs, so a
     * connect to it hangs. */
    int lfd = dead_listener(0, full, sizeof(full));
    int filler = t_connect(full);
    snprintf(edges, sizeof(edges), "%s,%s", full, e.sup.addr);
    start_cproxy(&cp, edges, (char *[]){ "--connect-timeout-ms", "300",
                                         "--handshake-timeout-ms", "5000", NULL });

    long first = round_trip_ms(cp.addr, 0);
    cr_expect_geq(first, 280, "the connect to the full listener was waited for (%ld ms)", first);
    cr_expect_lt(first, 2000, "for --connect-timeout-ms, not the 5 s handshake (%ld ms)", first);
    long next = round_trip_ms(cp.addr, 1);
    cr_expect_lt(next, 200, "then that edge is skipped (%ld ms)", next);

    t_stop(&cp);
    t_edge_stop(&e);
    close(filler);
    close(lfd);
}

Test(edgechoice, proxies_refuse_bad_timeout_options)
{
    const char *dir = t_tmpdir();
    struct {
        const char *bin, *opt, *val, *want;
    } cases[] = {
        { "cessna-client-proxy", "--edge-retry-ms", "-1", "bad --edge-retry-ms '-1'" },
        { "cessna-client-proxy", "--connect-timeout-ms", "0", "bad --connect-timeout-ms '0'" },
        { "cessna-client-proxy", "--resume-backoff-max-ms", "x", "bad --resume-backoff-max-ms" },
        { "cessna-client-proxy", "--edge", ",", "bad --edge: no address" },
        { "cessna-server-proxy", "--close-wait-ms", "0", "bad --close-wait-ms '0'" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char name[32], log[512], text[1024] = "";
        int client = strcmp(cases[i].bin, "cessna-client-proxy") == 0, out;
        char *argv[] = { (char *)t_bin(cases[i].bin), "--listen", "127.0.0.1:0",
                         client ? "--edge" : "--target", "127.0.0.1:1",
                         (char *)cases[i].opt, (char *)cases[i].val, NULL };
        snprintf(name, sizeof(name), "bad%zu", i);
        pid_t pid = t_start_raw(dir, name, argv, &out);
        int status = t_wait(pid, 5000);
        close(out);
        cr_expect(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 2,
                  "%s %s %s: exit status 2 (status %d)", cases[i].bin, cases[i].opt,
                  cases[i].val, status);
        snprintf(log, sizeof(log), "%s/%s.log", dir, name);
        FILE *f = fopen(log, "r");
        if (f) {
            size_t n = fread(text, 1, sizeof(text) - 1, f);
            text[n] = 0;
            fclose(f);
        }
        cr_expect(strstr(text, cases[i].want), "%s %s %s: says '%s'; got: %s", cases[i].bin,
                  cases[i].opt, cases[i].val, cases[i].want, text);
    }
}

/* Frames from fd until an ERROR (its text into text), or nothing for timeout_ms: 1 or 0. */
static int read_until_error(int fd, char *text, size_t len, int timeout_ms)
{
    uint8_t buf[4096];
    long deadline = t_now_ms() + timeout_ms;

    while (t_now_ms() < deadline) {
        long n = t_read_frame(fd, buf, sizeof(buf), (int)(deadline - t_now_ms()));
        struct wire_frame f;
        if (n <= 0)
            return 0;
        if (wire_next(buf, (size_t)n, sizeof(buf), &f) != n)
            return 0;
        if (f.type == WIRE_ERROR) {
            snprintf(text, len, "%.*s", (int)f.u.error.text_len, f.u.error.text);
            return 1;
        }
    }
    return 0;
}

Test(edgechoice, zygote_answer_timeout_ms_restarts_a_zygote_that_hangs)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char out[4096], text[512] = "";
    uint8_t hello[64];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "zygote_answer_timeout_ms = 400\n");
    t_ctl(&e, "stats", out, sizeof(out));
    pid_t zyg = (pid_t)t_field(out, "zygote_pid");
    cr_assert_gt(zyg, 0, "%s", out);
    cr_assert_eq(kill(zyg, SIGSTOP), 0);   /* hung: it never answers a spawn */

    int fd = t_connect(e.sup.addr);
    long t0 = t_now_ms();
    t_write_all(fd, hello, wire_put_hello(hello, WIRE_ROLE_CLIENT, 0, NULL));
    cr_assert(read_until_error(fd, text, sizeof(text), 4000),
              "the session fails with an ERROR well before the default 5 s");
    long took = t_now_ms() - t0;
    close(fd);
    cr_expect(strstr(text, "zygote_answer_timeout_ms"), "the ERROR names the key: %s", text);
    cr_expect_geq(took, 380, "after the 400 ms timeout (%ld ms)", took);
    cr_expect_lt(took, 3000, "not the 5 s default (%ld ms)", took);

    /* The hung zygote was killed and a new one started: sessions open again. */
    long deadline = t_now_ms() + 10000;
    do {
        usleep(50000);
        t_ctl(&e, "stats", out, sizeof(out));
    } while ((t_field(out, "zygote_restarts") < 1 || !strstr(out, "zygote=up")) &&
             t_now_ms() < deadline);
    cr_assert_geq(t_field(out, "zygote_restarts"), 1, "%s", out);
    cr_expect_neq((pid_t)t_field(out, "zygote_pid"), zyg, "%s", out);
    struct cessna_ep *ep = t_ep_connect(&e);
    const void *data;
    cr_assert_eq(cessna_ep_send(ep, "after", 5), 0);
    cr_assert_eq(cessna_ep_recv(ep, &data), 5, "%s", cessna_ep_error(ep));
    cessna_ep_close(ep, 2000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

Test(edgechoice, control_timeout_ms_closes_a_silent_control_connection)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char out[4096];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "control_timeout_ms = 300\n");
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", e.control);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
              "control socket: %s", strerror(errno));
    long t0 = t_now_ms();
    t_expect_eof(fd, 3000, "the supervisor closes a control connection that says nothing");
    long took = t_now_ms() - t0;
    close(fd);
    cr_expect_geq(took, 280, "after control_timeout_ms = 300 (%ld ms)", took);
    cr_expect_lt(took, 900, "not the 1 s default (%ld ms)", took);
    t_ctl(&e, "stats", out, sizeof(out));
    cr_expect_eq(t_field(out, "ctl_timeouts"), 1, "%s", out);
    t_edge_stop(&e);
}

/* cessna_ep_connect_opts with a list: the time it took to open a session and echo once. */
static long native_round_trip_ms(const char *edges, const struct cessna_ep_options *o)
{
    char err[256];
    const void *data;
    long t0 = t_now_ms();
    struct cessna_ep *ep = cessna_ep_connect_opts(edges, o, err, sizeof(err));

    cr_assert(ep, "a session through %s: %s", edges, err);
    cr_assert_eq(cessna_ep_send(ep, "native", 6), 0);
    cr_assert_eq(cessna_ep_recv(ep, &data), 6, "%s", cessna_ep_error(ep));
    long took = t_now_ms() - t0;
    cessna_ep_close(ep, 2000);
    cessna_ep_free(ep);
    return took;
}

Test(edgechoice, native_client_skips_a_failed_edge_and_times_out_its_connect)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char dead[64], full[64], edges[240];
    struct cessna_ep_options o = { .handshake_timeout_ms = 300, .edge_retry_ms = 2000 };

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    int lfd = dead_listener(64, dead, sizeof(dead));
    int ffd = dead_listener(0, full, sizeof(full));
    int filler = t_connect(full);   /* its one place taken: connects to it hang */

    /* An edge whose connect hangs, one that never answers HELLO, a working one. */
    snprintf(edges, sizeof(edges), "%s,%s,%s", full, dead, e.sup.addr);
    long first = native_round_trip_ms(edges, &o);
    cr_expect_geq(first, 560, "both bad edges were waited for, 300 ms each (%ld ms)", first);
    cr_expect_lt(first, 2000, "and no longer (%ld ms)", first);
    cr_expect_eq(arrivals(lfd), 1);
    for (int i = 0; i < 5; i++) {
        long took = native_round_trip_ms(edges, &o);
        cr_expect_lt(took, 200, "session %d went straight to the working edge (%ld ms)", i, took);
    }
    cr_expect_eq(arrivals(lfd), 1, "the silent edge was skipped");

    /* edge_retry_ms = -1: nothing is skipped, every session pays for both again. */
    struct cessna_ep_options never = { .handshake_timeout_ms = 300, .edge_retry_ms = -1 };
    long took = native_round_trip_ms(edges, &never);
    cr_expect_geq(took, 560, "without skipping, the bad edges are waited for (%ld ms)", took);
    cr_expect_eq(arrivals(lfd), 2);

    t_edge_stop(&e);
    release_held();
    close(filler);
    close(ffd);
    close(lfd);
}
