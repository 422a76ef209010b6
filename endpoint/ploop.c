/* ploop.c - see ploop.h. */
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/sockios.h>

#include "addr.h"
#include "cessna_version.h"
#include "framing.h"
#include "log.h"
#include "ploop.h"

enum op { OP_ACCEPT = 1, OP_ACCEPT_RESUME, OP_TICK, OP_RECV, OP_SEND, OP_CONNECT, OP_IGNORE };

#define UD(op, slot, arg) (((uint64_t)(op) << 56) | ((uint64_t)(slot) << 24) | ((uint64_t)(arg) & 0xffffff))
#define UD_OP(ud)   ((int)((ud) >> 56))
#define UD_SLOT(ud) ((uint32_t)(((ud) >> 24) & 0xffffffff))
#define UD_ARG(ud)  ((uint32_t)((ud) & 0xffffff))
#define ARG(s, side)      ((((s)->gen[side] & 0x7fffffu) << 1) | (uint32_t)(side))
#define ARG_SIDE(arg)     ((enum pside)((arg) & 1))
#define ARG_GEN(arg)      ((arg) >> 1)

#define TICK_MS          100    /* deadlines are checked this often */
#define ACCEPT_PAUSE_MS  100    /* out of file descriptors: accept again after this */
#define ACCEPT_LOG_MS    1000
#define ID_BUCKETS       65536u
#define SLOTS_MAX        (1u << 24)

int ploop_handshake_ms = HANDSHAKE_MS;
int ploop_connect_ms;
int ploop_heartbeat_ms;
int ploop_detach_ms = 60000;
int ploop_framing;

static struct {
    struct io_uring ring;
    const struct proxy_spec *spec;
    int lfd;
    bool accept_paused;
    uint64_t accept_errors;
    int64_t accept_logged_ms;
    struct __kernel_timespec tick_ts, pause_ts;
    struct psess **slots;     /* every slot ever made; stable addresses */
    uint32_t nslots, *free_slots, nfree;
    uint32_t buckets[ID_BUCKETS];   /* slot + 1, 0 for none */
    unsigned live;
} L;

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&L.ring);

    while (!sqe) {
        io_uring_submit(&L.ring);
        sqe = io_uring_get_sqe(&L.ring);
    }
    return sqe;
}

static void cancel(uint64_t ud)
{
    struct io_uring_sqe *sqe = sqe_get();

    io_uring_prep_cancel64(sqe, ud, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
}

/* ---- the id table ---- */

static uint32_t *bucket(uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdull;
    id ^= id >> 33;
    return &L.buckets[id & (ID_BUCKETS - 1)];
}

struct psess *ploop_find(uint64_t id)
{
    for (uint32_t i = *bucket(id); i; i = L.slots[i - 1]->hnext)
        if (L.slots[i - 1]->r.session_id == id)
            return L.slots[i - 1];
    return NULL;
}

int ploop_bind(struct psess *s, uint64_t id)
{
    if (ploop_find(id))
        return -EEXIST;
    uint32_t *b = bucket(id);
    s->r.session_id = id;
    s->hnext = *b;
    *b = s->slot + 1;
    s->bound = true;
    return 0;
}

static void unbind(struct psess *s)
{
    if (!s->bound)
        return;
    for (uint32_t *p = bucket(s->r.session_id); *p; p = &L.slots[*p - 1]->hnext) {
        if (*p == s->slot + 1) {
            *p = s->hnext;
            break;
        }
    }
    s->bound = false;
}

/* ---- slots ---- */

static struct psess *slot_new(void)
{
    struct psess *s;

    if (L.nfree) {
        s = L.slots[L.free_slots[--L.nfree]];
    } else {
        if (L.nslots == SLOTS_MAX)
            return NULL;
        struct psess **sl = realloc(L.slots, (L.nslots + 1) * sizeof(*sl));
        uint32_t *fr = realloc(L.free_slots, (L.nslots + 1) * sizeof(*fr));
        if (sl)
            L.slots = sl;
        if (fr)
            L.free_slots = fr;
        if (!sl || !fr || !(s = calloc(1, sizeof(*s))))
            return NULL;
        s->slot = L.nslots;
        L.slots[L.nslots++] = s;
    }
    uint32_t slot = s->slot, gen0 = s->gen[0], gen1 = s->gen[1];
    memset(s, 0, sizeof(*s));
    s->slot = slot;
    s->gen[0] = gen0 + 1;   /* late completions of the slot's previous user never match */
    s->gen[1] = gen1 + 1;
    s->fd[0] = s->fd[1] = -1;
    s->plain_unread = -1;
    if (relay_init(&s->r, *L.spec->max_msg) < 0) {
        relay_free(&s->r);
        L.free_slots[L.nfree++] = s->slot;
        return NULL;
    }
    s->state = P_HS_EDGE;
    L.live++;
    return s;
}

static void maybe_free(struct psess *s)
{
    if (s->state != P_CLOSING || s->inflight)
        return;
    relay_free(&s->r);
    s->state = P_FREE;
    L.free_slots[L.nfree++] = s->slot;
    L.live--;
}

/* ---- operations ---- */

static void arm_recv(struct psess *s, enum pside side, void *p, size_t len)
{
    struct io_uring_sqe *sqe = sqe_get();

    io_uring_prep_recv(sqe, s->fd[side], p, len, 0);
    if (s->drained[side])   /* the last read took all there was: wait for data first */
        sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    s->recv_len[side] = len;
    io_uring_sqe_set_data64(sqe, UD(OP_RECV, s->slot, ARG(s, side)));
    s->recv_armed[side] = true;
    s->inflight++;
}

static void arm_send(struct psess *s, enum pside side)
{
    struct outq *q = side == PS_EDGE ? &s->r.to_edge : &s->r.to_plain;
    const uint8_t *p;
    size_t len;

    if (s->send_armed[side] || s->fd[side] < 0)
        return;
    outq_next(q, &p, &len);
    if (!len)
        return;
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_send(sqe, s->fd[side], p, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(OP_SEND, s->slot, ARG(s, side)));
    s->send_armed[side] = true;
    s->inflight++;
}

static void arm_plain_recv(struct psess *s)
{
    uint8_t *p;
    size_t room;

    relay_plain_room(&s->r, &p, &room);
    arm_recv(s, PS_PLAIN, p, room);
}

int ploop_hs_recv(struct psess *s)
{
    uint8_t *p;
    size_t room;
    int rc;

    if (s->recv_armed[PS_EDGE])
        return 0;
    rc = relay_in_room(&s->r, HANDSHAKE_FRAME_MAX, &p, &room);
    if (rc < 0)
        return rc;
    if (s->state != P_HS_EDGE || !s->hs_deadline) {   /* one deadline for the whole frame */
        s->state = P_HS_EDGE;
        s->hs_deadline = relay_now_ms() + ploop_handshake_ms;
    }
    arm_recv(s, PS_EDGE, p, room);
    arm_send(s, PS_EDGE);   /* a RESUME and its material, if queued */
    return 0;
}

void ploop_connect(struct psess *s, enum pside side, int fd)
{
    struct io_uring_sqe *sqe = sqe_get();

    s->fd[side] = fd;
    s->state = P_HS_CONNECT;
    s->hs_deadline = relay_now_ms() + (ploop_connect_ms ? ploop_connect_ms : ploop_handshake_ms);
    io_uring_prep_connect(sqe, fd, (struct sockaddr *)&s->addr, s->addrlen);
    io_uring_sqe_set_data64(sqe, UD(OP_CONNECT, s->slot, ARG(s, side)));
    s->connect_armed[side] = true;
    s->inflight++;
    io_uring_submit(&L.ring);   /* s->addr is read at submission: not later than now */
}

void ploop_drop(struct psess *s, enum pside side)
{
    if (s->recv_armed[side])
        cancel(UD(OP_RECV, s->slot, ARG(s, side)));
    if (s->send_armed[side])
        cancel(UD(OP_SEND, s->slot, ARG(s, side)));
    if (s->connect_armed[side])
        cancel(UD(OP_CONNECT, s->slot, ARG(s, side)));
    if (s->fd[side] >= 0) {
        /* Operations still queued name the descriptor by number: submit them (and the
         * cancels) before the number is closed and handed to a new connection. */
        if (s->recv_armed[side] || s->send_armed[side] || s->connect_armed[side])
            io_uring_submit(&L.ring);
        if (side == PS_PLAIN && s->r.edge_lost) {
            /* The edge is gone without CLOSE: a reset, so the program can tell a crash
             * from an orderly end (a FIN). */
            struct linger lg = { .l_onoff = 1, .l_linger = 0 };
            setsockopt(s->fd[side], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(s->fd[side]);
    }
    s->fd[side] = -1;
    s->gen[side]++;
    s->recv_armed[side] = s->send_armed[side] = s->connect_armed[side] = false;
}

void ploop_adopt_edge(struct psess *dst, struct psess *src)
{
    struct relay *r = &dst->r;
    struct rbuf t;

    if (dst->fd[PS_EDGE] >= 0)
        ploop_drop(dst, PS_EDGE);   /* fenced: its completions no longer match gen */
    dst->fd[PS_EDGE] = src->fd[PS_EDGE];
    src->fd[PS_EDGE] = -1;
    src->gen[PS_EDGE]++;
    t = r->in;                      /* the new edge's bytes after its RESUME */
    r->in = src->r.in;
    src->r.in = t;
    src->r.in.off = src->r.in.len = 0;
    dst->drained[PS_EDGE] = false;
    outq_clear(&r->to_edge);
    r->edge_dead = r->edge_lost = r->detached = r->moved = false;
    r->close_sent = false;
    r->last_edge_ms = relay_now_ms();
    dst->retry_at = dst->detach_deadline = 0;
}

void ploop_end(struct psess *s)
{
    if (s->state == P_CLOSING || s->state == P_FREE)
        return;
    if (L.spec->ended)
        L.spec->ended(s);
    if (s->was_live)
        LOG(LOG_INFO, "session=%llu msg=\"session ended\" sent=%llu received=%llu%s",
            (unsigned long long)s->r.session_id, (unsigned long long)s->r.seq,
            (unsigned long long)s->r.last_out, s->r.edge_lost ? " plain=reset" : "");
    unbind(s);
    ploop_drop(s, PS_EDGE);
    ploop_drop(s, PS_PLAIN);
    s->state = P_CLOSING;
    maybe_free(s);
}

/* A detached session: flush to the plain peer, keep reading it while the keep buffer has
 * room, send a RESUME being made (client proxy, P_HS_EDGE). */
static void detached_step(struct psess *s)
{
    struct relay *r = &s->r;

    if (!r->plain_dead)
        arm_send(s, PS_PLAIN);
    if (s->state == P_HS_EDGE && s->fd[PS_EDGE] >= 0)
        arm_send(s, PS_EDGE);
    if (!s->recv_armed[PS_PLAIN] && !r->plain_eof && s->fd[PS_PLAIN] >= 0 &&
        !keep_full(&r->keep))
        arm_plain_recv(s);
}

/* The relay found the edge lost: drop its connection, wait or resume. */
static void detach(struct psess *s)
{
    struct relay *r = &s->r;
    int64_t now = relay_now_ms();

    ploop_drop(s, PS_EDGE);
    r->in.off = r->in.len = 0;
    outq_clear(&r->to_edge);
    s->state = P_DETACHED;
    s->detach_start = now;
    s->detach_deadline = now + ploop_detach_ms;
    s->retry_at = 0;
    LOG(LOG_INFO, "session=%llu msg=\"edge lost; session detached\" wait_ms=%d last_out=%llu "
        "next_seq=%llu kept_bytes=%zu", (unsigned long long)r->session_id, ploop_detach_ms,
        (unsigned long long)r->last_out, (unsigned long long)(r->seq + 1), keep_bytes(&r->keep));
    if (L.spec->detached)
        L.spec->detached(s);
    if (s->state != P_CLOSING && s->state != P_FREE && r->detached)
        detached_step(s);
}

/* After every event of a live session: handle buffered frames, send what is queued, read
 * what there is room for, end the session when everything is flushed. */
static void step(struct psess *s)
{
    struct relay *r = &s->r;

    if (s->state == P_CLOSING || s->state == P_FREE)
        return;
    if (r->detached && r->done) {   /* a bad frame from the plain peer, no edge to tell */
        ploop_end(s);
        return;
    }
    if (s->state != P_LIVE) {
        if (r->detached)
            detached_step(s);
        return;
    }
    relay_frames(r);
    if (r->detached) {
        detach(s);
        return;
    }
    if (!r->edge_dead)
        arm_send(s, PS_EDGE);
    if (!r->plain_dead)
        arm_send(s, PS_PLAIN);
    if (r->done && !r->edge_dead && !outq_len(&r->to_edge) && !s->send_armed[PS_EDGE])
        r->edge_dead = true;   /* nothing more to say to the edge */
    if (r->done && (r->plain_dead || (!outq_len(&r->to_plain) && !s->send_armed[PS_PLAIN])) &&
        r->edge_dead) {
        ploop_end(s);
        return;
    }
    if (r->done) {
        int64_t now = relay_now_ms();
        if (r->deadline == 0 || r->deadline > now + RELAY_DRAIN_MS)
            r->deadline = now + RELAY_DRAIN_MS;
        return;
    }
    if (!s->recv_armed[PS_PLAIN] && !r->plain_eof && s->fd[PS_PLAIN] >= 0 &&
        outq_len(&r->to_edge) < RELAY_LIMIT && !keep_full(&r->keep))
        arm_plain_recv(s);
    if (!s->recv_armed[PS_EDGE] && !r->edge_dead && outq_len(&r->to_plain) < RELAY_LIMIT) {
        uint8_t *p;
        size_t room;
        if (relay_in_room(r, 0, &p, &room) < 0) {
            relay_fail(r, WIRE_ERR_SESSION, "proxy out of memory");
            step(s);
            return;
        }
        arm_recv(s, PS_EDGE, p, room);
        /* The heartbeat counts from here: while a slow plain peer kept us from reading, the
         * edge's frames waited in the socket, and its silence proved nothing. */
        r->last_edge_ms = relay_now_ms();
    }
}

void ploop_live(struct psess *s)
{
    s->state = P_LIVE;
    s->was_live = s->was_live || !s->r.done;   /* not a handshake refused with ERROR */
    if (!s->r.last_edge_ms)
        s->r.last_edge_ms = relay_now_ms();
    step(s);
}

/* ---- completions ---- */

static void on_recv(struct psess *s, enum pside side, int res)
{
    s->recv_armed[side] = false;
    if (res == -ECANCELED)
        return;
    s->drained[side] = res >= 0 && (size_t)res < s->recv_len[side];
    if (side == PS_EDGE && res > 0)
        s->r.last_edge_ms = relay_now_ms();
    if (side == PS_EDGE) {
        if (s->state == P_HS_EDGE) {
            if (res > 0)
                s->r.in.len += (size_t)res;
            L.spec->hs_input(s, res);
            return;
        }
        relay_edge_bytes(&s->r, res);
    } else if (!s->r.done) {
        relay_plain_chunk(&s->r, res);
    }
    step(s);
}

static void on_send(struct psess *s, enum pside side, int res)
{
    s->send_armed[side] = false;
    if (res == -ECANCELED)
        return;
    if (res < 0) {
        if (side == PS_EDGE)
            relay_edge_gone(&s->r, strerror(-res));
        else
            relay_plain_gone(&s->r);
    } else {
        outq_sent(side == PS_EDGE ? &s->r.to_edge : &s->r.to_plain, (size_t)res);
        /* The session is over and its program reads what is left: the drain's deadline
         * counts from the last progress (step sets it again), so a slow reader gets all of
         * it; a fixed one cut a client reading under ~1 MB/s short, with a FIN. */
        if (side == PS_PLAIN && s->r.done && res > 0) {
            s->r.deadline = 0;
            s->plain_unread = -1;   /* the kernel's queue was refilled: measure anew */
        }
    }
    step(s);
}

static void on_connect(struct psess *s, enum pside side, int res)
{
    s->connect_armed[side] = false;
    if (s->state != P_HS_CONNECT)
        return;
    if (res == 0) {
        int one = 1;
        setsockopt(s->fd[side], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    L.spec->connected(s, side, res);
}

/* At the drain's deadline: whether the program took bytes from the kernel since the last
 * one. A send completes only when the socket has room for more, which at a slow reader can
 * take longer than the deadline while it does read. */
static bool plain_reading(struct psess *s)
{
    int unread;

    if (!s->r.done || s->fd[PS_PLAIN] < 0 || s->r.plain_dead ||
        ioctl(s->fd[PS_PLAIN], SIOCOUTQ, &unread) == -1)
        return false;
    bool took = s->plain_unread < 0 || unread < s->plain_unread;
    s->plain_unread = unread;
    return took && unread > 0;
}

/* Deadlines: the handshake's, the wait for the edge's CLOSE, the drain. */
static void on_tick(void)
{
    int64_t now = relay_now_ms();

    for (uint32_t i = 0; i < L.nslots; i++) {
        struct psess *s = L.slots[i];
        if (s->r.detached && s->state != P_CLOSING && s->state != P_FREE &&
            s->detach_deadline && now >= s->detach_deadline) {
            LOG(LOG_WARN, "session=%llu msg=\"%s\" waited_ms=%lld", (unsigned long long)s->r.session_id,
                L.spec->detach_expired ? L.spec->detach_expired : "gave up on the lost edge",
                (long long)(now - s->detach_start));
            s->r.edge_lost = true;   /* no orderly end: reset the plain peer */
            ploop_end(s);
            continue;
        }
        if (s->state == P_DETACHED && s->retry_at && now >= s->retry_at) {
            s->retry_at = 0;
            if (L.spec->retry)
                L.spec->retry(s);
            continue;
        }
        if (s->state == P_LIVE && ploop_heartbeat_ms && !s->r.done && !s->r.edge_dead &&
            s->r.resumable && s->recv_armed[PS_EDGE] &&
            now - s->r.last_edge_ms >= ploop_heartbeat_ms) {
            char why[96];
            snprintf(why, sizeof(why), "no frame for %d ms (heartbeat timeout)",
                     ploop_heartbeat_ms);
            relay_edge_gone(&s->r, why);
            step(s);
            continue;
        }
        if ((s->state == P_HS_EDGE || s->state == P_HS_CONNECT) && s->hs_deadline &&
            now >= s->hs_deadline) {
            if (s->state == P_HS_EDGE) {
                ploop_drop(s, PS_EDGE);
                L.spec->hs_input(s, -ETIMEDOUT);
            } else {
                enum pside side = s->connect_armed[PS_EDGE] ? PS_EDGE : PS_PLAIN;
                ploop_drop(s, side);
                L.spec->connected(s, side, -ETIMEDOUT);
            }
        } else if (s->state == P_LIVE && s->r.deadline && now >= s->r.deadline) {
            if (plain_reading(s)) {
                s->r.deadline = now + RELAY_DRAIN_MS;   /* slow, but reading: it gets the rest */
                continue;
            }
            LOG(LOG_WARN, "session=%llu msg=\"gave up waiting\" closing=%s",
                (unsigned long long)s->r.session_id, s->r.done ? "flush" : "edge CLOSE");
            if (!s->r.done)
                s->r.edge_lost = true;   /* no orderly end: reset the plain peer */
            ploop_end(s);
        }
    }
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_timeout(sqe, &L.tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_TICK, 0, 0));
}

static void arm_accept(void)
{
    struct io_uring_sqe *sqe = sqe_get();

    io_uring_prep_multishot_accept(sqe, L.lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT, 0, 0));
}

static void pause_accepting(struct io_uring_cqe *cqe)
{
    int64_t now = relay_now_ms();

    L.accept_errors++;
    if (!L.accept_logged_ms || now - L.accept_logged_ms >= ACCEPT_LOG_MS) {
        LOG(LOG_WARN, "msg=\"accept: out of file descriptors; accepting paused\" error=\"%s\" "
            "pause_ms=%d errors=%llu sessions=%u", strerror(-cqe->res), ACCEPT_PAUSE_MS,
            (unsigned long long)L.accept_errors, L.live);
        L.accept_logged_ms = now;
    }
    if (L.accept_paused)
        return;
    L.accept_paused = true;
    if (cqe->flags & IORING_CQE_F_MORE)
        cancel(UD(OP_ACCEPT, 0, 0));
    L.pause_ts.tv_sec = 0;
    L.pause_ts.tv_nsec = ACCEPT_PAUSE_MS * 1000000ll;
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_timeout(sqe, &L.pause_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT_RESUME, 0, 0));
}

static void on_accept(struct io_uring_cqe *cqe)
{
    int res = cqe->res;

    if (res >= 0) {
        int one = 1;
        struct psess *s = slot_new();
        setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (!s) {
            LOG(LOG_ERROR, "msg=\"out of memory for a session; connection closed\"");
            close(res);
        } else {
            L.spec->accepted(s, res);
        }
    } else if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
        pause_accepting(cqe);
    } else if (res != -EINTR && res != -ECANCELED) {
        LOG(LOG_WARN, "msg=\"accept\" error=\"%s\"", strerror(-res));
    }
    if (!(cqe->flags & IORING_CQE_F_MORE) && !L.accept_paused)
        arm_accept();
}

static void dispatch(struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    int op = UD_OP(ud);
    uint32_t slot = UD_SLOT(ud), arg = UD_ARG(ud);

    switch (op) {
    case OP_ACCEPT:  return on_accept(cqe);
    case OP_ACCEPT_RESUME:
        L.accept_paused = false;
        arm_accept();
        return;
    case OP_TICK:    return on_tick();
    case OP_IGNORE:  return;
    }
    if (slot >= L.nslots)
        return;
    struct psess *s = L.slots[slot];
    enum pside side = ARG_SIDE(arg);
    s->inflight--;
    if (s->state == P_CLOSING || s->state == P_FREE ||
        ARG_GEN(arg) != (s->gen[side] & 0x7fffffu)) {
        maybe_free(s);   /* a dropped connection's operation: only counted */
        return;
    }
    switch (op) {
    case OP_RECV:    on_recv(s, side, cqe->res); break;
    case OP_SEND:    on_send(s, side, cqe->res); break;
    case OP_CONNECT: on_connect(s, side, cqe->res); break;
    }
    maybe_free(s);
}

static int run(void)
{
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        int rc = io_uring_submit_and_wait(&L.ring, 1);

        if (rc < 0 && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN) {
            LOG(LOG_ERROR, "msg=\"io_uring_submit_and_wait\" error=\"%s\"", strerror(-rc));
            return 1;
        }
        io_uring_for_each_cqe(&L.ring, head, cqe) {
            dispatch(cqe);
            n++;
        }
        io_uring_cq_advance(&L.ring, n);
    }
}

static int setup_ring(void)
{
    struct io_uring_params p;

    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
              IORING_SETUP_DEFER_TASKRUN;
    if (io_uring_queue_init_params(4096, &L.ring, &p) == 0)
        return 0;
    memset(&p, 0, sizeof(p));   /* older kernels: plain ring */
    return io_uring_queue_init_params(4096, &L.ring, &p);
}

int ploop_resolve(const char *name, struct sockaddr_storage *ss, socklen_t *len,
                  int64_t *last_try, char *err, size_t errlen)
{
    int64_t now = relay_now_ms();

    if (*last_try && now - *last_try < 1000) {
        snprintf(err, errlen, "'%s' did not resolve (next try within a second)", name);
        return -EAGAIN;
    }
    *last_try = now;
    return addr_parse(name, ss, len, err, errlen);
}

int proxy_print_ready(int lfd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN];

    if (getsockname(lfd, (struct sockaddr *)&ss, &len) == -1)
        return -errno;
    if (ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
        printf("ready listen=[%s]:%d\n", host, addr_local_port(lfd));
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
        printf("ready listen=%s:%d\n", host, addr_local_port(lfd));
    }
    fflush(stdout);
    return 0;
}

/* Every session holds two descriptors: take all the process may have. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int ploop_parse_num(const char *name, const char *opt, const char *s, unsigned long long min,
                    unsigned long long max, unsigned long long *v)
{
    char *end;

    errno = 0;
    *v = strtoull(s, &end, 10);
    if (errno || *end || !*s || *v < min || *v > max) {
        fprintf(stderr, "%s: bad --%s '%s' (%llu..%llu)\n", name, opt, s, min, max);
        return -EINVAL;
    }
    return 0;
}

static int parse_num(const char *name, const char *opt, const char *s, unsigned long long max,
                     unsigned long long *v)
{
    return ploop_parse_num(name, opt, s, 1, max, v);
}


/* SIGTERM, SIGINT: the listening socket is shut down first, so a proxy started right after
 * binds the port (the ring's accept would hold it until the kernel tears the ring down,
 * after the exit); then the default action ends the process as before. */
static void free_port_and_die(int sig)
{
    shutdown(L.lfd, SHUT_RDWR);
    signal(sig, SIG_DFL);
    raise(sig);
}

int ploop_main(int argc, char **argv, const struct proxy_spec *spec)
{
    struct option opts[32] = {
        { "listen", required_argument, NULL, 'l' },
        { spec->peer_opt, required_argument, NULL, 'p' },
        { "max-message-bytes", required_argument, NULL, 'm' },
        { "handshake-timeout-ms", required_argument, NULL, 't' },
        { "keep-max-bytes", required_argument, NULL, 'k' },
        { "connect-timeout-ms", required_argument, NULL, 'c' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { "framing", required_argument, NULL, 'f' },
    };
    for (int i = 0, n = 9; spec->opts && spec->opts[i].name && n < 31; i++)   /* after the 9 above */
        opts[n++] = spec->opts[i];
    const char *listen_addr = NULL;
    unsigned long long v;
    char err[256];
    int c, rc;

    while ((c = getopt_long(argc, argv, "V", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen_addr = optarg;
            break;
        case 'p':
            *spec->peer = optarg;
            break;
        case 'm':
            if (parse_num(spec->name, "max-message-bytes", optarg, MAX_MESSAGE_MAX, &v) < 0)
                return 2;
            *spec->max_msg = (size_t)v;
            break;
        case 't':
            if (parse_num(spec->name, "handshake-timeout-ms", optarg, 3600000, &v) < 0)
                return 2;
            ploop_handshake_ms = (int)v;
            break;
        case 'c':
            if (parse_num(spec->name, "connect-timeout-ms", optarg, 3600000, &v) < 0)
                return 2;
            ploop_connect_ms = (int)v;
            break;
        case 'k':
            if (parse_num(spec->name, "keep-max-bytes", optarg, 1ull << 40, &v) < 0)
                return 2;
            relay_keep_max = (size_t)v;
            break;
        case 'f':
            if ((ploop_framing = framing_parse(optarg)) < 0) {
                fprintf(stderr, "%s: bad --framing '%s' (raw, line, u32be or resp)\n",
                        spec->name, optarg);
                return 2;
            }
            break;
        case 'h':
            fputs(spec->usage, stdout);
            return 0;
        case 'V':
            printf("%s %s\n", spec->name, CESSNA_VERSION);
            return 0;
        default:
            if (c >= 256 && spec->option) {
                if ((rc = spec->option(c, optarg)) != 0)
                    return rc;
                break;
            }
            fputs(spec->usage, stderr);
            return 2;
        }
    }
    if (!listen_addr || !*spec->peer || optind != argc) {
        if (!listen_addr || !*spec->peer)
            fprintf(stderr, "%s: --%s is required\n", spec->name,
                    !listen_addr ? "listen" : spec->peer_opt);
        else
            fprintf(stderr, "%s: unexpected argument '%s'\n", spec->name, argv[optind]);
        fputs(spec->usage, stderr);
        return 2;
    }
    log_init(spec->name);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    L.spec = spec;
    if (spec->init && (rc = spec->init()) != 0)
        return rc;
    L.lfd = addr_listen(listen_addr, err, sizeof(err));
    if (L.lfd < 0) {
        LOG(LOG_ERROR, "msg=\"cannot listen\" error=\"%s\"", err);
        return 1;
    }
    if ((rc = setup_ring()) < 0) {
        LOG(LOG_ERROR, "msg=\"io_uring setup failed\" error=\"%s\"", strerror(-rc));
        return 1;
    }
    struct sigaction stop = { .sa_handler = free_port_and_die };
    sigaction(SIGTERM, &stop, NULL);
    sigaction(SIGINT, &stop, NULL);
    if (proxy_print_ready(L.lfd) < 0) {
        LOG(LOG_ERROR, "msg=\"getsockname failed\" error=\"%s\"", strerror(errno));
        return 1;
    }
    LOG(LOG_INFO, "msg=\"listening\" listen=%s %s=%s max_message_bytes=%zu handshake_timeout_ms=%d "
        "connect_timeout_ms=%d keep_max_bytes=%zu framing=%s", listen_addr, spec->peer_opt,
        *spec->peer, *spec->max_msg, ploop_handshake_ms,
        ploop_connect_ms ? ploop_connect_ms : ploop_handshake_ms, relay_keep_max,
        ploop_framing ? framing_name(ploop_framing) : "unset");
    L.tick_ts.tv_sec = 0;
    L.tick_ts.tv_nsec = TICK_MS * 1000000ll;
    arm_accept();
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_timeout(sqe, &L.tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_TICK, 0, 0));
    return run();
}
