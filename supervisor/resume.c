/* resume.c - a session another edge lost, rebuilt here (docs/protocol.md, "Losing the edge").
 *
 * The client endpoint's RESUME arrives on a fresh connection with what it holds (its order,
 * its unacknowledged messages, the last output it got). We pass the RESUME on to the server
 * endpoint, which checks the credential and answers with the snapshot chain it stores, its
 * own order and messages. Then: the chain goes into the session's directory; the two orders,
 * which must agree where they overlap, give the events after the snapshot, each message
 * taken from its sender's buffer; a worker restores the snapshot and replays them, and the
 * outputs each endpoint already has are dropped by number (send_output). Messages beyond the
 * order were never reflected in anything anyone saw: they follow as new events. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "appcfg.h"
#include "cred.h"
#include "log.h"
#include "order.h"
#include "remote.h"
#include "snap.h"
#include "sup.h"

#define CHAIN_MAX 256

/* What one endpoint sent: the fields of its RESUME or RESUME_INFO, its order bytes (encoded
 * from time 0) and its messages, contiguous by seq. */
struct held {
    uint64_t last_out, next_seq, order_base;
    struct outbuf order, data;
    struct { uint64_t seq; size_t off; uint32_t len; } *msg;
    size_t nmsg, msg_cap;
    int ended;                  /* RESUME_END seen */
};

struct resume {
    struct held h[2];           /* [SIDE_CLIENT], [SIDE_SERVER] */
    uint64_t client_epoch;
    int got_info;
    /* the snapshot file arriving */
    int fd;
    uint64_t pos, base, total, off;
    char tmp[PATH_MAX];
    uint64_t chain[CHAIN_MAX];  /* files stored, oldest first */
    int nchain;
};

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

static const char *side_name(int side) { return side == SIDE_CLIENT ? "client" : "server"; }

static void session_dir(const struct session *s, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%llu", S.cfg.state_dir, ull(s->id));
}

void resume_free(struct session *s)
{
    struct resume *rs = s->rs;

    if (!rs)
        return;
    for (int i = 0; i < 2; i++) {
        free(rs->h[i].order.data);
        free(rs->h[i].data.data);
        free(rs->h[i].msg);
    }
    if (rs->fd >= 0) {
        close(rs->fd);
        unlink(rs->tmp);
    }
    free(rs);
    s->rs = NULL;
}

/* Give up: the client hears why (and tries its next edge, unless the code says otherwise);
 * the server endpoint's connection is reset, so it goes on waiting for a resume. */
static void abort_resume(struct session *s, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void abort_resume(struct session *s, uint32_t code, const char *fmt, ...)
{
    uint8_t frame[WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX];
    char text[WIRE_ERROR_MAX];
    struct conn *cli = &s->c[SIDE_CLIENT], *srv = &s->c[SIDE_SERVER];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    LOG(LOG_WARN, "session=%llu msg=\"resume failed\" reason=\"%s\"", ull(s->id), text);
    if (cli->fd >= 0 && !cli->dead) {
        sess_queue(cli, frame, wire_put_error(frame, sizeof(frame), code, "%s", text), NULL, 0);
        sup_flush(s, cli);
    }
    remote_reset_conn(s, srv);   /* it waits for the resume; a FIN would look like the end */
    sesslog_cause(&s->log, END_RESUME_FAILED);
    sess_end_quietly(s);
}

/* ---- gathering ---- */

/* What one side may send in its resume: its keep (at most about max_held_bytes of messages
 * since the stored snapshot, plus the order) and one message more; 0: no limit. */
static size_t held_limit(void)
{
    return S.cfg.max_held_bytes ? 2 * (size_t)S.cfg.max_held_bytes + S.cfg.max_message_bytes : 0;
}

static int held_over(struct session *s, const struct held *h, int side, size_t more)
{
    size_t limit = held_limit();

    if (!limit || h->order.len + h->data.len + more <= limit)
        return 0;
    abort_resume(s, WIRE_ERR_UNAVAILABLE, "the %s's resume holds more than %zu bytes "
                 "(2 x max_held_bytes + max_message_bytes)", side_name(side), limit);
    return -EPROTO;
}

static int held_order(struct held *h, const struct wire_frame *f)
{
    if (outbuf_reserve(&h->order, f->u.out.order_len) < 0)
        return -ENOMEM;
    memcpy(h->order.data + h->order.len, f->u.out.order, f->u.out.order_len);
    h->order.len += f->u.out.order_len;
    return 0;
}

static int held_data(struct session *s, struct held *h, int side, const struct wire_frame *f)
{
    uint64_t want = h->nmsg ? h->msg[h->nmsg - 1].seq + 1 : 0;

    if (f->u.data.len > S.cfg.max_message_bytes) {
        abort_resume(s, WIRE_ERR_TOO_BIG, "kept message of %zu bytes from the %s exceeds "
                     "max_message_bytes=%u", f->u.data.len, side_name(side),
                     S.cfg.max_message_bytes);
        return -EPROTO;
    }
    if ((want && f->u.data.seq != want) || f->u.data.seq == 0 || f->u.data.seq >= h->next_seq) {
        abort_resume(s, WIRE_ERR_PROTO, "kept message seq %llu from the %s out of order "
                     "(next_seq %llu)", ull(f->u.data.seq), side_name(side), ull(h->next_seq));
        return -EPROTO;
    }
    if (h->nmsg == h->msg_cap) {
        size_t cap = h->msg_cap ? h->msg_cap * 2 : 64;
        void *p = realloc(h->msg, cap * sizeof(*h->msg));
        if (!p)
            return -ENOMEM;
        h->msg = p;
        h->msg_cap = cap;
    }
    if (outbuf_reserve(&h->data, f->u.data.len) < 0)
        return -ENOMEM;
    h->msg[h->nmsg].seq = f->u.data.seq;
    h->msg[h->nmsg].off = h->data.len;
    h->msg[h->nmsg].len = (uint32_t)f->u.data.len;
    h->nmsg++;
    memcpy(h->data.data + h->data.len, f->u.data.payload, f->u.data.len);
    h->data.len += f->u.data.len;
    return 0;
}

/* The message with this seq from h, or NULL. */
static const uint8_t *held_msg(const struct held *h, uint64_t seq, uint32_t *len)
{
    if (!h->nmsg || seq < h->msg[0].seq || seq - h->msg[0].seq >= h->nmsg)
        return NULL;
    size_t i = (size_t)(seq - h->msg[0].seq);
    *len = h->msg[i].len;
    return h->data.data + h->msg[i].off;
}

/* One SNAP_PUT piece from the server endpoint: the chain goes into the session's
 * directory under the names the worker restores from. */
static int snap_piece(struct session *s, const struct wire_frame *f)
{
    struct resume *rs = s->rs;
    char dir[PATH_MAX], name[64], path[PATH_MAX + 64];

    session_dir(s, dir, sizeof(dir));
    if (rs->fd < 0) {
        if (f->u.snap_put.offset != 0 || rs->nchain == CHAIN_MAX ||
            (rs->nchain && f->u.snap_put.base != rs->chain[rs->nchain - 1]) ||
            (!rs->nchain && f->u.snap_put.base != 0)) {
            abort_resume(s, WIRE_ERR_PROTO, "snapshot %llu from the server endpoint does not "
                         "continue the chain", ull(f->u.snap_put.position));
            return -EPROTO;
        }
        /* Named by slot: two copies of one resume (a client that retried while the first
         * was still fetching) each have their own, and one's cleanup is not the other's. */
        snprintf(rs->tmp, sizeof(rs->tmp), "%s/fetch-%u.tmp", dir, s->slot);
        rs->fd = open(rs->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (rs->fd < 0) {
            abort_resume(s, WIRE_ERR_UNAVAILABLE, "cannot store the fetched snapshot: %s: %s",
                         rs->tmp, strerror(errno));
            return -EPROTO;
        }
        rs->pos = f->u.snap_put.position;
        rs->base = f->u.snap_put.base;
        rs->total = f->u.snap_put.total;
        rs->off = 0;
    }
    if (f->u.snap_put.position != rs->pos || f->u.snap_put.offset != rs->off ||
        f->u.snap_put.total != rs->total) {
        abort_resume(s, WIRE_ERR_PROTO, "snapshot piece at %llu of %llu out of order",
                     ull(f->u.snap_put.offset), ull(f->u.snap_put.position));
        return -EPROTO;
    }
    if (write(rs->fd, f->u.snap_put.bytes, f->u.snap_put.len) != (ssize_t)f->u.snap_put.len) {
        abort_resume(s, WIRE_ERR_UNAVAILABLE, "cannot store the fetched snapshot: %s",
                     strerror(errno ? errno : ENOSPC));
        return -EPROTO;
    }
    rs->off += f->u.snap_put.len;
    if (rs->off < rs->total)
        return 0;
    /* Whole: durable under its own name (a local recovery may load it too). */
    uid_t uid;
    gid_t gid;
    if (recovery_worker_owner(&uid, &gid) == 0 && fchown(rs->fd, uid, gid) == -1)
        LOG(LOG_WARN, "session=%llu msg=\"chown fetched snapshot\" error=\"%s\"", ull(s->id),
            strerror(errno));
    if (fsync(rs->fd) == -1) {
        abort_resume(s, WIRE_ERR_UNAVAILABLE, "fsync of the fetched snapshot: %s",
                     strerror(errno));
        return -EPROTO;
    }
    close(rs->fd);
    rs->fd = -1;
    snap_name(name, sizeof(name), rs->pos, rs->base ? SNAP_DELTA : SNAP_FULL);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (rename(rs->tmp, path) == -1) {
        abort_resume(s, WIRE_ERR_UNAVAILABLE, "rename of the fetched snapshot: %s",
                     strerror(errno));
        return -EPROTO;
    }
    rs->chain[rs->nchain++] = rs->pos;
    return 0;
}

/* ---- rebuilding ---- */

/* Decode h's order into entries at their positions; [*lo, *hi] is what it covers
 * (hi = lo - 1 when empty). 0, or -EPROTO. */
static int decode_order(const struct held *h, struct order_entry **out, uint64_t *lo,
                        uint64_t *hi)
{
    size_t off = 0, n = 0, cap = 0;
    uint64_t prev = 0;
    struct order_entry *e = NULL;

    while (off < h->order.len) {
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            struct order_entry *p = realloc(e, cap * sizeof(*e));
            if (!p) {
                free(e);
                return -ENOMEM;
            }
            e = p;
        }
        if (order_decode(h->order.data, h->order.len, &off, &e[n], &prev) < 0) {
            free(e);
            return -EPROTO;
        }
        n++;
    }
    *out = e;
    *lo = h->order_base ? h->order_base : 1;
    *hi = *lo + n - 1;
    return 0;
}

/* Entry q from whichever order holds it, or NULL. */
static const struct order_entry *entry_at(struct order_entry *const ord[2], const uint64_t lo[2],
                                          const uint64_t hi[2], uint64_t q)
{
    for (int i = 0; i < 2; i++)
        if (q >= lo[i] && q <= hi[i])
            return &ord[i][q - lo[i]];
    return NULL;
}

static int same_entry(const struct order_entry *a, const struct order_entry *b)
{
    return a->src == b->src && a->time_ms == b->time_ms && a->timer_id == b->timer_id;
}

/* The event of an order entry, with its message if it has one. */
static int push_entry(struct session *s, const struct order_entry *e, uint64_t seq[2])
{
    struct resume *rs = s->rs;
    const uint8_t *msg = NULL;
    uint32_t len = 0;
    int side;

    switch (e->src) {
    case ORDER_START:
        /* Rebuilt from its start, the session gets this edge's [app] values: they must be
         * the ones it started with (appcfg.h), or the replay could diverge. */
        if (e->timer_id != appcfg_hash(S.cfg.app_kv, S.cfg.app_kv_len)) {
            abort_resume(s, WIRE_ERR_INCOMPATIBLE, "the session started with other [app] "
                         "values than this edge's: try another edge");
            return -EINVAL;
        }
        return sess_push_event_at(s, EV_START, ORDER_START, 0, S.cfg.app_kv, S.cfg.app_kv_len,
                                  e->time_ms);
    case ORDER_CLIENT:
    case ORDER_SERVER:
        side = e->src == ORDER_CLIENT ? SIDE_CLIENT : SIDE_SERVER;
        msg = held_msg(&rs->h[side], ++seq[side], &len);
        if (!msg) {
            abort_resume(s, WIRE_ERR_SESSION, "the %s's message %llu (event %llu) is held by "
                         "no one: an endpoint let it go before it was stored off the node",
                         side_name(side), ull(seq[side]), ull(s->next_pos));
            return -ENOENT;
        }
        return sess_push_event_at(s, side == SIDE_CLIENT ? EV_CLIENT : EV_SERVER, e->src,
                                  seq[side], msg, len, e->time_ms);
    case ORDER_TIMER:
        return sess_push_event_at(s, EV_TIMER, ORDER_TIMER, e->timer_id, NULL, 0, e->time_ms);
    case ORDER_CLOSE_CLIENT:
    case ORDER_CLOSE_SERVER:
        return sess_push_event_at(s, EV_CLOSE, e->src, e->src == ORDER_CLOSE_CLIENT ? 1 : 2,
                                  NULL, 0, e->time_ms);
    }
    return -EPROTO;
}

static void rebuild(struct session *s)
{
    struct resume *rs = s->rs;
    struct order_entry *ord[2] = { NULL, NULL };
    uint64_t lo[2], hi[2], P = 0, N, seq[2] = { 0, 0 };
    struct snap_meta m;
    char dir[PATH_MAX], name[64], path[PATH_MAX + 64], err[256];
    int closing = 0;
    /* Without a snapshot, the module an older copy here ran (resume_start bound this copy
     * to it): the events replayed from the start must meet the same app. */
    uint32_t zgen = s->zgen;

    memset(&m, 0, sizeof(m));
    session_dir(s, dir, sizeof(dir));
    if (rs->nchain) {
        P = rs->chain[rs->nchain - 1];
        snap_name(name, sizeof(name), P, rs->nchain > 1 ? SNAP_DELTA : SNAP_FULL);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        if (snap_read(path, NULL, 0, &m, err, sizeof(err)) < 0 || m.session_id != s->id) {
            abort_resume(s, WIRE_ERR_SESSION, "the snapshot %llu stored at the server endpoint "
                         "is not usable, not loaded: %s", ull(P),
                         err[0] ? err : "another session's");
            return;
        }
        /* The module that wrote it: the current one, or the one before a reload whose
         * zygote still runs for older sessions (zygote.c). */
        zgen = zygote_for_fingerprint(m.fingerprint);
        if (!zgen) {
            abort_resume(s, WIRE_ERR_INCOMPATIBLE, "the session's snapshot has another layout "
                         "fingerprint than this edge's workers (another build of the worker, "
                         "its libraries or the app): try another edge");
            return;
        }
        if (m.max_message != S.cfg.max_message_bytes) {
            abort_resume(s, WIRE_ERR_INCOMPATIBLE, "the session's snapshot was taken with "
                         "max_message_bytes=%u, this edge has %u: try another edge",
                         m.max_message, S.cfg.max_message_bytes);
            return;
        }
        seq[0] = m.seq[0];
        seq[1] = m.seq[1];
        for (int i = 0; i < 2; i++) {
            if (m.out_no[i] > rs->h[i].last_out) {
                abort_resume(s, WIRE_ERR_SESSION, "the snapshot %llu holds %llu outputs to the "
                             "%s, which has only %llu: outputs would be lost", ull(P),
                             ull(m.out_no[i]), side_name(i), ull(rs->h[i].last_out));
                return;
            }
        }
    }
    for (int i = 0; i < 2; i++) {
        if (decode_order(&rs->h[i], &ord[i], &lo[i], &hi[i]) < 0) {
            abort_resume(s, WIRE_ERR_PROTO, "the %s's order does not decode", side_name(i));
            goto out;
        }
        if (P && hi[i] < P) {
            abort_resume(s, WIRE_ERR_SESSION, "the %s's order ends at %llu, before the stored "
                         "snapshot at %llu", side_name(i), ull(hi[i]), ull(P));
            goto out;
        }
    }
    /* Both are prefixes of one true order: where they overlap they must agree. */
    N = hi[0] > hi[1] ? hi[0] : hi[1];
    for (uint64_t q = lo[0] > lo[1] ? lo[0] : lo[1]; q <= hi[0] && q <= hi[1]; q++) {
        if (!same_entry(&ord[0][q - lo[0]], &ord[1][q - lo[1]])) {
            abort_resume(s, WIRE_ERR_SESSION, "the client's and the server's orders differ at "
                         "event %llu: the session cannot be rebuilt (a bug; its state is kept)",
                         ull(q));
            s->failed = 1;
            goto out;
        }
    }
    for (uint64_t q = P + 1; q <= N; q++) {
        if (!entry_at(ord, lo, hi, q)) {
            abort_resume(s, WIRE_ERR_SESSION, "no endpoint holds event %llu of the order", ull(q));
            goto out;
        }
    }
    /* The events after the snapshot, at their positions and times. */
    s->next_pos = P + 1;
    s->pushed_seq[SIDE_CLIENT] = seq[SIDE_CLIENT];   /* push_entry moves them on */
    s->pushed_seq[SIDE_SERVER] = seq[SIDE_SERVER];
    s->order_base = P + 1;
    s->order_len = 0;
    s->order_prev_time = P && entry_at(ord, lo, hi, P) ? entry_at(ord, lo, hi, P)->time_ms : 0;
    s->last_time = s->order_prev_time;
    for (uint64_t q = P + 1; q <= N; q++) {
        const struct order_entry *e = entry_at(ord, lo, hi, q);
        if (push_entry(s, e, seq) < 0) {
            if (s->state == S_RESUMING)
                abort_resume(s, WIRE_ERR_SESSION, "cannot rebuild event %llu", ull(q));
            goto out;
        }
        if (e->src == ORDER_CLOSE_CLIENT || e->src == ORDER_CLOSE_SERVER)
            closing = 1;
    }
    s->c[SIDE_CLIENT].order_sent = hi[0];
    s->c[SIDE_SERVER].order_sent = hi[1];
    s->outputs[SIDE_CLIENT] = rs->h[SIDE_CLIENT].last_out;
    s->outputs[SIDE_SERVER] = rs->h[SIDE_SERVER].last_out;
    s->replay_quiet_until = N;
    s->ctl->replay_until = N;
    s->ctl->announce_timers_at = N > P ? N : P;
    s->snap_pos = s->snap_written = s->remote_pos = s->receipt = P;
    s->snap_written_full = rs->nchain ? rs->chain[0] : 0;
    s->deltas_since_full = rs->nchain ? (uint32_t)rs->nchain - 1 : 0;

    s->state = closing ? S_CLOSING : S_LIVE;
    /* For cessna-ctl sessions: the restore and replay are timed from here, like a recovery. */
    s->recoveries++;
    s->recovery_mode = "remote";
    s->recovery_untimed = 1;   /* recovery.c puts its duration in the metrics */
    s->died_ns = s->resume_ns[2];
    if (!P && !N && sess_push_event_at(s, EV_START, ORDER_START, 0, S.cfg.app_kv,
                                       S.cfg.app_kv_len, 0) < 0)
        goto fail;
    /* What lies beyond the order was never reflected in anything anyone saw: new events. */
    for (int i = 0; i < 2 && !closing; i++) {
        struct held *h = &rs->h[i];
        for (uint64_t q = seq[i] + 1; q < h->next_seq; q++) {
            uint32_t len;
            const uint8_t *msg = held_msg(h, q, &len);
            if (!msg) {
                sess_fail(s, WIRE_ERR_SESSION, "the %s's message %llu is missing from its resume",
                          side_name(i), ull(q));
                goto out;
            }
            if (sess_push_event_at(s, i == SIDE_CLIENT ? EV_CLIENT : EV_SERVER,
                                   i == SIDE_CLIENT ? ORDER_CLIENT : ORDER_SERVER, q, msg, len,
                                   sess_now_ms()) < 0)
                goto fail;
        }
        s->c[i].next_seq = h->next_seq ? h->next_seq : 1;
    }
    zygote_bind(s, zgen);
    if (sess_spawn_worker(s, P, err, sizeof(err)) < 0) {
        sess_fail(s, WIRE_ERR_UNAVAILABLE, "cannot start a worker to resume: %s", err);
        goto out;
    }
    uint8_t frame[WIRE_HDR_LEN + 32];
    sess_queue(&s->c[SIDE_CLIENT], frame, wire_put_welcome(frame, s->id, s->token, s->epoch),
               NULL, 0);
    s->c[SIDE_CLIENT].up = s->c[SIDE_SERVER].up = 1;
    sup_flush(s, &s->c[SIDE_CLIENT]);
    S.stats.resumes++;
    LOG(LOG_INFO, "session=%llu msg=\"resumed\" epoch=%llu snapshot=%llu snapshot_files=%d "
        "replay=%llu new_client=%llu new_server=%llu took_ms=%llu", ull(s->id), ull(s->epoch),
        ull(P), rs->nchain, ull(N - P), ull(rs->h[0].next_seq - 1 - seq[0]),
        ull(rs->h[1].next_seq - 1 - seq[1]), ull((tmo_now_ns() - s->resume_ns[0]) / 1000000));
    resume_free(s);
    sess_resume_input(s);   /* live frames that waited */
out:
    free(ord[0]);
    free(ord[1]);
    return;
fail:
    sess_fail(s, WIRE_ERR_SESSION, "out of memory rebuilding the session");
    goto out;
}

/* ---- the exchange ---- */

static void clear_dir(struct session *s)
{
    char dir[PATH_MAX], path[PATH_MAX + 300];
    DIR *d;
    struct dirent *e;

    session_dir(s, dir, sizeof(dir));
    if (!(d = opendir(dir)))
        return;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && !snap_is_spare(e->d_name)) {   /* spares hold nothing */
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
}

static void reach_server(struct session *s);

void resume_start(struct session *s, const struct wire_frame *f)
{
    struct session *old = sess_find(f->u.resume.session_id);

    if (f->u.resume.secret_len) {
        sess_fail(s, WIRE_ERR_PROTO, "a client's RESUME carries no secret");
        return;
    }
    /* This edge knows the credential of a session it holds: a wrong one must not end the
     * live copy (the server endpoint's check would come too late for it). Same text as the
     * server endpoint's refusal: no oracle. A copy still gathering its own RESUME holds a
     * token no one has checked yet (anyone who knows the id can send one): it is no
     * reference, and refusing with AUTH would make the owner give up for good. The newer
     * resume takes over below; the server endpoint checks its token. */
    int unverified = old && old->state == S_RESUMING && (!old->rs || !old->rs->got_info);
    if (old && old != s && !unverified &&
        !cred_equal(old->token, WIRE_TOKEN_LEN, f->u.resume.token, WIRE_TOKEN_LEN)) {
        LOG(LOG_WARN, "session=%llu msg=\"RESUME with a wrong client credential refused\"",
            ull(f->u.resume.session_id));
        sess_fail(s, WIRE_ERR_AUTH, "authentication failed");
        return;
    }
    s->id = f->u.resume.session_id;
    if (old && old != s) {
        /* A copy of this session still lives here (its client came back before we noticed
         * it left): the newer resume wins, and takes over its directory. */
        LOG(LOG_INFO, "session=%llu msg=\"older copy ends: the client resumed\"", ull(s->id));
        old->dir_taken = 1;
        if (old->zgen)
            zygote_bind(s, old->zgen);   /* its module stays while this copy may need it */
        sesslog_cause(&old->log, END_SUPERSEDED);
        sess_end_quietly(old);
        sess_maybe_free(old);
    }
    s->rs = calloc(1, sizeof(*s->rs));
    if (!s->rs) {
        sess_fail(s, WIRE_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    s->rs->fd = -1;
    s->resume_ns[0] = tmo_now_ns();
    memcpy(s->token, f->u.resume.token, WIRE_TOKEN_LEN);
    s->rs->client_epoch = f->u.resume.epoch;
    s->rs->h[SIDE_CLIENT].last_out = f->u.resume.last_out;
    s->rs->h[SIDE_CLIENT].next_seq = f->u.resume.next_seq;
    s->rs->h[SIDE_CLIENT].order_base = f->u.resume.order_base;
    s->state = S_RESUMING;
    s->c[SIDE_CLIENT].up = 1;   /* it may hear an ERROR */
    tmo_touch(s);
    LOG(LOG_INFO, "session=%llu msg=\"resume requested\" epoch=%llu last_out=%llu next_seq=%llu",
        ull(s->id), ull(f->u.resume.epoch), ull(f->u.resume.last_out), ull(f->u.resume.next_seq));
    /* Nothing more is read from the client (nor kept, nor touched on disk) until the server
     * endpoint has checked its credential and answered RESUME_INFO. */
    reach_server(s);
}

/* The server endpoint vouched for the client (RESUME_INFO): the session gets its memory and
 * directory here, and the client's material is read now. 0, or -1 (the resume ended). */
static int credential_checked(struct session *s)
{
    char err[256];

    sdir_reclaim(s->id);
    if (sess_prepare(s, err, sizeof(err)) < 0) {
        abort_resume(s, WIRE_ERR_UNAVAILABLE, "cannot prepare the session: %s", err);
        return -1;
    }
    clear_dir(s);
    return 0;
}

/* Ask the server endpoint, which checks the client's credential. */
static void reach_server(struct session *s)
{
    uint8_t frame[WIRE_RESUME_MAX];
    char err[256];

    if (sess_connect_server(s, frame, wire_put_resume(frame, s->id, s->token,
                                                      s->rs->client_epoch + 1, 0, 0, 0,
                                                      S.edge_secret, S.edge_secret_len),
                            err, sizeof(err)) < 0)
        abort_resume(s, WIRE_ERR_UNAVAILABLE, "%s", err);
}

void resume_on_connect(struct session *s, int res)
{
    struct conn *srv = &s->c[SIDE_SERVER];

    if (res < 0) {
        srv->eof = srv->dead = 1;
        abort_resume(s, WIRE_ERR_UNAVAILABLE, "server endpoint %s unreachable: %s",
                     S.cfg.server, strerror(-res));
        return;
    }
    srv->up = 1;
    sup_flush(s, srv);
    sup_arm_recv(s, srv);
}

int resume_on_frame(struct session *s, struct conn *c, const struct wire_frame *f)
{
    struct resume *rs = s->rs;
    struct held *h = &rs->h[c->side];
    int rc = 0;

    if (h->ended)
        return -EAGAIN;   /* live input: it waits until the session is rebuilt */
    if (c->side == SIDE_CLIENT && !rs->got_info)
        return -EAGAIN;   /* unchecked yet: what it sends waits, unread, unkept */
    if (f->type != WIRE_HEARTBEAT)
        tmo_touch(s);     /* progress: the resume's deadline moves (heartbeats are none) */
    if (c->side == SIDE_SERVER && !rs->got_info) {
        if (f->type == WIRE_ERROR) {
            /* AUTH (wrong credential or unknown session, one text for both) passes through
             * unchanged, code and text: the client must not try further edges with it, and
             * must not learn anything from the wording. */
            if (f->u.error.code == WIRE_ERR_AUTH)
                abort_resume(s, WIRE_ERR_AUTH, "%.*s", (int)f->u.error.text_len,
                             f->u.error.text);
            else
                abort_resume(s, f->u.error.code, "server endpoint: %.*s",
                             (int)f->u.error.text_len, f->u.error.text);
            return -EPROTO;
        }
        if (f->type != WIRE_RESUME_INFO) {
            abort_resume(s, WIRE_ERR_UNEXPECTED, "server endpoint answered RESUME with %s",
                         wire_type_name(f->type));
            return -EPROTO;
        }
        rs->got_info = 1;
        s->server_stores = 1;   /* it answers RESUME: it stores */
        s->resume_ns[1] = tmo_now_ns();
        s->epoch = f->u.resume_info.epoch;
        if (s->epoch <= rs->client_epoch) {
            abort_resume(s, WIRE_ERR_PROTO, "server endpoint granted epoch %llu, not above %llu",
                         ull(s->epoch), ull(rs->client_epoch));
            return -EPROTO;
        }
        h->last_out = f->u.resume_info.last_out;
        h->next_seq = f->u.resume_info.next_seq;
        h->order_base = f->u.resume_info.order_base;
        if (credential_checked(s) < 0)
            return -EPROTO;
        sess_resume_input(s);   /* the client's material, waiting until now */
        return s->state == S_DEAD ? -EPROTO : 0;
    }
    switch (f->type) {
    case WIRE_ORDER:
        if (held_over(s, h, c->side, f->u.out.order_len) < 0)
            return -EPROTO;
        rc = held_order(h, f);
        break;
    case WIRE_DATA:
        if (held_over(s, h, c->side, f->u.data.len) < 0)
            return -EPROTO;
        rc = held_data(s, h, c->side, f);
        break;
    case WIRE_SNAP_PUT:
        if (c->side != SIDE_SERVER)
            goto unexpected;
        rc = snap_piece(s, f);
        break;
    case WIRE_HEARTBEAT:
        break;
    case WIRE_RESUME_END:
        h->ended = 1;
        if (c->side == SIDE_SERVER && rs->fd >= 0) {
            abort_resume(s, WIRE_ERR_PROTO, "snapshot %llu from the server endpoint ends "
                         "early (%llu of %llu bytes)", ull(rs->pos), ull(rs->off), ull(rs->total));
        } else if (c->side == SIDE_SERVER) {
            s->resume_ns[2] = tmo_now_ns();
        }
        if (s->state == S_RESUMING && rs->h[SIDE_CLIENT].ended && rs->h[SIDE_SERVER].ended)
            rebuild(s);   /* both have said all they hold */
        return s->state == S_DEAD ? -EPROTO : 0;
    case WIRE_ERROR:
        abort_resume(s, f->u.error.code, "%s endpoint: %.*s", side_name(c->side),
                     (int)f->u.error.text_len, f->u.error.text);
        return -EPROTO;
    default:
        goto unexpected;
    }
    if (rc == -ENOMEM)
        abort_resume(s, WIRE_ERR_UNAVAILABLE, "out of memory gathering the session");
    return s->state == S_DEAD ? -EPROTO : 0;
unexpected:
    abort_resume(s, WIRE_ERR_UNEXPECTED, "unexpected %s from the %s while resuming",
                 wire_type_name(f->type), side_name(c->side));
    return -EPROTO;
}
