/* it_timers.c - app timers through the sequencer app: every armed timer fires exactly once
 * unless cancelled, with many at once, with cancel followed by a new arm, and across worker
 * kills (cold and hot standby). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cessna_endpoint.h"
#include "t_helpers.h"

static struct cessna_ep *connect_nonblocking(const struct t_edge *e)
{
    struct cessna_ep *ep = t_ep_connect(e);

    cessna_ep_set_nonblocking(ep, 1);
    return ep;
}

/* What the client saw of the timers: which TOCK numbers, how many CANCEL answers. */
struct seen {
    int tock[256];      /* tock[n]: times "TOCK n" arrived */
    int tocks, cancel_ok, cancel_none;
};

/* Read messages for wait_ms (or until want tocks arrived, then grace_ms more). */
static void collect(struct cessna_ep *ep, struct seen *sn, int want, int wait_ms, int grace_ms)
{
    long deadline = t_now_ms() + wait_ms;
    int extended = 0;

    for (;;) {
        const void *msg;
        long n = cessna_ep_recv(ep, &msg);
        if (n >= 0) {
            char line[64];
            size_t l = (size_t)n < sizeof(line) - 1 ? (size_t)n : sizeof(line) - 1;
            memcpy(line, msg, l);
            line[l] = 0;
            if (strncmp(line, "TOCK ", 5) == 0) {
                int k = atoi(line + 5);
                cr_assert(k > 0 && k < 256, "TOCK number %d", k);
                sn->tock[k]++;
                sn->tocks++;
            } else if (strncmp(line, "CANCEL ok", 9) == 0) {
                sn->cancel_ok++;
            } else if (strncmp(line, "CANCEL none", 11) == 0) {
                sn->cancel_none++;
            }
            if (sn->tocks >= want && !extended) {
                deadline = t_now_ms() + grace_ms;   /* anything extra would show up now */
                extended = 1;
            }
            continue;
        }
        cr_assert_eq(n, -EAGAIN, "recv: %ld %s", n, cessna_ep_error(ep));
        long left = deadline - t_now_ms();
        if (left <= 0)
            return;
        struct pollfd pfd = { .fd = cessna_ep_fd(ep), .events = POLLIN };
        poll(&pfd, 1, (int)left);
    }
}

static void send_str(struct cessna_ep *ep, const char *s)
{
    cr_assert_eq(cessna_ep_send(ep, s, strlen(s)), 0, "send %s", s);
}

static void assert_each_once(const struct seen *sn, int n)
{
    for (int k = 1; k <= n; k++)
        cr_assert_eq(sn->tock[k], 1, "TOCK %d arrived %d times", k, sn->tock[k]);
    cr_assert_eq(sn->tocks, n, "%d TOCKs, expected %d", sn->tocks, n);
}

Test(timers, cancel_then_arm_fires_the_new_timer, .timeout = 30)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct seen sn = { 0 };

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("sequencer"), srv.addr, NULL);
    struct cessna_ep *ep = connect_nonblocking(&e);
    send_str(ep, "TICK 300");
    send_str(ep, "CANCEL");
    send_str(ep, "TICK 300");
    collect(ep, &sn, 1, 3000, 500);
    cr_assert_eq(sn.cancel_ok, 1);
    assert_each_once(&sn, 1);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* Many cancel + arm pairs in a row, each new timer in the slot the last one left. */
Test(timers, repeated_cancel_and_rearm, .timeout = 30)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct seen sn = { 0 };

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("sequencer"), srv.addr, NULL);
    struct cessna_ep *ep = connect_nonblocking(&e);
    for (int i = 0; i < 50; i++) {
        send_str(ep, "TICK 200");
        send_str(ep, "CANCEL");
    }
    send_str(ep, "TICK 200");
    collect(ep, &sn, 1, 4000, 500);
    cr_assert_eq(sn.cancel_ok, 50);
    assert_each_once(&sn, 1);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* More timers than one block of slots at once, armed in one burst (the table grows while
 * earlier timeouts wait to be submitted). */
Test(timers, many_concurrent_timers_each_fire_once, .timeout = 30)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct seen sn = { 0 };
    char cmd[32];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("sequencer"), srv.addr, NULL);
    struct cessna_ep *ep = connect_nonblocking(&e);
    for (int i = 0; i < 150; i++) {
        snprintf(cmd, sizeof(cmd), "TICK %d", 50 + (i * 37) % 400);
        send_str(ep, cmd);
    }
    collect(ep, &sn, 150, 8000, 500);
    assert_each_once(&sn, 150);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* Timers pending while the worker is killed again and again: each fires once, whichever
 * worker holds the session then. */
static void timers_across_kills(const char *extra)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct seen sn = { 0 };
    char cmd[64], out[256];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("sequencer"), srv.addr, extra);
    struct cessna_ep *ep = connect_nonblocking(&e);
    for (int i = 0; i < 60; i++) {
        snprintf(cmd, sizeof(cmd), "TICK %d", 100 + (i * 53) % 900);
        send_str(ep, cmd);
        if (i % 3 == 2)
            send_str(ep, "CANCEL");   /* 20 of the 60 are cancelled */
    }
    snprintf(cmd, sizeof(cmd), "kill-worker %llu", (unsigned long long)cessna_ep_session_id(ep));
    for (int k = 0; k < 8; k++) {
        struct timespec ts = { 0, 120 * 1000000 };
        nanosleep(&ts, NULL);
        t_ctl(&e, cmd, out, sizeof(out));
        cr_assert(strncmp(out, "ok", 2) == 0 || strstr(out, "no live worker"), "%s", out);
    }
    collect(ep, &sn, 40, 8000, 800);
    cr_assert_eq(sn.cancel_ok, 20);
    assert_each_once(&sn, 40);
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert(t_field(out, "recoveries") >= 4, "%s", out);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

Test(timers, across_kills_cold, .timeout = 60)
{
    timers_across_kills("snapshot_interval_ms = 50\nstandby = cold\n");
}

Test(timers, across_kills_hot, .timeout = 60)
{
    timers_across_kills("snapshot_interval_ms = 50\nstandby = hot\n");
}

Test(timers, across_kills_without_snapshots, .timeout = 60)
{
    timers_across_kills("snapshot_interval_ms = 0\n");
}
