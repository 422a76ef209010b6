/* notice.c - telling the endpoints of a session whose server stores nothing that a snapshot
 * is durable here (SNAP_DURABLE, docs/protocol.md), without a send of its own.
 *
 * The notice only lets an endpoint free what it keeps for a new edge; it changes nothing
 * anyone sees, so it may come late. Sent at once it cost two sends and a wake of each
 * endpoint per snapshot (with a message a second per session, a third of the edge's
 * sends). Now it waits for the next frames going to that endpoint (an OUT, after which the
 * endpoint has the order up to the snapshot) and goes in the same send; the tick sends
 * whatever waited NOTICE_WAIT_INTERVALS snapshot intervals (an idle or one-way session).
 * An endpoint's keep is capped (past it, it stops reading from its program), and the edge
 * does not know the cap, so: a notice that frees more than NOTICE_RIDE_MAX_BYTES of held
 * events goes at once (a fast sender must not stop on notices still to come), and one that
 * frees NOTICE_QUIET_BYTES goes at the next tick to an endpoint that sent no DATA since it
 * was owed (which is how an endpoint stopped at a small cap looks). */
#include "notice.h"
#include "sup.h"
#include "timeouts.h"
#include "wire.h"

#define NOTICE_RIDE_MAX_BYTES (64u << 10)
#define NOTICE_QUIET_BYTES (4u << 10)
#define NOTICE_WAIT_INTERVALS 2
#define NOTICE_WAIT_MIN_MS 500

static void queue_notice(struct session *s, struct conn *c)
{
    uint8_t frame[WIRE_HDR_LEN + 24];

    sess_queue(c, frame, wire_put_snap_durable(frame, s->notice_pos, s->notice_seq[0],
                                               s->notice_seq[1]), NULL, 0);
    c->notice_owed = 0;
    if (!s->c[SIDE_CLIENT].notice_owed && !s->c[SIDE_SERVER].notice_owed) {
        s->notice_since_ms = 0;
        s->notice_bytes = 0;
    }
}

/* Every notice owed goes now, each after the order up to its position (an ORDER frame
 * where no OUT carried it yet). */
static void notice_send_now(struct session *s)
{
    int held = S.flush_held;

    S.flush_held = 1;
    sess_order_durable(s, s->notice_pos);
    for (int i = 0; i < 2; i++) {
        struct conn *c = &s->c[i];
        if (c->notice_owed && conn_reachable(c))
            queue_notice(s, c);
        c->notice_owed = 0;
    }
    s->notice_since_ms = 0;
    s->notice_bytes = 0;
    S.flush_held = held;
    if (!held) {
        sup_flush(s, &s->c[SIDE_CLIENT]);
        sup_flush(s, &s->c[SIDE_SERVER]);
    }
}

void notice_durable(struct session *s, uint64_t pos, const uint64_t seq[2], size_t freed)
{
    s->notice_pos = pos;   /* a newer notice covers the older one */
    s->notice_seq[0] = seq[0];
    s->notice_seq[1] = seq[1];
    s->notice_bytes += freed;
    if (!s->notice_since_ms)
        s->notice_since_ms = tmo_now_ms();
    for (int i = 0; i < 2; i++) {
        struct conn *c = &s->c[i];
        if (!c->notice_owed)
            c->notice_seq = c->next_seq;   /* a DATA after this: it is not stopped */
        c->notice_owed = conn_reachable(c);
    }
    if (s->notice_bytes > NOTICE_RIDE_MAX_BYTES)
        notice_send_now(s);
}

void notice_ride(struct session *s)
{
    for (int i = 0; i < 2; i++) {
        struct conn *c = &s->c[i];
        if (c->notice_owed && c->pending.len && conn_reachable(c) && c->order_sent >= s->notice_pos)
            queue_notice(s, c);
    }
}

void notice_tick(struct session *s, uint64_t now)
{
    uint64_t wait = NOTICE_WAIT_INTERVALS * S.cfg.snapshot_interval_ms;

    if (!s->notice_since_ms)
        return;
    if (wait < NOTICE_WAIT_MIN_MS)
        wait = NOTICE_WAIT_MIN_MS;
    if (now - s->notice_since_ms >= wait) {
        notice_send_now(s);
        return;
    }
    if (s->notice_bytes < NOTICE_QUIET_BYTES)
        return;
    for (int i = 0; i < 2; i++) {
        struct conn *c = &s->c[i];
        if (c->notice_owed && c->next_seq == c->notice_seq) {
            notice_send_now(s);
            return;
        }
    }
}
