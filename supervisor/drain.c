/* drain.c - planned moves (docs/protocol.md, "Planned moves").
 *
 * A session moves by taking a snapshot of where it is, waiting until that snapshot is stored
 * at the server endpoint (so the next edge replays little), then telling its client endpoint
 * MOVE and ending this copy quietly: the client resumes at another edge of its list exactly
 * as after a failure. If the snapshot does not get there within drain_timeout_ms the move
 * happens anyway: the endpoints still hold every event since the last stored one.
 *
 * Draining (cessna-ctl drain, SIGTERM) moves every session, refuses new ones, and stops the
 * supervisor when none is left. What is still here after drain_timeout_ms is closed with
 * CLOSE, as a clean end. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "drain.h"
#include "log.h"
#include "remote.h"
#include "sup.h"

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

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
    remote_reset_conn(srv);   /* it waits for the resume; a FIN would look like the end */
    S.stats.moves++;
    sesslog_cause(&s->log, END_MOVED);
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

/* A CLOSE to both endpoints: the session ends cleanly for them. */
static void close_now(struct session *s)
{
    uint8_t frame[WIRE_HDR_LEN];

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

void drain_start(const char *why)
{
    if (S.draining)
        return;
    S.draining = 1;
    S.drain_deadline_ms = tmo_now_ms() + S.cfg.drain_timeout_ms;
    LOG(LOG_INFO, "msg=\"draining: moving every session to another edge\" why=%s sessions=%u "
        "timeout_ms=%llu", why, S.nsessions, ull(S.cfg.drain_timeout_ms));
    drain_sweep(tmo_now_ms());
}

void drain_sweep(uint64_t now)
{
    char msg[160];
    uint32_t left = 0;

    for (uint32_t i = 0; i < S.slot_high; i++) {
        struct session *s = &S.sessions[i];
        if (s->state == S_FREE || s->state == S_DEAD)
            continue;
        if (S.draining && now >= S.drain_deadline_ms) {
            LOG(LOG_WARN, "session=%llu msg=\"drain timeout: closing\"", ull(s->id));
            close_now(s);
            continue;
        }
        left++;
        if (s->state != S_LIVE)
            continue;
        if (S.draining && !s->moving)
            drain_move(s, msg, sizeof(msg));
        else if (s->moving && now >= s->move_deadline_ms)
            finish_move(s, "timeout");
    }
    if (S.draining && !left && !S.stopping) {
        LOG(LOG_INFO, "msg=\"drained: no session left, stopping\"");
        S.stopping = 1;
    }
}
