/* session.c - one client-server session at the edge: handshake, the event order, the
 * worker's rings, numbered outputs with the piggybacked order, timers, and the end.
 *
 * The supervisor is the only orderer (DESIGN.md 2.1): every event gets its position here,
 * in push_event(), before the worker sees it. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "appcfg.h"
#include "bell.h"
#include "cachelog.h"
#include "cred.h"
#include "connfd.h"
#include "log.h"
#include "notice.h"
#include "order.h"
#include "remote.h"
#include "sup.h"

#define SEND_HIGH_WATER (4u << 20)  /* stop draining a worker while this much (plus the
                                     * slack of S.out_high_water) waits to go out */
#define RECV_SLACK      (64u << 10)

static void conn_close(struct session *s, struct conn *c);
static void drain_worker(struct session *s);
static int new_memory(struct session *s, char *err, size_t errlen);

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

uint64_t sess_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- outgoing bytes ---- */

int outbuf_reserve(struct outbuf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* Append bytes to a connection's pending output; sup_flush() sends them. */
static int conn_queue(struct conn *c, const void *a, size_t alen, const void *b, size_t blen)
{
    c->last_tx_ms = tmo_now_ms();
    if (outbuf_reserve(&c->pending, alen + blen) < 0)
        return -ENOMEM;
    memcpy(c->pending.data + c->pending.len, a, alen);
    if (blen)
        memcpy(c->pending.data + c->pending.len + alen, b, blen);
    c->pending.len += alen + blen;
    return 0;
}

int sess_queue(struct conn *c, const void *a, size_t alen, const void *b, size_t blen)
{
    return conn_queue(c, a, alen, b, blen);
}

static void conn_queue_error(struct conn *c, uint32_t code, const char *text)
{
    uint8_t buf[WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX];
    size_t n = wire_put_error(buf, sizeof(buf), code, "%s", text);

    conn_queue(c, buf, n, NULL, 0);
}

/* ---- the event order ---- */

static int order_append(struct session *s, const struct order_entry *e)
{
    uint64_t idx = s->next_pos - s->order_base;

    if (s->order_len + ORDER_ENTRY_MAX > s->order_cap) {
        size_t cap = s->order_cap ? s->order_cap * 2 : 4096;
        uint8_t *p = realloc(s->order, cap);
        if (!p)
            return -ENOMEM;
        s->order = p;
        s->order_cap = cap;
    }
    if (idx >= s->order_end_cap) {
        size_t cap = s->order_end_cap ? s->order_end_cap * 2 : 1024;
        size_t *p = realloc(s->order_end, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        s->order_end = p;
        s->order_end_cap = cap;
    }
    s->order_len += order_encode(s->order + s->order_len, e, &s->order_prev_time);
    s->order_end[idx] = s->order_len;
    return 0;
}

/* Drop the entries that both endpoints already hold (a gone one holds back nothing). */
static void order_trim(struct session *s)
{
    uint64_t have[2];

    for (int i = 0; i < 2; i++)
        have[i] = conn_reachable(&s->c[i]) ? s->c[i].order_sent : s->next_pos - 1;
    uint64_t upto = have[0] < have[1] ? have[0] : have[1];
    uint64_t drop = upto >= s->order_base ? upto - s->order_base + 1 : 0;
    uint64_t held = s->next_pos - s->order_base;

    if (drop < 1024 || drop * 2 < held)
        return;  /* trim in large steps: the moves stay cheap */
    size_t off = s->order_end[drop - 1];
    memmove(s->order, s->order + off, s->order_len - off);
    s->order_len -= off;
    for (uint64_t i = drop; i < held; i++)
        s->order_end[i - drop] = s->order_end[i] - off;
    s->order_base += drop;
}

/* The order bytes an endpoint lacks, up to the event at position pos. */
static size_t order_end_of(const struct session *s, uint64_t p)
{
    return p >= s->order_base ? s->order_end[p - s->order_base] : 0;
}

static int conn_queue(struct conn *c, const void *a, size_t alen, const void *b, size_t blen);

/* The order bytes an endpoint lacks, up to the event at position pos. A delta longer than
 * WIRE_ORDER_PIECE goes ahead in ORDER frames of whole entries; the rest is returned for
 * the OUT that follows. */
static void order_delta(struct session *s, struct conn *c, uint64_t pos,
                        const uint8_t **p, uint32_t *len)
{
    size_t from;

    *len = 0;
    if (pos <= c->order_sent || pos < s->order_base)
        return;
    from = order_end_of(s, c->order_sent);
    while (order_end_of(s, pos) - from > WIRE_ORDER_PIECE) {
        uint64_t lo = c->order_sent + 1, hi = pos;   /* the last entry that still fits */
        while (lo < hi) {
            uint64_t mid = lo + (hi - lo + 1) / 2;
            if (order_end_of(s, mid) - from <= WIRE_ORDER_PIECE)
                lo = mid;
            else
                hi = mid - 1;
        }
        uint8_t hdr[WIRE_HDR_LEN];
        size_t n = order_end_of(s, lo) - from;
        wire_put_hdr(hdr, WIRE_ORDER, (uint32_t)n);
        conn_queue(c, hdr, sizeof(hdr), s->order + from, n);
        c->order_sent = lo;
        from += n;
    }
    *p = s->order + from;
    *len = (uint32_t)(order_end_of(s, pos) - from);
    c->order_sent = pos;
}

/* A snapshot at p is durable: an endpoint that has had no output since gets the order up
 * to p in ORDER frames, so that both hold it and the supervisor can let it go. */
void sess_order_durable(struct session *s, uint64_t p)
{
    for (int i = 0; i < 2; i++) {
        struct conn *c = &s->c[i];
        const uint8_t *rest;
        uint32_t len;
        uint8_t hdr[WIRE_HDR_LEN];

        if (!conn_reachable(c) || c->order_sent >= p || p >= s->next_pos)
            continue;
        order_delta(s, c, p, &rest, &len);
        if (len) {
            wire_put_hdr(hdr, WIRE_ORDER, len);
            conn_queue(c, hdr, sizeof(hdr), rest, len);
        }
        sup_flush(s, c);
    }
    order_trim(s);
}

/* The flow limits (sup.h): what the old rings of four largest records held beyond this
 * ring size. Then the rings alone do not decide how far apart the two sides may drift. */
void sess_flow_limits(void)
{
    size_t want = 4 * ((size_t)S.cfg.max_message_bytes + sizeof(struct shm_rec) + 64), old = 1u << 16;

    while (old < want)
        old <<= 1;
    /* input: one ring plus as much unfed as a ring held; output: past the high water, what
     * a ring held */
    S.unfed_max = old > S.ring_size ? 2 * old - S.ring_size : S.ring_size;
    S.out_high_water = SEND_HIGH_WATER + (old > S.ring_size ? old - S.ring_size : 0);
}

/* Hand stored events to the worker while its input ring has room. */
void sess_feed(struct session *s)
{
    if (hib_holds(s))
        return;   /* hibernate.c: no worker; the events wait in the store for the wake */
    if (s->pid <= 0 || s->worker_reaped || !evstore_feed(&s->ev, &s->in))
        return;
    sess_expect_worker(s);
    if (!s->in_dirty) {
        s->in_dirty = 1;
        s->next_dirty = S.dirty;
        S.dirty = s;
    }
}

int sess_push_event_at(struct session *s, uint16_t type, uint8_t src, uint64_t a,
                       const void *data, size_t len, uint64_t time_ms)
{
    struct order_entry e = { .src = src };
    struct shm_rec r;

    if (time_ms) {
        e.time_ms = time_ms;   /* rebuilt from an order (remote recovery): no limits apply */
    } else {
        if (evstore_unfed(&s->ev) > S.unfed_max)
            return -EAGAIN;
        /* Held events are bounded: past the limit input waits for a durable snapshot (one
         * is forced at half the limit) to let the older ones go. */
        if (S.cfg.max_held_bytes && evstore_bytes(&s->ev) > S.cfg.max_held_bytes &&
            type != EV_START)
            return -EAGAIN;
        e.time_ms = sess_now_ms();
    }
    if (e.time_ms < s->last_time)
        e.time_ms = s->last_time;  /* event times never go backwards */
    /* a TIMER entry names the timer, a START entry the [app] values (appcfg.h) */
    e.timer_id = type == EV_TIMER ? a : type == EV_START ? appcfg_hash(data, len) : 0;
    r = (struct shm_rec){ .pos = s->next_pos, .time = e.time_ms, .a = a };
    if (order_append(s, &e) < 0 || evstore_append(&s->ev, type, &r, data, len) < 0)
        return -ENOMEM;
    s->last_time = e.time_ms;
    s->next_pos++;
    if (type == EV_CLIENT || type == EV_SERVER)
        s->pushed_seq[type == EV_CLIENT ? SIDE_CLIENT : SIDE_SERVER] = a;
    S.stats.events++;
    tmo_touch(s);
    hib_on_event(s);   /* hibernate.c: a sleeping session wakes */
    sess_feed(s);
    return 0;
}

/* Give the next event its position, keep it, and hand it to the worker. 0, -EAGAIN when
 * the worker is too far behind (the caller waits for it), -ENOMEM. */
static int push_event(struct session *s, uint16_t type, uint8_t src, uint64_t a,
                      const void *data, size_t len)
{
    return sess_push_event_at(s, type, src, a, data, len, 0);
}

/* After handing events to workers, watch their output rings this long before sleeping:
 * a worker usually answers within microseconds, and catching that by polling saves a
 * sleep and a wakeup of the supervisor per event (a large share of per-message latency). */
#define SPIN_NS     30000
#define SPIN_WATCH  16

static long long mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* Polling instead of sleeping pays only with a core to spare: workers may poll while
 * fewer sessions have a worker than there are cores, and not otherwise. */
#define WORKER_SPIN_NS 50000

static void update_spin_policy(void)
{
    uint32_t workers = 0, spin;

    for (uint32_t i = 0; i < S.slot_high && workers < S.ncpu; i++)   /* enough to know */
        if (S.sessions[i].ctl && !S.sessions[i].worker_reaped)
            workers++;
    spin = S.cfg.busy_poll && workers < S.ncpu ? WORKER_SPIN_NS : 0;
    if (spin == S.spin_ns)
        return;
    S.spin_ns = spin;
    for (uint32_t i = 0; i < S.slot_high; i++)
        if (S.sessions[i].ctl)
            atomic_store(&S.sessions[i].ctl->spin_ns, spin);
}

static void spin_for_outputs(struct session **watch, int n)
{
    long long deadline = mono_ns() + SPIN_NS;
    int pending = n;

    io_uring_submit(&S.ring);   /* what is queued goes out while we wait */
    for (int i = 0; i < n; i++)
        ring_sleep_done(&watch[i]->out);   /* no doorbell needed while we watch */
    while (pending && mono_ns() < deadline) {
        for (int i = 0; i < n; i++) {
            if (watch[i] && !ring_empty(&watch[i]->out)) {
                drain_worker(watch[i]);
                watch[i] = NULL;
                pending--;
            }
        }
        __builtin_ia32_pause();
    }
    for (int i = 0; i < n; i++)
        if (watch[i] && !ring_sleep_prepare(&watch[i]->out))
            drain_worker(watch[i]);
}

/* Before the loop sleeps: wake the workers that got events, once per batch. */
void sess_ring_doorbells(void)
{
    struct session *watch[SPIN_WATCH];
    int n = 0;

    for (struct session *s = S.dirty; s; s = s->next_dirty) {
        s->in_dirty = 0;
        if (s->ctl && ring_wants_wakeup(&s->in))
            sess_ring_worker(s);
        if (n < SPIN_WATCH && s->state == S_LIVE && !s->out_stalled)
            watch[n++] = s;
    }
    S.dirty = NULL;
    if (n && S.spin_ns)
        spin_for_outputs(watch, n);
}

/* ---- session lifecycle ---- */

/* Freed slots are taken again first (a stack), so the slots in use stay below
 * S.slot_high and the sweeps look at no more than the busiest moment needed. */
static struct session *slot_alloc(void)
{
    if (S.nsessions >= S.cfg.max_sessions)
        return NULL;   /* the limit, which a reload may lower below the slots there are */
    if (S.nfree)
        return &S.sessions[S.free_slots[--S.nfree]];
    if (S.slot_high < S.slots)
        return &S.sessions[S.slot_high++];
    return NULL;
}

static void conn_init(struct conn *c, enum side side, int fd)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->side = side;
    c->next_seq = 1;
}

void sess_accept(int fd)
{
    struct session *s = slot_alloc();
    int rc;

    if (!s) {
        uint8_t buf[256];
        size_t n = wire_put_error(buf, sizeof(buf), WIRE_ERR_UNAVAILABLE,
                                  "edge full: max_sessions=%u sessions are open", S.cfg.max_sessions);
        if (send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL) == -1)
            LOG(LOG_DEBUG, "msg=\"edge full, error not delivered\"");
        sesslog_refused(fd, "edge full");
        close(fd);
        /* One line a second at most: a flood of clients must not become a flood of logs. */
        static uint64_t last_ms, refused;
        refused++;
        if (tmo_now_ms() - last_ms >= 1000) {
            LOG(LOG_WARN, "msg=\"session refused: edge full\" max_sessions=%u refused=%llu",
                S.cfg.max_sessions, ull(refused));
            last_ms = tmo_now_ms();
            refused = 0;
        }
        return;
    }
    uint32_t slot = (uint32_t)(s - S.sessions);
    memset(s, 0, sizeof(*s));
    s->slot = slot;
    s->c[SIDE_CLIENT].side = SIDE_CLIENT;
    sesslog_accept(&s->log, fd);   /* the peer's address, while it is a descriptor */
    if ((rc = connfd_install(s, &s->c[SIDE_CLIENT], fd)) < 0) {
        LOG(LOG_WARN, "msg=\"session refused: cannot install its socket\" error=\"%s\"",
            strerror(-rc));
        memset(s, 0, sizeof(*s));
        s->c[0].fd = s->c[1].fd = -1;
        S.free_slots[S.nfree++] = slot;
        return;
    }
    fd = s->c[SIDE_CLIENT].fd;
    s->state = S_HELLO;
    s->pidfd = s->doorbell_out = s->memfd = -1;
    recovery_init(s);
    remote_init(s);
    s->next_pos = 1;
    s->order_base = 1;
    conn_init(&s->c[SIDE_CLIENT], SIDE_CLIENT, fd);
    conn_init(&s->c[SIDE_SERVER], SIDE_SERVER, -1);
    s->c[SIDE_CLIENT].up = 1;
    S.nsessions++;
    tmo_touch(s);
    sup_arm_recv(s, &s->c[SIDE_CLIENT]);
}

/* Shared memory, doorbells and the worker, for a session that said HELLO. */
/* (Re)start a worker on the session's memory: fresh rings, a process from the zygote
 * (starting fresh, or from the snapshot at restore_pos), and io_uring watching its doorbell
 * and its death. The stored events after restore_pos are fed to it. */
int sess_reset_worker(struct session *s, uint64_t position, char *err, size_t errlen)
{
    ring_format(shm_in_ring(s->shm), S.ring_size);
    ring_format(shm_out_ring(s->shm, S.ring_size), S.ring_size);
    ring_attach(&s->in, shm_in_ring(s->shm));
    ring_attach(&s->out, shm_out_ring(s->shm, S.ring_size));
    ring_asm_reset(&s->out_asm);   /* the new worker writes a partial output again, whole */
    atomic_store(&s->ctl->consumed, position);
    atomic_store(&s->ctl->snap_pos, 0);
    atomic_store(&s->ctl->snap_req, 0);
    s->ctl->error[0] = 0;
    s->gen++;
    s->snap_inflight = 0;
    s->need_full = 1;   /* the new worker's page hashes start empty */
    if (evstore_rewind(&s->ev, position) < 0) {
        snprintf(err, errlen, "the events after position %llu are no longer held", ull(position));
        return -ENOENT;
    }
    return 0;
}

void sess_watch_worker(struct session *s, pid_t pid, int pidfd)
{
    s->pid = pid;
    sess_keep_pidfd(s, pidfd);
    s->worker_reaped = 0;
    if (!s->doorbell_armed) {
        s->bell_out_seen = bell_seen(&s->ctl->bell_out);
        sess_arm_doorbell(s, s->bell_out_seen);
    }
    sess_arm_exit_watch(s);
    update_spin_policy();
    /* A worker may write before we watch it (the timers a resumed one announces): a record
     * already there gets no doorbell, so look now. */
    if (!ring_sleep_prepare(&s->out))
        drain_worker(s);
}

/* Ask the zygote for a worker (fresh, or restoring the snapshot at restore_pos). The
 * events wait in the store until it is there (sess_worker_spawned). */
int sess_spawn_worker(struct session *s, uint64_t restore_pos, char *err, size_t errlen)
{
    int rc;

    if (s->memfd < 0 && new_memory(s, err, errlen) < 0)
        return -ENOMEM;
    if (sess_reset_worker(s, restore_pos, err, errlen) < 0)
        return -ENOENT;
    s->pid = 0;
    s->pidfd = -1;
    if (!s->zgen)
        zygote_bind(s, 0);   /* a new session: the module new sessions run now */
    int report = recovery_worker_end(s, err, errlen);
    rc = report < 0 ? -EMFILE : zygote_spawn(s, s->memfd, report, restore_pos, err, errlen);
    /* The zygote has its own copies now (or none: the next try makes new ones). */
    recovery_worker_end_sent(s);
    close(s->memfd);
    s->memfd = -1;
    if (rc == -ENOBUFS) {
        /* A burst: the zygote's socket holds as many requests as it can. The session waits
         * as if spawning and the tick asks again (sess_retry_spawns), for a while. */
        S.spawn_backlog_full = 1;
        S.stats.spawns_deferred++;
        s->spawning = 1;
        s->spawn_retry = 1;
        s->spawn_retry_pos = restore_pos;
        if (!s->spawn_retry_since_ms)
            s->spawn_retry_since_ms = tmo_now_ms();
        return 0;
    }
    if (rc == 0)
        s->spawn_retry_since_ms = 0;
    return rc < 0 ? -EINVAL : 0;
}

/* From the tick: spawns that found the zygote's socket full go again, in slot order, until
 * it is full again. They wait as long as the zygote keeps answering (a burst of 10,000 opens
 * waits its turn: failing them after zygote_answer_timeout_ms of waiting failed sessions of a
 * busy but working zygote); past zygote_answer_timeout_ms with no answer at all, the session
 * fails as before (and zygote_check_spawns restarts the stuck zygote). */
void sess_retry_spawns(void)
{
    uint64_t now = tmo_now_ms();
    char err[256];

    S.spawn_backlog_full = 0;
    for (uint32_t i = 0; i < S.slot_high; i++) {
        struct session *s = &S.sessions[i];
        if (s->state == S_FREE || !s->spawn_retry)
            continue;
        s->spawn_retry = 0;
        s->spawning = 0;
        if (s->state == S_DEAD) {
            sess_maybe_free(s);
            continue;
        }
        if (now - s->spawn_retry_since_ms > S.cfg.zygote_answer_timeout_ms &&
            now - zygote_last_answer_ms() > S.cfg.zygote_answer_timeout_ms) {
            sess_spawn_failed(s, "zygote unreachable: too many spawns waiting");
            continue;
        }
        if (S.spawn_backlog_full) {   /* full again this tick: the next one */
            s->spawn_retry = s->spawning = 1;
            continue;
        }
        if (sess_spawn_worker(s, s->spawn_retry_pos, err, sizeof(err)) < 0)
            sess_spawn_failed(s, err);
    }
}

void sess_worker_spawned(struct session *s, pid_t pid, int pidfd)
{
    s->spawning = 0;
    sess_watch_worker(s, pid, pidfd);
    if (s->state == S_DEAD) {   /* the session ended while it was being made */
        sess_signal_worker(s, SIGKILL);
        return;
    }
    sess_feed(s);
}

void sess_spawn_failed(struct session *s, const char *why)
{
    s->spawning = 0;
    sess_fail(s, WIRE_ERR_UNAVAILABLE, "cannot start a worker: %s", why);
    sess_maybe_free(s);
}

/* The session's shared memory (shm.h), made anew for each worker the zygote starts: its
 * descriptor goes to the zygote and is closed here, so a session holds none. The control
 * page carries over (what recovery set for the next worker); the rings are formatted by
 * sess_reset_worker. A hot standby keeps the memory it was forked with. */
static int new_memory(struct session *s, char *err, size_t errlen)
{
    size_t len = shm_total_size(S.ring_size);
    int fd = memfd_create("cessna-session", MFD_CLOEXEC);
    void *m;

    if (fd == -1 || ftruncate(fd, (off_t)len) == -1) {
        snprintf(err, errlen, "session memory: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -ENOMEM;
    }
    m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "mmap session memory: %s", strerror(errno));
        close(fd);
        return -ENOMEM;
    }
    if (s->shm) {
        if (s->doorbell_armed) {
            /* The pending wait is on the old memory: end it. Submitted first: one queued
             * in this pass would otherwise start after the ring, on memory about to go. */
            io_uring_submit(&S.ring);
            sess_ring_own_doorbell(s);
        }
        memcpy(m, s->shm, SHM_CTL_LEN);
        atomic_store(&((struct shm_ctl *)m)->bell_in, 0);
        atomic_store(&((struct shm_ctl *)m)->bell_out, 0);
        s->bell_out_seen = 0;
        munmap(s->shm, s->shm_len);
    } else {
        struct shm_ctl *c = m;
        c->magic = SHM_MAGIC;
        c->ring_size = S.ring_size;
        c->session_id = s->id;
        c->max_message = S.cfg.max_message_bytes;
        c->spin_ns = S.spin_ns;
    }
    s->shm = m;
    s->shm_len = len;
    s->ctl = m;
    s->memfd = fd;
    return 0;
}

/* Shared memory, doorbells and the session's directory, before its first worker. */
int sess_prepare(struct session *s, char *err, size_t errlen)
{
    if (new_memory(s, err, errlen) < 0)
        return -ENOMEM;
    if (!S.futex_bells && (s->doorbell_out = eventfd(0, EFD_CLOEXEC)) == -1) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        return -EMFILE;
    }
    if (recovery_setup(s, err, errlen) < 0)
        return -EIO;
    return 0;
}

static int start_worker(struct session *s, char *err, size_t errlen)
{
    if (sess_prepare(s, err, errlen) < 0)
        return -EIO;
    return sess_spawn_worker(s, 0, err, errlen);
}

int sess_connect_server(struct session *s, const void *first, size_t len, char *err,
                        size_t errlen)
{
    struct conn *srv = &s->c[SIDE_SERVER];
    int fd = socket(S.server_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, rc;

    if (fd == -1) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -errno;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if ((rc = connfd_install(s, srv, fd)) < 0) {
        snprintf(err, errlen, "cannot install the server socket: %s", strerror(-rc));
        return rc;
    }
    conn_queue(srv, first, len, NULL, 0);
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_connect(sqe, srv->fd, (struct sockaddr *)&S.server_addr, S.server_addrlen);
    connfd_prep(sqe);
    io_uring_sqe_set_data64(sqe, UD(OP_CONNECT, s->slot, SIDE_SERVER));
    srv->connect_armed = 1;
    s->inflight++;
    return 0;
}

static void on_hello(struct session *s, const struct wire_frame *f)
{
    uint8_t hello[WIRE_RESUME_MAX], verifier[WIRE_VERIFIER_LEN];
    char err[256];

    if (f->u.hello.role != WIRE_ROLE_CLIENT || f->u.hello.session_id != 0) {
        sess_fail(s, WIRE_ERR_UNEXPECTED, "HELLO must come from a client with session id 0");
        return;
    }
    cred_random(&s->id, sizeof(s->id));
    cred_random(s->token, sizeof(s->token));
    s->id &= 0x7fffffffffffffffull;  /* printable as a signed number too */
    s->epoch = 1;
    S.stats.sessions_total++;
    s->state = S_CONNECTING;
    tmo_touch(s);   /* connect_timeout_ms runs from here */
    if (start_worker(s, err, sizeof(err)) < 0) {
        sess_fail(s, WIRE_ERR_UNAVAILABLE, "cannot start a worker: %s", err);
        return;
    }
    /* HELLO goes first; the server connection is not `up` until WELCOME, so nothing else
     * is sent before it. */
    cred_verifier(s->token, verifier);
    size_t n = wire_put_hello_edge(hello, s->id, s->epoch, verifier, S.edge_secret,
                                   S.edge_secret_len);
    s->framing = f->u.hello.framing;   /* the server endpoint cuts its side the same way */
    wire_set_hello_framing(hello, s->framing);
    if (sess_connect_server(s, hello, n, err, sizeof(err)) < 0) {
        sess_fail(s, WIRE_ERR_UNAVAILABLE, "%s", err);
        return;
    }
    /* Its worker is still being started by the zygote: no pid to name yet. */
    LOG(LOG_INFO, "session=%llu msg=\"new session\" client=%s", ull(s->id),
        s->log.client[0] ? s->log.client : "?");
}

void sess_on_connect(struct session *s, int res)
{
    struct conn *srv = &s->c[SIDE_SERVER];

    srv->connect_armed = 0;
    sess_release_op(s);
    if (s->state == S_RESUMING) {
        resume_on_connect(s, res);
        return sess_maybe_free(s);
    }
    if (s->state != S_CONNECTING)
        return sess_maybe_free(s);
    if (res < 0) {
        srv->eof = srv->dead = 1;
        sess_fail(s, WIRE_ERR_UNAVAILABLE, "server endpoint %s unreachable: %s",
                     S.cfg.server, strerror(-res));
        return;
    }
    /* Only HELLO is queued: the app starts (and may send) after WELCOME. */
    srv->up = 1;
    sup_flush(s, srv);
    sup_arm_recv(s, srv);
}

static void on_welcome(struct session *s, const struct wire_frame *f)
{
    uint8_t buf[WIRE_HDR_LEN + 32];
    struct conn *cli = &s->c[SIDE_CLIENT], *srv = &s->c[SIDE_SERVER];

    if (f->u.welcome.session_id != s->id || f->u.welcome.epoch != s->epoch) {
        sess_fail(s, WIRE_ERR_AUTH, "server endpoint answered with another session id or epoch");
        return;
    }
    s->state = S_LIVE;
    s->snap_requested_ms = tmo_now_ms();   /* the snapshot interval counts from the start */
    srv->up = 1;
    s->server_stores = (f->flags & WIRE_F_STORES) != 0;
    /* WELCOME to the client before anything the app says; the app starts now. */
    conn_queue(cli, buf, wire_put_welcome(buf, s->id, s->token, s->epoch), NULL, 0);
    /* The start event carries the [app] values the session keeps for good (appcfg.h). */
    if (push_event(s, EV_START, ORDER_START, 0, S.cfg.app_kv, S.cfg.app_kv_len) < 0) {
        sess_fail(s, WIRE_ERR_SESSION, "cannot hand the start event to the worker");
        return;
    }
    sup_flush(s, cli);
    sup_flush(s, srv);
}

/* The endpoint on `side` is gone or said CLOSE: an ordered CLOSE event for the app. */
static void side_closed(struct session *s, enum side side)
{
    if (s->state == S_LIVE) {
        int rc = push_event(s, EV_CLOSE, side == SIDE_CLIENT ? ORDER_CLOSE_CLIENT : ORDER_CLOSE_SERVER,
                            side == SIDE_CLIENT ? 1 : 2, NULL, 0);
        if (rc == 0) {
            s->state = S_CLOSING;
            sesslog_cause(&s->log, side == SIDE_CLIENT ? END_CLIENT_CLOSE : END_SERVER_CLOSE);
            LOG(LOG_INFO, "session=%llu msg=\"closing\" by=%s", ull(s->id),
                side == SIDE_CLIENT ? "client" : "server");
            return;
        }
        if (rc == -EAGAIN) {
            /* The input ring is full: the worker is slow. Retry when it drains. */
            s->c[side].stalled = 1;
            return;
        }
    }
    if (s->state < S_CLOSING)
        sess_fail(s, WIRE_ERR_SESSION, "%s endpoint left before the session started",
                     side == SIDE_CLIENT ? "client" : "server");
}

/* One frame from an endpoint. 0 when consumed, -EAGAIN when it must wait for the worker,
 * -EPROTO when the connection is done for. */
static int handle_frame(struct session *s, struct conn *c, const struct wire_frame *f)
{
    if (c->side == SIDE_CLIENT && s->state == S_HELLO) {
        if (S.draining && (f->type == WIRE_HELLO || f->type == WIRE_RESUME)) {
            sesslog_cause(&s->log, END_REFUSED);
            sess_fail(s, WIRE_ERR_UNAVAILABLE, "this edge is draining: try another");
            return -EPROTO;
        }
        s->roams = (f->flags & WIRE_F_ROAMS) != 0;   /* drain.c: move it, or close it */
        if (f->type == WIRE_HELLO) {
            on_hello(s, f);
            return 0;
        }
        if (f->type == WIRE_RESUME) {
            resume_start(s, f);
            return s->state == S_RESUMING ? 0 : -EPROTO;
        }
    } else if (c->side == SIDE_SERVER && s->state == S_CONNECTING) {
        if (f->type == WIRE_WELCOME) {
            on_welcome(s, f);
            return 0;
        }
        if (f->type == WIRE_ERROR) {
            sesslog_cause(&s->log, END_REFUSED);
            sess_fail(s, WIRE_ERR_UNAVAILABLE, "server endpoint refused the session: %.*s",
                         (int)f->u.error.text_len, f->u.error.text);
            return -EPROTO;
        }
    } else if (s->state == S_RESUMING) {
        return resume_on_frame(s, c, f);
    } else if (s->state == S_LIVE) {
        if (remote_on_frame(s, c, f) == 0)
            return s->state == S_LIVE ? 0 : -EPROTO;
        if (f->type == WIRE_DATA) {
            if (f->u.data.seq != c->next_seq) {
                S.stats.bad_frames++;
                sess_fail(s, WIRE_ERR_PROTO, "DATA from the %s with seq %llu, expected %llu",
                             c->side == SIDE_CLIENT ? "client" : "server",
                             ull(f->u.data.seq), ull(c->next_seq));
                return -EPROTO;
            }
            if (f->u.data.len > S.cfg.max_message_bytes) {
                S.stats.bad_frames++;
                sess_fail(s, WIRE_ERR_TOO_BIG, "message of %zu bytes exceeds max_message_bytes=%u",
                             f->u.data.len, S.cfg.max_message_bytes);
                return -EPROTO;
            }
            int rc = push_event(s, c->side == SIDE_CLIENT ? EV_CLIENT : EV_SERVER,
                                c->side == SIDE_CLIENT ? ORDER_CLIENT : ORDER_SERVER,
                                f->u.data.seq, f->u.data.payload, f->u.data.len);
            if (rc == -EAGAIN)
                return -EAGAIN;
            if (rc < 0) {
                sess_fail(s, WIRE_ERR_SESSION, "out of memory");
                return -EPROTO;
            }
            c->next_seq++;
            S.stats.msgs_in++;
            S.stats.bytes_in += f->u.data.len;
            sesslog_in(&s->log, c->side, f->u.data.len);
            return 0;
        }
        if (f->type == WIRE_CLOSE) {
            c->eof = 1;
            c->closed = 1;
            side_closed(s, c->side);
            return -EPROTO;  /* read nothing more from this endpoint */
        }
        if (f->type == WIRE_ERROR) {
            char text[4 * WIRE_ERROR_MAX + 1];
            log_escape(text, sizeof(text), (const char *)f->u.error.text, f->u.error.text_len);
            LOG(LOG_WARN, "session=%llu msg=\"endpoint sent ERROR\" side=%s text=\"%s\"",
                ull(s->id), c->side == SIDE_CLIENT ? "client" : "server", text);
            c->eof = 1;
            c->closed = 1;
            side_closed(s, c->side);
            return -EPROTO;
        }
    } else if (s->state >= S_CLOSING) {
        return 0;  /* ending: input is discarded */
    }
    S.stats.bad_frames++;
    sess_fail(s, WIRE_ERR_UNEXPECTED, "unexpected %s frame from the %s",
                 wire_type_name(f->type), c->side == SIDE_CLIENT ? "client" : "server");
    return -EPROTO;
}

/* Parse and handle the complete frames in c's receive buffer. */
static void process_input(struct session *s, struct conn *c)
{
    size_t off = 0;
    int stop = 0;

    c->stalled = 0;
    while (!stop && !c->draining) {
        struct wire_frame f;
        long n = wire_next(c->rbuf + off, c->rlen - off, S.max_body, &f);

        if (n == -EAGAIN)
            break;
        if (n < 0) {
            S.stats.bad_frames++;
            if (n == -EMSGSIZE) {
                struct wire_hdr h;
                wire_parse_hdr(c->rbuf + off, c->rlen - off, SIZE_MAX, &h);
                sess_fail(s, WIRE_ERR_TOO_BIG, "frame of %u bytes exceeds the limit of %zu",
                             h.len, S.max_body);
            } else {
                sess_fail(s, WIRE_ERR_PROTO, "malformed frame from the %s",
                             c->side == SIDE_CLIENT ? "client" : "server");
            }
            return;
        }
        switch (handle_frame(s, c, &f)) {
        case 0:
            off += (size_t)n;
            break;
        case -EAGAIN:
            c->stalled = 1;
            stop = 1;
            break;
        default:
            off += (size_t)n;
            stop = 1;
            c->eof = 1;
        }
    }
    if (off) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    if (!c->stalled && !c->eof && c->fd >= 0)
        sup_arm_recv(s, c);
}

void sess_on_recv(struct session *s, enum side side, int res)
{
    struct conn *c = &s->c[side];

    c->recv_armed = 0;
    sess_release_op(s);
    if (res > 0)
        c->rlen += (size_t)res;
    if (c->draining) {
        /* Discard input until the peer closes, so our ERROR or CLOSE reaches it intact. */
        c->rlen = 0;
        if (res <= 0)
            c->eof = 1;
        conn_close(s, c);
        return sess_maybe_free(s);
    }
    if (res <= 0) {
        c->eof = 1;
        c->dead = res < 0;
        if (res < 0 && res != -ECONNRESET)
            LOG(LOG_WARN, "session=%llu msg=\"recv\" error=\"%s\"", ull(s->id), strerror(-res));
        if (c->rlen > 0) {
            S.stats.bad_frames++;
            sess_fail(s, WIRE_ERR_PROTO, "truncated frame: the %s stopped sending after %zu "
                         "bytes of a frame", side == SIDE_CLIENT ? "client" : "server", c->rlen);
        } else if (s->state == S_HELLO) {
            sesslog_quiet(&s->log);
            sess_fail(s, WIRE_ERR_PROTO, "disconnected before HELLO");
        } else if ((s->state == S_LIVE || s->state == S_RESUMING) && !c->closed) {
            remote_lost(s, side, res == 0 ? "closed without CLOSE" : strerror(-res));
        } else {
            side_closed(s, side);
        }
        return sess_maybe_free(s);
    }
    process_input(s, c);
    sess_maybe_free(s);
}

void sess_on_send(struct session *s, enum side side, int res)
{
    struct conn *c = &s->c[side];

    c->send_armed = 0;
    sess_release_op(s);
    if (res < 0) {
        if (res != -EPIPE && res != -ECONNRESET)
            LOG(LOG_WARN, "session=%llu msg=\"send\" side=%s error=\"%s\"", ull(s->id),
                side == SIDE_CLIENT ? "client" : "server", strerror(-res));
        c->eof = c->dead = 1;
        c->sending.len = c->pending.len = c->sent = 0;
        if ((s->state == S_LIVE || s->state == S_RESUMING) && !c->closed)
            remote_lost(s, side, strerror(-res));
        else if (s->state < S_DEAD)
            side_closed(s, side);
        conn_close(s, c);
        return sess_maybe_free(s);
    }
    c->sent += (size_t)res;
    if (c->sent == c->sending.len) {
        c->sent = c->sending.len = 0;
        struct outbuf t = c->sending;
        c->sending = c->pending;
        c->pending = t;
    }
    sup_flush(s, c);
    if (side == SIDE_SERVER && s->ship.active)
        remote_pump(s);
    if (s->out_stalled && c->pending.len < S.out_high_water) {
        s->out_stalled = 0;
        drain_worker(s);   /* what the worker left waiting */
    }
    if (c->draining)
        conn_close(s, c);
    sess_maybe_free(s);
}

/* ---- the worker's outputs ---- */

void sess_on_timer(struct session *s, uint32_t arg, int res)
{
    uint32_t idx;
    uint64_t id;

    sess_release_op(s);
    id = timers_on_complete(s, arg, res, &idx);
    if (!id)
        return sess_maybe_free(s);
    if (s->state != S_LIVE) {
        timers_done(s, idx);
        return sess_maybe_free(s);
    }
    /* The worker is behind: try again shortly. The firing gets its position only when it
     * gets in, so waiting changes nothing anyone has seen. */
    if (push_event(s, EV_TIMER, ORDER_TIMER, id, NULL, 0) == -EAGAIN)
        return timers_retry(s, idx);
    timers_done(s, idx);
}

static void send_output(struct session *s, enum side side, const struct shm_rec *r,
                        const void *payload, size_t len)
{
    struct conn *c = &s->c[side];
    uint8_t hdr[WIRE_OUT_HDR_LEN];
    const uint8_t *order = NULL;
    uint32_t olen;

    if (c->dead || c->draining || c->fd < 0)
        return;   /* that endpoint is gone; its outputs go nowhere */
    if (r->a <= s->outputs[side])
        return;   /* replay after a recovery: the endpoint has this one */
    order_delta(s, c, r->pos, &order, &olen);
    wire_put_out_hdr(hdr, r->a, NULL, 0, olen + len);
    /* header, then the order delta, then the payload */
    if (outbuf_reserve(&c->pending, sizeof(hdr) + olen + len) < 0) {
        sess_fail(s, WIRE_ERR_SESSION, "out of memory");
        return;
    }
    wire_le32(hdr + WIRE_HDR_LEN + 8, olen);
    conn_queue(c, hdr, sizeof(hdr), order, olen);
    conn_queue(c, payload, len, NULL, 0);
    s->outputs[side] = r->a;
    S.stats.msgs_out++;
    S.stats.bytes_out += len;
    sesslog_out(&s->log, side, len);
}

/* The worker is done: an endpoint closed, or the app closed (app != 0: code and its text,
 * untrusted). Every output it wrote before is queued already: CLOSE or ERROR go after. */
static void worker_finished(struct session *s, int app, int64_t code, const char *text,
                            size_t tlen)
{
    uint8_t buf[WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX];
    char clean[SHM_CLOSE_TEXT_MAX + 1];
    size_t n;

    s->worker_done = 1;
    if (s->state >= S_DEAD)
        return;
    s->state = S_DEAD;
    for (n = 0; n < tlen && n < SHM_CLOSE_TEXT_MAX; n++)
        clean[n] = (unsigned char)text[n] < 0x20 || text[n] == 0x7f ? ' ' : text[n];
    clean[n] = 0;
    if (app && code)
        n = wire_put_error(buf, sizeof(buf), WIRE_ERR_APP, "app error %lld: %s",
                           (long long)code, clean);
    else
        n = wire_put_close(buf);
    for (int i = 0; i < 2; i++) {
        struct conn *c = &s->c[i];
        if (c->fd >= 0 && !c->draining) {
            if (!c->dead && c->up)
                conn_queue(c, buf, n, NULL, 0);
            conn_close(s, c);
        }
    }
    timers_cancel_all(s);
    recovery_end(s);
    if (app) {
        sesslog_cause(&s->log, code ? END_APP_ERROR : END_APP_CLOSE);
        LOG(LOG_INFO, "session=%llu msg=\"the app closed the session\" code=%lld",
            ull(s->id), (long long)code);
    }
    LOG(LOG_INFO, "session=%llu msg=\"session closed\" events=%llu to_client=%llu to_server=%llu",
        ull(s->id), ull(s->next_pos - 1), ull(s->outputs[0]), ull(s->outputs[1]));
    if (app && code) {
        char why[SHM_CLOSE_TEXT_MAX + 32];
        snprintf(why, sizeof(why), "app error %lld: %s", (long long)code, clean);
        sesslog_end(s, END_NONE, why);
    } else {
        sesslog_end(s, END_NONE, NULL);
    }
}

/* Input that waited for room in the worker's ring, or for held events to go. */
void sess_resume_input(struct session *s)
{
    for (int i = 0; i < 2; i++) {
        struct conn *c = &s->c[i];
        if (c->stalled && !c->draining && c->fd >= 0) {
            if (c->eof)
                side_closed(s, c->side);
            else
                process_input(s, c);
        }
    }
}

/* The worker's reason for giving up, copied out of shared memory (it may still change). */
static void worker_error(struct session *s, char *buf, size_t len)
{
    size_t n = sizeof(s->ctl->error) < len ? sizeof(s->ctl->error) : len;

    memcpy(buf, s->ctl->error, n);
    buf[n - 1] = 0;
}

/* An app's cessna_log line, as the node's log line of its session. The fields came from
 * the worker, which is not trusted: anything that could end or forge a line (a control
 * byte, a byte past ASCII) becomes '_'. */
static void app_log_line(const struct session *s, int level, const void *fields, size_t len)
{
    char body[SHM_LOG_MAX + 64];
    int n = snprintf(body, sizeof(body), "session=%llu ", ull(s->id));
    const uint8_t *f = fields;

    for (size_t i = 0; i < len && (size_t)n + 1 < sizeof(body); i++)
        body[n++] = f[i] < 0x20 || f[i] > 0x7e ? '_' : (char)f[i];
    body[n] = 0;
    log_raw(level, body);
}

/* One record from the worker's output ring. The worker is not trusted: the header is
 * copied before use and every field is checked by what uses it. 0, or -EPROTO when the
 * record makes no sense (the session is failed). */
static int take_output(struct session *s, uint16_t type, const void *rec, uint32_t len)
{
    struct shm_rec r;
    const void *payload = (const uint8_t *)rec + sizeof(r);
    size_t plen;
    char text[256];

    if (len < sizeof(r)) {
        sess_fail(s, WIRE_ERR_SESSION, "worker wrote a record of %u bytes (type %u)", len, type);
        return -EPROTO;
    }
    memcpy(&r, rec, sizeof(r));
    plen = len - sizeof(r);
    switch (type) {
    case OUT_CLIENT:
    case OUT_SERVER: {
        enum side side = type == OUT_CLIENT ? SIDE_CLIENT : SIDE_SERVER;
        if (plen > S.cfg.max_message_bytes || r.pos >= s->next_pos) {
            sess_fail(s, WIRE_ERR_SESSION, "worker wrote an output of %zu bytes for event %llu "
                      "(limit %u, last event %llu)", plen, ull(r.pos), S.cfg.max_message_bytes,
                      ull(s->next_pos - 1));
            return -EPROTO;
        }
        send_output(s, side, &r, payload, plen);
        if (s->c[side].pending.len >= S.out_high_water)
            s->out_stalled = 1;
        break;
    }
    case OUT_TIMER_ARM:
        if (r.a <= s->max_timer_id)
            break;   /* armed before a recovery already */
        s->max_timer_id = r.a;
        if (r.pos <= s->replay_quiet_until)
            break;   /* rebuilt at a new edge: OUT_TIMER_PENDING says what is still armed */
        if (s->state == S_LIVE && timers_arm(s, r.a, r.b) < 0)
            LOG(LOG_WARN, "session=%llu msg=\"timer not armed\"", ull(s->id));
        break;
    case OUT_TIMER_PENDING: {
        uint64_t now = sess_now_ms();
        if (!r.a) {   /* the end of the announcement: a later worker need not repeat it */
            s->ctl->announce_timers_at = 0;
            break;
        }
        if (r.a > s->max_timer_id)
            s->max_timer_id = r.a;
        /* Armed already when a worker that died mid-announcement announced it first. */
        if (s->state == S_LIVE && !timers_has(s, r.a) &&
            timers_arm(s, r.a, r.b > now ? r.b - now : 0) < 0)
            LOG(LOG_WARN, "session=%llu msg=\"timer not armed\"", ull(s->id));
        break;
    }
    case OUT_TIMER_CANCEL:
        timers_cancel(s, r.a);
        break;
    case OUT_CACHE_READ:
        if (cachelog_read(s, r.pos, payload, plen, r.a) < 0)
            return -EPROTO;   /* a changed object under replay: the session is failed */
        break;
    case OUT_DONE:
        if (r.pos >= s->next_pos || plen > SHM_CLOSE_TEXT_MAX) {
            sess_fail(s, WIRE_ERR_SESSION, "worker wrote a bad end record (event %llu, %zu "
                      "bytes of text)", ull(r.pos), plen);
            return -EPROTO;
        }
        worker_finished(s, r.a != 0, (int64_t)r.b, payload, plen);
        break;
    case OUT_LOG:
        if (plen > SHM_LOG_MAX || r.b > LOG_DEBUG) {
            sess_fail(s, WIRE_ERR_SESSION, "worker wrote a bad log record (%zu bytes, level "
                      "%llu)", plen, ull(r.b));
            return -EPROTO;
        }
        if (r.a <= s->log_done)
            break;   /* written before a recovery: this is the replay's copy */
        s->log_done = r.a;
        if (r.pos <= s->replay_quiet_until)
            break;   /* rebuilt at a new edge: the lost edge wrote these lines */
        app_log_line(s, (int)r.b, payload, plen);
        break;
    case OUT_SNAP_DONE:
        return recovery_ring_report(s, payload, plen);
    case OUT_FAIL:
        worker_error(s, text, sizeof(text));
        sess_fail(s, WIRE_ERR_SESSION, "session failed at event %llu: %s", ull(r.pos), text);
        break;
    default:
        sess_fail(s, WIRE_ERR_SESSION, "worker wrote an unknown record %u", type);
        return -EPROTO;
    }
    return 0;
}

#define DRAIN_BUDGET 4096   /* records per turn: one busy worker cannot starve the others */

/* Take the worker's outputs: numbered messages go out with their order delta. Never frees
 * the session.
 * A worker that exited after ending the session itself (its OUT_DONE waits in its ring) is
 * drained whole, past a slow reader's stall and the budget: its ring no longer grows (at most
 * a ring's worth is queued, once), and the end must be seen before a crash is assumed. A
 * worker that died without one is left as it was: its replay makes its outputs again. */
static void drain_worker(struct session *s)
{
    unsigned budget = DRAIN_BUDGET, popped = 0;
    int ended_itself = s->worker_reaped && !s->spawning && !s->worker_done &&
                       ring_holds_type(&s->out, OUT_DONE);

    for (;;) {
        uint16_t type;
        uint32_t len;
        const void *rec;

        while ((!s->out_stalled || ended_itself) && (budget || ended_itself) &&
               s->state != S_DEAD && (rec = ring_peek(&s->out, &type, &len))) {
            const void *whole;
            uint32_t wlen;
            int rc;

            if (!ended_itself)
                budget--;
            /* A record in pieces is put back together first; a worker whose pieces do not
             * add up fails its session. */
            rc = ring_asm_take(&s->out_asm, type, s->out.peeked_flags, rec, len,
                               S.cfg.max_message_bytes + (uint32_t)sizeof(struct shm_rec),
                               &whole, &wlen);
            if (rc < 0 && type == OUT_FAIL && s->out.peeked_flags == 0) {
                /* The worker gave up while writing a long record (it can no longer be
                 * woken, say): its reason, not the record it left half written. */
                take_output(s, type, rec, len);
                break;
            }
            if (rc < 0) {
                sess_fail(s, WIRE_ERR_SESSION, "worker wrote a bad long record (type %u): %s",
                          type, s->out_asm.err);
                break;
            }
            if (rc == 1) {
                rc = take_output(s, type, whole, wlen);
                if (whole != rec)
                    ring_asm_reset(&s->out_asm);
                if (rc < 0)
                    break;
            }
            ring_pop(&s->out);
            popped++;
        }
        if (s->out.broken && s->state != S_DEAD)
            sess_fail(s, WIRE_ERR_SESSION, "worker broke its output ring: %s", s->out.broken);
        /* Room made: a worker waiting for it goes on. (Nothing taken, as while a slow
         * reader stalls the session, means no room: the flag stays for the drain that
         * makes some.) */
        if (popped && ring_producer_waits(&s->out))
            sess_ring_worker(s);
        notice_ride(s);
        sup_flush(s, &s->c[SIDE_CLIENT]);
        sup_flush(s, &s->c[SIDE_SERVER]);
        order_trim(s);
        recovery_outputs_drained(s);
        sess_feed(s);
        sess_resume_input(s);
        if (!budget && s->state != S_DEAD) {
            /* More waits: come back after the other sessions had their turn. */
            sess_ring_own_doorbell(s);
            break;
        }
        if (s->out_stalled || s->worker_done || s->state == S_DEAD || ring_sleep_prepare(&s->out))
            break;
    }
}

/* Nothing between the session and its worker that the worker is to answer with its bell:
 * every event fed has been processed and its outputs taken, no input waits for room, no
 * timer announcement, no snapshot request it was rung for (a snapshot the worker writes
 * itself is reported in the output ring; a lazy request waits for the next event, which is
 * owed anyway). */
int sess_worker_owes_nothing(const struct session *s)
{
    uint32_t len;

    return s->state == S_LIVE && s->ctl && s->pid > 0 && !s->spawning &&
           evstore_unfed(&s->ev) == 0 &&
           atomic_load(&s->ctl->consumed) == s->next_pos - 1 &&
           !s->ctl->announce_timers_at && !(s->snap_inflight && !s->snap_lazy) &&
           !s->out_stalled && ring_empty(&s->out) &&
           !ring_asm_partial(&s->out_asm, &len);
}

void sess_on_doorbell(struct session *s, int res)
{
    /* Read before draining: a ring after this point makes the next wait return at once. */
    uint32_t seen = s->ctl ? bell_seen(&s->ctl->bell_out) : 0;

    s->doorbell_armed = 0;
    s->bell_out_seen = seen;
    sess_release_op(s);
    if (res < 0 && res != -EINTR && res != -ECANCELED && res != -EAGAIN)
        LOG(LOG_WARN, "session=%llu msg=\"doorbell\" error=\"%s\"", ull(s->id), strerror(-res));
    if (s->state != S_DEAD || !s->worker_done)
        drain_worker(s);
    if (!sess_worker_owes_nothing(s))
        sess_expect_worker(s);   /* waited on again only while it owes something */
    sess_maybe_free(s);
}

static const char *describe_status(const siginfo_t *si, char *buf, size_t len)
{
    if (si->si_code == CLD_EXITED)
        snprintf(buf, len, "exit status %d", si->si_status);
    else
        snprintf(buf, len, "signal %d (%s)%s", si->si_status, strsignal(si->si_status),
                 si->si_code == CLD_DUMPED ? ", core dumped" : "");
    return buf;
}

/* The exit watch completed (exitwatch.c): reap the worker, then recover or end. */
void sess_on_worker_exit(struct session *s, int res)
{
    siginfo_t si;
    char how[96];

    s->exit_armed = 0;
    sess_release_op(s);
    memset(&si, 0, sizeof(si));
    if (waitid(P_PID, (id_t)s->pid, &si, WEXITED | WNOHANG | __WALL) == -1) {
        if (errno != ECHILD) {
            LOG(LOG_WARN, "session=%llu msg=\"waitid\" error=\"%s\"", ull(s->id), strerror(errno));
            return sess_maybe_free(s);   /* the watch stays unarmed; the session ends without it */
        }
        /* Reaped already (it died before its spawn reply was read, and the stray-child
         * sweep took it): dead all the same, by a hand we cannot name. */
        si.si_code = CLD_KILLED;
        si.si_status = SIGKILL;
    } else if (si.si_pid == 0) {
        if (res < 0) {   /* the watch itself failed: say so, rather than spin re-arming it */
            LOG(LOG_ERROR, "session=%llu msg=\"worker exit watch failed\" pid=%d error=\"%s\"",
                ull(s->id), (int)s->pid, strerror(-res));
            return sess_maybe_free(s);
        }
        sess_arm_exit_watch(s);   /* not dead after all: keep watching */
        return;
    }
    s->worker_reaped = 1;
    S.strays_possible = 1;   /* a snapshot child of its may never have been announced */
    if (s->pidfd >= 0)
        close(s->pidfd);
    s->pidfd = -1;
    update_spin_policy();
    /* Anything the worker wrote before it died still counts. */
    if (!s->worker_done && s->state != S_DEAD)
        drain_worker(s);
    describe_status(&si, how, sizeof(how));
    if (hib_worker_exited(s)) {
        /* hibernate.c stopped it at a durable snapshot: nothing to recover */
    } else if (!s->worker_done && (s->state == S_LIVE || s->state == S_CLOSING)) {
        recovery_start(s, how, !(si.si_code == CLD_KILLED && si.si_status == SIGKILL));
    } else if (!s->worker_done && s->state == S_CONNECTING &&
               si.si_code == CLD_KILLED && si.si_status == SIGKILL &&
               s->prelive_respawns < PRELIVE_RESPAWNS_MAX) {
        /* Killed while the server endpoint had not answered yet: it was handed nothing (the
         * start event goes in at WELCOME), so a fresh worker replaces it. */
        char err[256];
        pid_t old = s->pid;

        S.stats.worker_deaths++;
        s->prelive_respawns++;
        if (sess_spawn_worker(s, 0, err, sizeof(err)) < 0)
            sess_fail(s, WIRE_ERR_SESSION, "worker pid %d died before the session started "
                      "(%s) and no new one could start: %s", (int)old, how, err);
        else
            LOG(LOG_WARN, "session=%llu msg=\"worker died before the session started; a "
                "fresh one replaces it\" old=%d status=\"%s\"", ull(s->id), (int)old, how);
    } else if (!s->worker_done && s->state != S_DEAD) {
        S.stats.worker_deaths++;
        sess_fail(s, WIRE_ERR_SESSION, "worker pid %d died before the session started: %s",
                     (int)s->pid, how);
    } else {
        LOG(LOG_DEBUG, "session=%llu msg=\"worker exited\" pid=%d status=\"%s\"", ull(s->id),
            (int)s->pid, how);
    }
    if (s->state == S_DEAD)
        recovery_worker_gone(s);
    if (s->worker_reaped && s->doorbell_armed)
        sess_ring_own_doorbell(s);   /* complete the pending wait, so the slot can go */
    sess_maybe_free(s);
}

/* ---- the end of a session ---- */

/* Flush what is queued, shut down our side, read until the peer's EOF, then close. */
static void conn_close(struct session *s, struct conn *c)
{
    if (c->fd < 0)
        return;
    c->draining = 1;
    c->stalled = 0;
    if (c->connect_armed)
        return;
    if (c->reset) {
        /* SO_LINGER 0 is set: the close sends a reset. Shutting down reads completes a
         * pending recv without sending anything (a FIN is what we must not send). */
        c->pending.len = 0;
        if (c->recv_armed || c->send_armed) {
            connfd_shutdown(s, c, SHUT_RD);
            return;
        }
        if (!connfd_busy(c))   /* the SO_LINGER goes first */
            connfd_close(s, c);
        return;
    }
    sup_flush(s, c);
    if (c->send_armed || c->sending.len || c->pending.len)
        return;
    if (!c->eof) {
        connfd_shutdown(s, c, SHUT_WR);
        if (!c->recv_armed) {
            c->rlen = 0;
            sup_arm_recv(s, c);
        }
        return;
    }
    if (c->recv_armed) {
        connfd_shutdown(s, c, SHUT_RDWR);  /* completes the pending recv */
        return;
    }
    if (!connfd_busy(c))   /* a shutdown in flight goes first */
        connfd_close(s, c);
}

/* A shutdown or setsockopt of a direct socket completed: a close waiting for it goes. */
void sess_on_sock_ctl(struct session *s, enum side side, int res)
{
    struct conn *c = &s->c[side];

    connfd_ctl_done(s, c, res);
    if (c->draining && c->fd >= 0)
        conn_close(s, c);
}

void sess_fail(struct session *s, uint32_t code, const char *fmt, ...)
{
    char text[WIRE_ERROR_MAX];
    va_list ap;

    if (s->state >= S_DEAD)
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (s->state >= S_CONNECTING)
        S.stats.sessions_failed++;
    /* A connection that never became a session (no id yet) gets its session_end line
     * only: one line per bad connection, not two. */
    if (s->id && LOG_WARN <= log_threshold) {
        char quoted[4 * sizeof(text) + 1];   /* the reason may quote a peer's or worker's bytes */
        log_escape(quoted, sizeof(quoted), text, strlen(text));
        LOG(LOG_WARN, "session=%llu msg=\"session failed\" reason=\"%s\"", ull(s->id), quoted);
    }
    sesslog_end(s, END_FAILED, text);
    s->state = S_DEAD;
    s->failed = 1;
    olog_on_failure(s);     /* before recovery_end: the held events are what it writes */
    for (int i = 0; i < 2; i++) {
        struct conn *c = &s->c[i];
        if (c->fd < 0 || c->draining)
            continue;
        if (!c->up) {
            c->pending.len = 0;   /* a server endpoint not greeted yet hears nothing */
            c->eof = 1;
        } else if (!c->dead) {
            conn_queue_error(c, code, text);
        }
        conn_close(s, c);
    }
    timers_cancel_all(s);
    recovery_end(s);
    if (s->pid > 0 && !s->worker_reaped)
        kill(s->pid, SIGKILL);
}

void sess_end_quietly(struct session *s)
{
    if (s->state >= S_DEAD)
        return;
    sesslog_end(s, END_NONE, NULL);
    s->state = S_DEAD;
    for (int i = 0; i < 2; i++)
        conn_close(s, &s->c[i]);
    timers_cancel_all(s);
    recovery_end(s);
    remote_end(s);
    if (s->pid > 0 && !s->worker_reaped)
        kill(s->pid, SIGKILL);
}

void sess_release_op(struct session *s)
{
    if (s->inflight)
        s->inflight--;
}

void sess_maybe_free(struct session *s)
{
    if (s->state != S_DEAD || s->inflight || s->spawning)
        return;
    for (int i = 0; i < 2; i++)
        if (s->c[i].fd >= 0)
            conn_close(s, &s->c[i]);
    if (s->c[0].fd >= 0 || s->c[1].fd >= 0 || s->inflight)
        return;
    if (s->pid > 0 && !s->worker_reaped)
        return;   /* wait for the exit watch to report it */
    for (int i = 0; i < 2; i++) {
        free(s->c[i].rbuf);
        free(s->c[i].sending.data);
        free(s->c[i].pending.data);
    }
    if (s->shm)
        munmap(s->shm, s->shm_len);
    if (s->doorbell_out >= 0)
        close(s->doorbell_out);
    if (s->pidfd >= 0)
        close(s->pidfd);
    if (s->memfd >= 0)
        close(s->memfd);
    if (s->report_fd >= 0)
        recovery_close_report(s->report_fd);
    if (s->report_worker_fd >= 0)
        close(s->report_worker_fd);
    evstore_free(&s->ev);
    remote_end(s);
    resume_free(s);
    ring_asm_reset(&s->out_asm);
    if (!s->dir_taken)
        sdir_session_ended(s->id, s->failed);   /* removed, or kept for offline replay */
    if (s->id)
        S.stats.sessions_ended++;
    free(s->order);
    free(s->order_end);
    timers_free(s);
    zygote_unbind(s);   /* the last session of an old module stops its zygote */
    /* take it off the doorbell and log lists if it is there */
    for (struct session **p = &S.dirty; *p; p = &(*p)->next_dirty) {
        if (*p == s) {
            *p = s->next_dirty;
            break;
        }
    }
    uint32_t slot = s->slot;
    memset(s, 0, sizeof(*s));
    s->state = S_FREE;
    s->c[0].fd = s->c[1].fd = -1;
    S.nsessions--;
    S.free_slots[S.nfree++] = slot;
}

/* A frame for both endpoints (those still there). */
void sess_send_all(struct session *s, const void *frame, size_t len)
{
    for (int i = 0; i < 2; i++) {
        struct conn *c = &s->c[i];
        if (c->fd < 0 || c->dead || c->draining || !c->up)
            continue;
        conn_queue(c, frame, len, NULL, 0);
        sup_flush(s, c);
    }
}

/* ---- operator actions ---- */

struct session *sess_find(uint64_t id)
{
    for (uint32_t i = 0; i < S.slot_high; i++)
        if (S.sessions[i].state != S_FREE && S.sessions[i].state != S_HELLO &&
            S.sessions[i].id == id)
            return &S.sessions[i];
    return NULL;
}

int sess_kill_worker(uint64_t id, char *msg, size_t len)
{
    struct session *s = sess_find(id);

    if (!s) {
        snprintf(msg, len, "error: no session %llu\n", ull(id));
        return -ENOENT;
    }
    if (s->pid <= 0 || s->worker_reaped) {
        snprintf(msg, len, "error: session %llu has no live worker%s\n", ull(id),
                 hib_holds(s) ? " (hibernated)" : "");
        return -ESRCH;
    }
    kill(s->pid, SIGKILL);
    snprintf(msg, len, "ok killed worker=%d session=%llu\n", (int)s->pid, ull(id));
    return 0;
}

/* Receive buffers are allocated when first needed. */
int sess_rbuf(struct conn *c)
{
    if (c->rbuf)
        return 0;
    c->rcap = S.max_body + WIRE_HDR_LEN + RECV_SLACK;
    c->rbuf = malloc(c->rcap);
    return c->rbuf ? 0 : -ENOMEM;
}
