/* timeouts.c - every timeout of the node, from one periodic sweep (an io_uring timeout).
 *
 *   hello_timeout_ms    a connection that has not completed its HELLO is closed
 *   connect_timeout_ms  the server endpoint's connect + WELCOME
 *   idle_timeout_ms     a live session with no event for that long is ended
 *   close_wait_ms       an ended session whose peers keep their connections open after
 *                       our ERROR or CLOSE: the connections are shut down, the slot freed
 *   control_timeout_ms  control connections (control.c: ctl_sweep)
 *
 * The sweep runs every min(500 ms, smallest timeout / 4); a timeout fires late by at most
 * one period. Session state here is the session's `tmo`, written only in this file. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "connfd.h"
#include "log.h"
#include "drain.h"
#include "metrics.h"
#include "remote.h"
#include "sup.h"

#define SWEEP_MAX_MS   500
#define SWEEP_MIN_MS   20

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

uint64_t tmo_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t tmo_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void tmo_touch(struct session *s)
{
    s->tmo.active_ms = tmo_now_ms();
}

static uint64_t period_ms(void)
{
    uint32_t t[] = { S.cfg.hello_timeout_ms, S.cfg.connect_timeout_ms, S.cfg.idle_timeout_ms,
                     S.cfg.heartbeat_interval_ms, S.cfg.close_wait_ms, S.cfg.control_timeout_ms };
    uint64_t p = SWEEP_MAX_MS;

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (t[i] && t[i] / 4 < p)
            p = t[i] / 4;
    return p < SWEEP_MIN_MS ? SWEEP_MIN_MS : p;
}

void tmo_arm(void)
{
    static struct __kernel_timespec ts;
    uint64_t ms = period_ms();

    if (S.stopping)
        return;
    ts.tv_sec = (long long)(ms / 1000);
    ts.tv_nsec = (long long)(ms % 1000) * 1000000;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_timeout(sqe, &ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_SWEEP, 0, 0));
}

/* Stop waiting for a peer: a pending receive completes (EOF), a pending connect is
 * cancelled, so the session's usual end runs to completion. */
static void force_close(struct session *s, struct conn *c, int how)
{
    if (c->fd < 0)
        return;
    if (c->connect_armed) {
        struct io_uring_sqe *sqe = sup_sqe();
        io_uring_prep_cancel64(sqe, UD(OP_CONNECT, s->slot, c->side), 0);
        io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
    }
    connfd_shutdown(s, c, how);
}

static void sweep_session(struct session *s, uint64_t now)
{
    uint64_t idle = now - s->tmo.active_ms;

    if (s->tmo.state_seen != (int)s->state) {
        s->tmo.state_seen = (int)s->state;
        s->tmo.state_ms = now;
    }
    switch (s->state) {
    case S_HELLO:
        if (!S.cfg.hello_timeout_ms || idle < S.cfg.hello_timeout_ms)
            return;
        S.stats.hello_timeouts++;
        sesslog_cause(&s->log, END_HELLO_TIMEOUT);
        sess_fail(s, WIRE_ERR_PROTO, "no HELLO within hello_timeout_ms=%u", S.cfg.hello_timeout_ms);
        /* A client that never finished its HELLO does not get to hold the slot while it
         * reads our ERROR at leisure: stop reading it now; the ERROR still goes out. */
        force_close(s, &s->c[SIDE_CLIENT], SHUT_RD);
        break;
    case S_RESUMING:
    case S_CONNECTING:
        if (!S.cfg.connect_timeout_ms || idle < S.cfg.connect_timeout_ms)
            return;
        S.stats.connect_timeouts++;
        sesslog_cause(&s->log, END_CONNECT_TIMEOUT);
        sess_fail(s, WIRE_ERR_UNAVAILABLE, "server endpoint %s did not answer within "
                  "connect_timeout_ms=%u", S.cfg.server, S.cfg.connect_timeout_ms);
        force_close(s, &s->c[SIDE_SERVER], SHUT_RDWR);
        break;
    case S_LIVE:
        if (!S.cfg.idle_timeout_ms || idle < S.cfg.idle_timeout_ms)
            return;
        S.stats.idle_timeouts++;
        sesslog_cause(&s->log, END_IDLE_TIMEOUT);
        sess_fail(s, WIRE_ERR_SESSION, "idle: no event for idle_timeout_ms=%u",
                  S.cfg.idle_timeout_ms);
        break;
    case S_DEAD:
        if (now - s->tmo.state_ms < S.cfg.close_wait_ms ||
            (s->c[SIDE_CLIENT].fd < 0 && s->c[SIDE_SERVER].fd < 0))
            return;
        S.stats.forced_closes++;
        LOG(LOG_INFO, "session=%llu msg=\"ended session's connections still open; shutting "
            "them down\" close_wait_ms=%u", ull(s->id), S.cfg.close_wait_ms);
        s->tmo.state_ms = now;   /* once per linger period */
        for (int i = 0; i < 2; i++)
            force_close(s, &s->c[i], SHUT_RDWR);
        break;
    default:
        break;
    }
}

void tmo_on_sweep(void)
{
    uint64_t now = tmo_now_ms();

    for (uint32_t i = 0; i < S.slot_high; i++) {
        struct session *s = &S.sessions[i];
        if (s->state == S_FREE)
            continue;
        sweep_session(s, now);
        if (s->state != S_FREE)
            sess_maybe_free(s);
    }
    ctl_sweep(now);
    metrics_sweep(now);
    remote_sweep(now);
    drain_sweep(now);
    tmo_arm();
}
