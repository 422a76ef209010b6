/* remote.c - what makes a session outlive its edge node (docs/protocol.md):
 *
 *  - shipping: each locally durable snapshot, once the client endpoint confirmed it holds
 *    every output before it (RECEIPT), goes to the server endpoint in SNAP_PUT pieces
 *    interleaved with the session's frames; its SNAP_ACK makes it durable off the node,
 *    and both endpoints hear SNAP_DURABLE and free what it covers;
 *  - HEARTBEAT on quiet connections, so a client endpoint can tell a hung edge;
 *  - losing an endpoint without CLOSE ends this copy of the session quietly;
 *  - RESUME: a client endpoint whose edge was lost arrives here; we fetch the snapshot
 *    chain, order and messages from the server endpoint, rebuild the events after the
 *    snapshot, restore, replay and go live (resume.c does the rebuilding). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "connfd.h"
#include "drain.h"
#include "log.h"
#include "notice.h"
#include "remote.h"
#include "snap.h"
#include "sup.h"

#define SHIP_QUEUE_LOW (64u << 10)   /* add a piece while less than this waits to go out */

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

/* ---- shipping ---- */

static void ship_close(struct session *s)
{
    if (s->ship.fd >= 0)
        close(s->ship.fd);
    s->ship.fd = -1;
    s->ship.active = 0;
}

void remote_init(struct session *s)
{
    memset(&s->ship, 0, sizeof(s->ship));
    s->ship.fd = -1;
}

void remote_end(struct session *s)
{
    ship_close(s);
    s->ship.nq = 0;
}

/* The snapshot file at pos in the session's directory, open for reading, or -1 (errno). */
static int open_snapshot(const struct session *s, uint64_t pos, int full, char *path,
                         size_t len)
{
    char name[64];

    snap_name(name, sizeof(name), pos, full ? SNAP_FULL : SNAP_DELTA);
    snprintf(path, len, "%s/%llu/%s", S.cfg.state_dir, ull(s->id), name);
    return open(path, O_RDONLY | O_CLOEXEC);
}

void remote_snapshot_durable(struct session *s, uint64_t pos, uint64_t full)
{
    struct ship *sh = &s->ship;
    uint8_t frame[WIRE_HDR_LEN + 8];

    if (pos == full) {
        /* A full makes every older file irrelevant: the ones not started yet go. */
        sh->nq = 0;
    }
    if (sh->nq == SHIP_QUEUE) {
        /* Far behind: wait for the next full (the chain must not have holes). */
        sh->nq = 0;
        s->need_full = 1;
        LOG(LOG_WARN, "session=%llu msg=\"snapshot shipping behind; next one full\"", ull(s->id));
        return;
    }
    sh->q[sh->nq].pos = pos;
    sh->q[sh->nq].full = pos == full;
    sh->nq++;
    if (conn_reachable(&s->c[SIDE_CLIENT])) {
        sess_queue(&s->c[SIDE_CLIENT], frame, wire_put_u64(frame, WIRE_RECEIPT, pos), NULL, 0);
        sup_flush(s, &s->c[SIDE_CLIENT]);
    }
    remote_pump(s);
}

/* Open the file at the head of the queue and read what the endpoints need from it. */
static int ship_start(struct session *s)
{
    struct ship *sh = &s->ship;
    char path[PATH_MAX], err[256];
    struct snap_meta m;
    struct stat st;
    uint64_t pos = sh->q[0].pos;
    int full = sh->q[0].full;

    memmove(sh->q, sh->q + 1, (size_t)--sh->nq * sizeof(sh->q[0]));
    /* Only the header is read here (the loop must not read and hash the whole file): the
     * store verifies every byte before it acknowledges, and a new edge before it loads. */
    err[0] = 0;
    if ((sh->fd = open_snapshot(s, pos, full, path, sizeof(path))) < 0 || fstat(sh->fd, &st) < 0 ||
        snap_read_header(sh->fd, &m, err, sizeof(err)) < 0 || m.position != pos) {
        if (!err[0])
            snprintf(err, sizeof(err), "%s", sh->fd < 0 ? strerror(errno) : "another position");
        LOG(LOG_WARN, "session=%llu msg=\"snapshot not shipped; next one full\" file=%s "
            "error=\"%s\"", ull(s->id), path, err);
        if (sh->fd >= 0)
            close(sh->fd);
        sh->fd = -1;
        sh->nq = 0;
        s->need_full = 1;
        return -1;
    }
    sh->active = 1;
    sh->pos = pos;
    sh->base = m.base_position;
    sh->seq[0] = m.seq[0];
    sh->seq[1] = m.seq[1];
    sh->total = (uint64_t)st.st_size;
    sh->off = 0;
    return 0;
}

void remote_pump(struct session *s)
{
    struct ship *sh = &s->ship;
    struct conn *srv = &s->c[SIDE_SERVER];
    static uint8_t piece[WIRE_SNAP_PUT_HDR_LEN + WIRE_SNAP_PIECE];

    if (s->state != S_LIVE || !conn_reachable(srv))
        return;
    if (!sh->active) {
        if (!sh->nq || sh->q[0].pos > s->receipt)
            return;   /* the client has not confirmed its outputs up to there yet */
        if (ship_start(s) < 0)
            return;
    }
    while (sh->off < sh->total && srv->pending.len < SHIP_QUEUE_LOW) {
        uint64_t n = sh->total - sh->off;
        if (n > WIRE_SNAP_PIECE)
            n = WIRE_SNAP_PIECE;
        ssize_t got = pread(sh->fd, piece + WIRE_SNAP_PUT_HDR_LEN, n, (off_t)sh->off);
        if (got != (ssize_t)n) {
            sess_fail(s, WIRE_ERR_SESSION, "reading snapshot %llu to ship it: %s", ull(sh->pos),
                      got < 0 ? strerror(errno) : "short read");
            return;
        }
        wire_put_snap_put_hdr(piece, sh->pos, sh->base, sh->total, sh->off, n);
        sess_queue(srv, piece, WIRE_SNAP_PUT_HDR_LEN + n, NULL, 0);
        sh->off += n;
    }
    sup_flush(s, srv);
}

static void on_snap_ack(struct session *s, uint64_t pos)
{
    struct ship *sh = &s->ship;
    uint8_t frame[WIRE_HDR_LEN + 24];

    if (!sh->active || pos != sh->pos || sh->off != sh->total) {
        sess_fail(s, WIRE_ERR_PROTO, "SNAP_ACK %llu from the server endpoint, but %llu was "
                  "shipped", ull(pos), ull(sh->active ? sh->pos : 0));
        return;
    }
    s->remote_pos = pos;
    ship_close(s);
    /* Durable off the node: the endpoints may let go of what it covers. */
    sess_send_all(s, frame, wire_put_snap_durable(frame, pos, sh->seq[0], sh->seq[1]));
    LOG(LOG_DEBUG, "session=%llu msg=\"snapshot stored off the node\" position=%llu bytes=%llu",
        ull(s->id), ull(pos), ull(sh->total));
    drain_remote_durable(s);
    if (s->state == S_LIVE)
        remote_pump(s);
}

int remote_on_frame(struct session *s, struct conn *c, const struct wire_frame *f)
{
    switch (f->type) {
    case WIRE_RECEIPT:
        if (c->side != SIDE_CLIENT)
            break;
        if (f->u.snap.position > s->receipt)
            s->receipt = f->u.snap.position;
        remote_pump(s);
        return 0;
    case WIRE_SNAP_ACK:
        if (c->side != SIDE_SERVER)
            break;
        on_snap_ack(s, f->u.snap.position);
        return 0;
    case WIRE_HEARTBEAT:
        return 0;
    }
    return -ENOENT;
}

/* ---- heartbeats ---- */

void remote_sweep(uint64_t now_ms)
{
    uint8_t frame[WIRE_HDR_LEN];

    if (!S.cfg.heartbeat_interval_ms)
        return;
    wire_put_empty(frame, WIRE_HEARTBEAT);
    /* Only client endpoints watch for a silent edge (a server endpoint learns of a lost edge
     * from its connection, and waits for the RESUME): the server's connection gets none. */
    for (uint32_t i = 0; i < S.slot_high; i++) {
        struct session *s = &S.sessions[i];
        struct conn *c = &s->c[SIDE_CLIENT];
        if (s->state != S_LIVE && s->state != S_CLOSING)
            continue;
        if (conn_reachable(c) && now_ms - c->last_tx_ms >= S.cfg.heartbeat_interval_ms) {
            sess_queue(c, frame, sizeof(frame), NULL, 0);
            notice_ride(s);   /* an owed SNAP_DURABLE goes in the same send */
            sup_flush(s, c);
        }
    }
}

/* ---- losing an endpoint ---- */

void remote_reset_conn(struct session *s, struct conn *c)
{
    if (c->fd < 0)
        return;
    connfd_linger0(s, c);
    c->reset = 1;   /* conn_close (sess_end_quietly) closes it without a FIN */
}

void remote_lost(struct session *s, enum side side, const char *why)
{
    LOG(LOG_INFO, "session=%llu msg=\"endpoint lost without CLOSE; this copy ends, the "
        "session resumes elsewhere\" side=%s why=\"%s\" events=%llu remote_snapshot=%llu",
        ull(s->id), side == SIDE_CLIENT ? "client" : "server", why, ull(s->next_pos - 1),
        ull(s->remote_pos));
    remote_reset_conn(s, &s->c[side == SIDE_CLIENT ? SIDE_SERVER : SIDE_CLIENT]);
    remote_reset_conn(s, &s->c[side]);
    sesslog_cause(&s->log, side == SIDE_CLIENT ? END_CLIENT_LOST : END_SERVER_LOST);
    sess_end_quietly(s);
}
