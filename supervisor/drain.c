/* drain.c - planned moves (docs/protocol.md, "Planned moves"), and draining a node.
 *
 * A session moves by taking a snapshot of where it is, waiting until that snapshot is stored
 * at the server endpoint (so the next edge replays little), then telling its client endpoint
 * MOVE and ending this copy quietly: the client resumes at another edge of its list exactly
 * as after a failure. If the snapshot does not get there within drain_timeout_ms the move
 * happens anyway: the endpoints still hold every event since the last stored one.
 *
 * Draining (cessna-ctl drain, SIGTERM) refuses new sessions and ends every session here: one
 * that can move (its client endpoint said it has other edges, WIRE_F_ROAMS, and its server
 * endpoint stores snapshots) moves; any other gets CLOSE on both connections once it is
 * quiet: every event processed, every output sent, and no event for DRAIN_QUIET_MS, so a
 * reply on its way back (an echo the server is writing) still reaches the client. What is
 * still here after drain_timeout_ms is closed with CLOSE, quiet or not. The supervisor stops
 * when no session is left, its last frames sent. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "drain.h"
#include "log.h"
#include "remote.h"
#include "sup.h"

#define DRAIN_QUIET_MS 200   /* no event for this long: nothing is on its way (loopback,
                              * a LAN); longer replies are cut only at drain_timeout_ms */
#define DRAIN_LINGER_MS 100  /* every last frame is out: how long peers get to close */

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

/* This drain's counts, for its last log line. */
static struct { uint64_t moved, closed, forced, refused; } D;

static void finish_move(struct session *s, const char *how)
{
    uint8_t frame[WIRE_HDR_LEN];
    struct conn *cli = &s->c[SIDE_CLIENT], *srv = &s->c[SIDE_SERVER];

    LOG(LOG_INFO, "session=%llu msg=\"moved off this edge\" how=%s events=%llu "
        "remote_snapshot=%llu", ull(s->id), how, ull(s->next_pos - 1), ull(s->remote_pos));
    if (cli->fd >= 0 && cli->up && !cli->dead) {
        sess_queue(cli, frame, wire_put_empty(frame, WIRE_MOVE), NULL, 0);
        sup_flush(s, cli);
    }
    remote_reset_conn(s, srv);   /* it waits for the resume; a FIN would look like the end */
    S.stats.moves++;
    sesslog_cause(&s->log, END_MOVED);
    if (S.draining)
        D.moved++;
    sess_end_quietly(s);
}

int drain_move(struct session *s, char *msg, size_t len)
{
    char ignored[256];

    if (s->state != S_LIVE) {
        snprintf(msg, len, "error: session %llu is not live\n", ull(s->id));
        return -EINVAL;
    }
    if (s->moving) {
        snprintf(msg, len, "ok moving session=%llu (already)\n", ull(s->id));
        return 0;
    }
    s->moving = 1;
    s->move_pos = s->next_pos - 1;
    s->move_deadline_ms = tmo_now_ms() + S.cfg.drain_timeout_ms;
    snprintf(msg, len, "ok moving session=%llu position=%llu\n", ull(s->id), ull(s->move_pos));
    if (!S.cfg.ship_snapshots || !s->server_stores || s->remote_pos >= s->move_pos) {
        finish_move(s, s->remote_pos >= s->move_pos ? "snapshot stored" : "no shipping");
        return 0;
    }
    recovery_request_snapshot(s, ignored, sizeof(ignored));
    return 0;
}

void drain_remote_durable(struct session *s)
{
    if (s->moving && s->state == S_LIVE && s->remote_pos >= s->move_pos)
        finish_move(s, "snapshot stored");
}

/* A CLOSE to both endpoints, after whatever is queued for them: the session ends cleanly. */
static void close_now(struct session *s, const char *why)
{
    uint8_t frame[WIRE_HDR_LEN];

    LOG(LOG_INFO, "session=%llu msg=\"draining: closed\" why=\"%s\" events=%llu to_client=%llu "
        "to_server=%llu", ull(s->id), why, ull(s->next_pos - 1), ull(s->outputs[0]),
        ull(s->outputs[1]));
    for (int i = 0; i < 2; i++) {
        struct conn *c = &s->c[i];
        if (c->fd >= 0 && c->up && !c->dead && !c->draining) {
            sess_queue(c, frame, wire_put_close(frame), NULL, 0);
            sup_flush(s, c);
        }
    }
    S.stats.forced_closes++;
    sesslog_cause(&s->log, END_DRAIN_TIMEOUT);
    sess_end_quietly(s);
}

/* Nothing on its way in or out of a connection: no partial frame received, nothing queued
 * or being sent, no input waiting for the worker. */
static int conn_quiet(const struct conn *c)
{
    return c->fd < 0 || (!c->rlen && !c->send_armed && !c->sending.len && !c->pending.len &&
                         !c->stalled);
}

static int can_move(const struct session *s)
{
    return s->roams && S.cfg.ship_snapshots && s->server_stores;
}

static int quiet_for_close(const struct session *s, uint64_t now)
{
    return hib_quiet(s) && conn_quiet(&s->c[SIDE_CLIENT]) && conn_quiet(&s->c[SIDE_SERVER]) &&
           now - hib_last_event_ms(s) >= DRAIN_QUIET_MS;
}

void drain_start(const char *why)
{
    if (S.draining)
        return;
    S.draining = 1;
    S.drain_deadline_ms = tmo_now_ms() + S.cfg.drain_timeout_ms;
    memset(&D, 0, sizeof(D));
    LOG(LOG_INFO, "msg=\"draining: sessions whose clients have other edges move, the others "
        "close once quiet; new sessions are refused\" why=%s sessions=%u timeout_ms=%llu", why,
        S.nsessions, ull(S.cfg.drain_timeout_ms));
    drain_sweep(tmo_now_ms());
    drain_check_done();
}

void drain_sweep(uint64_t now)
{
    char msg[160];

    for (uint32_t i = 0; i < S.slot_high; i++) {
        struct session *s = &S.sessions[i];
        if (s->state == S_FREE || s->state == S_DEAD)
            continue;
        if (S.draining && s->state == S_HELLO) {
            D.refused++;   /* connected, no HELLO yet: it would be refused anyway */
            sess_fail(s, WIRE_ERR_UNAVAILABLE, "this edge is draining: try another");
            continue;
        }
        if (S.draining && now >= S.drain_deadline_ms) {
            LOG(LOG_WARN, "session=%llu msg=\"drain timeout: closing\"", ull(s->id));
            D.forced++;
            close_now(s, "drain_timeout_ms");
            continue;
        }
        if (s->state != S_LIVE)
            continue;   /* starting, resuming or closing: it gets here or ends by itself */
        if (S.draining && !s->moving) {
            if (can_move(s)) {
                drain_move(s, msg, sizeof(msg));
            } else if (quiet_for_close(s, now)) {
                D.closed++;
                close_now(s, s->roams ? "its server endpoint stores no snapshots" :
                                        "its client has no other edge");
            }
        } else if (s->moving && now >= s->move_deadline_ms) {
            finish_move(s, "timeout");
        } else if (s->moving && s->remote_pos < s->move_pos && s->snap_written < s->move_pos &&
                   !s->snap_inflight && !s->pend.valid && !s->ship.active) {
            /* The move's request was refused (a snapshot in flight or waiting for its sync,
             * older than the move's position), and none at or past that position is written
             * or on its way: ask again (once: that one then ships), or
             * the move waits for a periodic snapshot (none with snapshot_interval_ms = 0)
             * or its deadline. */
            recovery_request_snapshot(s, msg, sizeof(msg));
        }
    }
}

/* An ended session whose last frames are all handed to the kernel, its writes shut down:
 * only the peers' EOFs are awaited (up to 3 s, session.c), which a drain need not wait for. */
static int flushed(const struct session *s)
{
    if (s->state != S_DEAD)
        return 0;
    for (int i = 0; i < 2; i++) {
        const struct conn *c = &s->c[i];
        if (c->fd >= 0 && (!c->draining || c->connect_armed || c->send_armed ||
                           c->sending.len || c->pending.len))
            return 0;
    }
    return 1;
}

void drain_check_done(void)
{
    static uint64_t flushed_ms;
    uint64_t now;

    if (!S.draining || S.stopping)
        return;
    if (S.nsessions) {
        for (uint32_t i = 0; i < S.slot_high; i++)
            if (S.sessions[i].state != S_FREE && !flushed(&S.sessions[i])) {
                flushed_ms = 0;
                return;
            }
        /* Every session is over and its last frames are out: give the peers a moment to
         * close their side, so the sessions end (and their directories go) as usual. */
        now = tmo_now_ms();
        if (!flushed_ms)
            flushed_ms = now;
        if (now - flushed_ms < DRAIN_LINGER_MS)
            return;
    }
    LOG(LOG_INFO, "msg=\"drained: no session left, stopping\" moved=%llu closed=%llu "
        "closed_at_timeout=%llu refused=%llu peers_not_closed=%u", ull(D.moved), ull(D.closed),
        ull(D.forced), ull(D.refused), S.nsessions);
    S.stopping = 1;
}
