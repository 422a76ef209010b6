/* it_zygote.c - workers are asked of the zygote without waiting for it: a zygote that stops
 * answering stalls no live session, the sessions waiting for it fail with an ERROR naming
 * it, and it is replaced. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cessna_endpoint.h"
#include "t_helpers.h"

struct echoer {
    struct cessna_ep *ep;
    volatile int stop;
    long worst_ms;
    int trips, bad;
};

static void *echo_loop(void *p)
{
    struct echoer *a = p;

    while (!a->stop) {
        const void *got;
        long t0 = t_now_ms();
        if (cessna_ep_send(a->ep, "ping", 4) < 0 || cessna_ep_recv(a->ep, &got) != 4) {
            a->bad++;
            return NULL;
        }
        if (t_now_ms() - t0 > a->worst_ms)
            a->worst_ms = t_now_ms() - t0;
        a->trips++;
        usleep(5000);
    }
    return NULL;
}

struct opener { const struct t_edge *e; char err[256]; long rc; };

/* A new session: WELCOME may come before its worker exists (events wait for it); its first
 * message must end in an ERROR when the worker never comes. */
static void *open_session(void *p)
{
    struct opener *o = p;
    struct cessna_ep *ep = cessna_ep_connect(o->e->sup.addr, o->err, sizeof(o->err));
    const void *got;

    if (!ep) {
        o->rc = -ECONNREFUSED;
        return NULL;
    }
    if (cessna_ep_send(ep, "first", 5) == 0)
        o->rc = cessna_ep_recv(ep, &got);
    snprintf(o->err, sizeof(o->err), "%s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    return NULL;
}

Test(zygote, a_stopped_zygote_stalls_no_live_session, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct echoer a = { 0 };
    struct opener o;
    pthread_t te, to;
    char err[256], out[2048];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    a.ep = cessna_ep_connect(e.sup.addr, err, sizeof(err));
    cr_assert_not_null(a.ep, "%s", err);
    t_ctl(&e, "stats", out, sizeof(out));
    pid_t zygote = (pid_t)t_field(out, "zygote_pid");
    cr_assert_gt(zygote, 0, "%s", out);

    const void *got;
    cr_assert_eq(cessna_ep_send(a.ep, "warm", 4), 0);   /* its worker exists before the stop */
    cr_assert_eq(cessna_ep_recv(a.ep, &got), 4, "%s", cessna_ep_error(a.ep));
    pthread_create(&te, NULL, echo_loop, &a);
    kill(zygote, SIGSTOP);
    o = (struct opener){ .e = &e };
    long t0 = t_now_ms();
    pthread_create(&to, NULL, open_session, &o);   /* waits on the stopped zygote */
    usleep(1500000);
    t_ctl(&e, "stats", out, sizeof(out));   /* the control socket answers meanwhile */
    cr_assert(strstr(out, "sessions="), "%s", out);
    pthread_join(to, NULL);
    long waited = t_now_ms() - t0;
    a.stop = 1;
    pthread_join(te, NULL);
    kill(zygote, SIGCONT);

    cr_assert(o.rc < 0, "a session without a worker answered: %ld", o.rc);
    cr_assert(strstr(o.err, "zygote"), "the error names the zygote: %s", o.err);
    cr_assert_geq(waited, 4000, "failed after the zygote's answer timeout, not before");
    cr_assert_eq(a.bad, 0, "the live session lost an echo");
    cr_assert_gt(a.trips, 100, "the live session went on: %d round trips", a.trips);
    cr_assert_lt(a.worst_ms, 1000, "worst echo %ld ms while the zygote hung", a.worst_ms);
    cr_log_info("live session: %d trips, worst %ld ms", a.trips, a.worst_ms);

    /* A new zygote takes over; new sessions start again. */
    struct cessna_ep *ep = NULL;
    for (long deadline = t_now_ms() + 15000; !ep && t_now_ms() < deadline; usleep(100000))
        ep = cessna_ep_connect(e.sup.addr, err, sizeof(err));
    cr_assert_not_null(ep, "no session after the zygote's restart: %s", err);
    cr_assert_eq(cessna_ep_send(ep, "after", 5), 0);
    cr_assert_eq(cessna_ep_recv(ep, &got), 5);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    cessna_ep_close(a.ep, 5000);
    cessna_ep_free(a.ep);
    t_edge_stop(&e);
}

/* Each session sends "message I" and must get it back; then it is freed. */
static void echo_each_and_free(struct cessna_ep **eps, int n)
{
    char msg[32];

    for (int i = 0; i < n; i++) {
        const void *got;
        int len = snprintf(msg, sizeof(msg), "message %d", i);
        cr_assert_eq(cessna_ep_send(eps[i], msg, (size_t)len), 0);
        long got_len = cessna_ep_recv(eps[i], &got);
        cr_assert(got_len == len && memcmp(got, msg, (size_t)len) == 0, "session %d: %ld %s", i,
                  got_len, cessna_ep_error(eps[i]));
        cessna_ep_free(eps[i]);
    }
}

/* A burst of new sessions larger than the zygote's socket can hold (the zygote is stopped
 * while they open): the spawn requests that do not fit wait in the supervisor and go when
 * there is room again. Every session echoes; none fails. */
Test(zygote, a_burst_larger_than_its_socket_waits, .timeout = 120)
{
    enum { N = 600 };
    static struct cessna_ep *eps[N];
    struct t_echo_ep srv;
    struct t_edge e;
    char out[4096], err[256];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "max_sessions = 700\n");
    t_ctl(&e, "stats", out, sizeof(out));
    pid_t z = (pid_t)t_field(out, "zygote_pid");
    cr_assert(z > 0, "%s", out);
    kill(z, SIGSTOP);
    for (int i = 0; i < N; i++) {
        eps[i] = cessna_ep_connect(e.sup.addr, err, sizeof(err));
        cr_assert(eps[i], "session %d: %s", i, err);
    }
    usleep(300 * 1000);   /* a few ticks find the socket still full */
    t_ctl(&e, "stats", out, sizeof(out));
    kill(z, SIGCONT);
    cr_assert_gt(t_field(out, "zygote_spawns_deferred"), 0,
                 "the burst should not fit in the zygote's socket: %s", out);
    echo_each_and_free(eps, N);
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "sessions_failed"), 0, "%s", out);
    t_edge_stop(&e);
}

/* The zygote runs only in short windows (stopped and continued by a thread, a fork or two
 * each time), so a burst of spawns takes many times zygote_answer_timeout_ms to go through
 * while no gap between two answers comes near it: a slow but steady zygote is not hung.
 * (Counted from each request's sending, the head of such a queue passed the timeout, and the
 * zygote was killed with every spawn of the burst failed.) */
#ifdef __SANITIZE_ADDRESS__
enum { SLOW_TIMEOUT_MS = 3000, SLOW_RUN_US = 30000, SLOW_STOP_US = 400000 };
#else
enum { SLOW_TIMEOUT_MS = 1000, SLOW_RUN_US = 10000, SLOW_STOP_US = 200000 };
#endif

struct stutter { pid_t pid; volatile int stop; };

static void *stutter_loop(void *p)
{
    struct stutter *s = p;

    while (!s->stop) {
        kill(s->pid, SIGCONT);
        usleep(SLOW_RUN_US);
        kill(s->pid, SIGSTOP);
        usleep(SLOW_STOP_US);
    }
    kill(s->pid, SIGCONT);
    return NULL;
}

Test(zygote, a_slow_but_steady_zygote_is_not_hung, .timeout = 180)
{
    enum { N = 200 };
    static struct cessna_ep *eps[N];
    struct t_echo_ep srv;
    struct t_edge e;
    struct stutter st = { 0 };
    pthread_t th;
    char out[4096], err[256], extra[128];

    t_echo_ep_start(&srv);
    snprintf(extra, sizeof(extra), "zygote_answer_timeout_ms = %d\n", SLOW_TIMEOUT_MS);
    t_edge_start(&e, t_app("passthrough"), srv.addr, extra);
    t_ctl(&e, "stats", out, sizeof(out));
    st.pid = (pid_t)t_field(out, "zygote_pid");
    cr_assert(st.pid > 0, "%s", out);
    long t0 = t_now_ms();
    pthread_create(&th, NULL, stutter_loop, &st);   /* it answers between the opens too */
    for (int i = 0; i < N; i++) {
        eps[i] = cessna_ep_connect(e.sup.addr, err, sizeof(err));
        cr_assert(eps[i], "session %d: %s", i, err);
    }
    echo_each_and_free(eps, N);
    long took = t_now_ms() - t0;
    st.stop = 1;
    pthread_join(th, NULL);
    t_ctl(&e, "stats", out, sizeof(out));
    /* Where forks are slow (a millisecond: the 2026-12-02 VM) the burst outlasts the timeout
     * several times over, and the old watchdog killed the zygote here; where a window holds
     * dozens of forks it may not, and the test checks only that nothing failed. */
    cr_log_info("%d spawns through a stuttering zygote in %ld ms (timeout %d ms)", N, took,
                SLOW_TIMEOUT_MS);
    cr_assert_eq(t_field(out, "sessions_failed"), 0, "%s", out);
    cr_assert_eq(t_field(out, "zygote_restarts"), 0, "%s", out);
    t_edge_stop(&e);
}
