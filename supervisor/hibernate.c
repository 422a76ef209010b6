/* hibernate.c - idle sessions give up their process (DESIGN.md section 6, "Hibernation").
 *
 *   awake --(idle hibernate_after_ms, quiet, snapshot at the last event durable)--> stopping
 *   stopping --(worker reaped, its io_uring operations completed, memory released)--> asleep
 *   asleep --(an event: a message, a timer firing, a CLOSE)--> awake (cold path)
 *
 * Going to sleep: the periodic tick finds a live session whose last event is older than
 * hibernate_after_ms and that is quiet (every event fed and processed, no output waiting in
 * its ring or assembling, no input waiting, no remote timer announcement under way, not
 * moving). It asks for a snapshot at the last event through the usual request path
 * (recovery.c), and once that snapshot is durable by the usual rule (on disk, and no output
 * of an event up to it still in the ring) and the session is still quiet, the standby and
 * snapshot children are dropped and the worker is killed. Any event after that is simply
 * held: the snapshot covers everything the worker had, so killing it loses nothing.
 *
 * Asleep: the connections, the held events (none), the order, the timers (armed in the
 * supervisor's ring) and remote shipping of the snapshot go on in the supervisor. No
 * process, no shared memory, no report socket.
 *
 * Waking: the first event after P is stored as always, and the wake runs after the
 * completion that ordered it (hib_after_op): shared memory and report socket anew
 * (sess_prepare), then a worker from the zygote restoring the snapshot at P
 * (sess_spawn_worker); the events after P are fed once it is there, exactly as in a cold
 * recovery, so the app sees the same events in the same order as without hibernation.
 * A worker killed while the session goes to sleep or wakes is recovered as any other. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "hibernate.h"
#include "log.h"
#include "sup.h"

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

/* Node-wide counters for cessna-ctl stats. */
static struct {
    uint64_t hibernations, wakes, wake_failures, wake_us_sum, wake_us_max, wake_us_n;
    int released;   /* buffers were freed since the last tick: give the pages back */
} H;

#define ASK_AGAIN_MS 1000   /* a hibernation snapshot that failed is asked for again after this */
/* Wakes wait while this many spawn requests are with the zygote (a burst of timers firing
 * at once): its socket holds a few hundred, and a recovery or a new session must still
 * find room. The tick tries again. */
#define WAKES_QUEUED_MAX 64
/* Hibernation snapshots asked for per tick at most (every 50 ms): many sessions falling
 * idle together do not fork all at once. */
#define ASKS_PER_TICK 64

void hib_on_event(struct session *s)
{
    s->hib.last_event_ms = tmo_now_ms();
    if (s->hib.state != HIB_AWAKE)
        s->hib.wake_pending = 1;   /* woken after this completion (hib_after_op) */
}

int hib_holds(const struct session *s)
{
    return s->hib.state != HIB_AWAKE;
}

/* Nothing in flight between the session and its worker: every event ordered has been fed
 * and processed, no output waits in the ring or is half assembled, no input waits for
 * room, and the worker is not announcing a resumed session's timers. */
static int quiet(const struct session *s)
{
    uint32_t len;

    return s->state == S_LIVE && s->ctl && s->pid > 0 && !s->worker_reaped && !s->spawning &&
           !s->worker_done && !s->moving && s->next_pos > 1 && !s->out_stalled &&
           !s->c[SIDE_CLIENT].stalled && !s->c[SIDE_SERVER].stalled &&
           evstore_unfed(&s->ev) == 0 &&
           atomic_load(&s->ctl->consumed) == s->next_pos - 1 &&
           !s->ctl->announce_timers_at && ring_empty(&s->out) &&
           !ring_asm_partial(&s->out_asm, &len);
}

int hib_quiet(const struct session *s)
{
    if (s->hib.state == HIB_ASLEEP)
        return s->state == S_LIVE && !s->hib.wake_pending && evstore_unfed(&s->ev) == 0;
    return s->hib.state == HIB_AWAKE && quiet(s);
}

uint64_t hib_last_event_ms(const struct session *s)
{
    return s->hib.last_event_ms;
}

/* The snapshot at the last event is durable and the session is quiet: stop the worker. */
static void stop(struct session *s, uint64_t now_ms)
{
    recovery_hibernate(s);   /* the standby and any snapshot child go */
    int rc = sess_signal_worker(s, SIGKILL);
    if (rc < 0 && rc != -ESRCH) {
        LOG(LOG_WARN, "session=%llu msg=\"hibernate: cannot stop the worker\" error=\"%s\"",
            ull(s->id), strerror(-rc));
        return;
    }
    s->hib.state = HIB_STOPPING;
    s->hib.pos = s->snap_pos;
    s->hib.wake_pending = 0;
    H.hibernations++;
    sesslog_hibernated(&s->log);
    LOG(LOG_INFO, "session=%llu msg=\"hibernating\" worker=%d snapshot=%llu idle_ms=%llu",
        ull(s->id), (int)s->pid, ull(s->snap_pos), ull(now_ms - s->hib.last_event_ms));
}

int hib_worker_exited(struct session *s)
{
    if (s->hib.state != HIB_STOPPING || s->state >= S_DEAD)
        return 0;
    recovery_close_reports(s);   /* its poll completes; then the socket can go */
    return 1;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* The connections' idle buffers: an empty output buffer not being sent is freed (it is
 * allocated again on the next output), and the receive buffer's untouched pages are given
 * back (it stays: a receive is armed on it, and the kernel copies into it only while the
 * loop is in io_uring_enter, never during this). */
static void trim_conn(struct conn *c)
{
    long page = sysconf(_SC_PAGESIZE);

    if (!c->send_armed && !c->sending.len && !c->sent) {
        free(c->sending.data);
        c->sending = (struct outbuf){ 0 };
    }
    if (!c->pending.len) {
        free(c->pending.data);
        c->pending = (struct outbuf){ 0 };
    }
    if (c->rbuf && page > 0) {
        uintptr_t from = ((uintptr_t)c->rbuf + c->rlen + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
        uintptr_t to = ((uintptr_t)c->rbuf + c->rcap) & ~((uintptr_t)page - 1);
        if (to > from)
            madvise((void *)from, to - from, MADV_DONTNEED);
    }
}

/* ---- what a hibernated session gives back ----
 * Keep this in step with sess_prepare() (session.c: shared memory, the eventfd doorbell of
 * old kernels) and recovery_setup() (recovery.c: the report socketpair): whatever they open
 * for a worker is released here, and the wake opens it again with sess_prepare(). The
 * connections, held events, order, timers and snapshot files stay. */
static void release(struct session *s)
{
    for (struct session **p = &S.dirty; *p; p = &(*p)->next_dirty) {
        if (*p == s) {
            *p = s->next_dirty;
            break;
        }
    }
    s->in_dirty = 0;
    if (s->shm)
        munmap(s->shm, s->shm_len);
    s->shm = NULL;
    s->ctl = NULL;
    s->shm_len = 0;
    memset(&s->in, 0, sizeof(s->in));
    memset(&s->out, 0, sizeof(s->out));
    ring_asm_reset(&s->out_asm);
    close_fd(&s->memfd);
    close_fd(&s->doorbell_out);
    if (s->report_fd >= 0)
        recovery_close_report(s->report_fd);
    s->report_fd = -1;
    close_fd(&s->report_worker_fd);
    s->pid = 0;
    trim_conn(&s->c[SIDE_CLIENT]);
    trim_conn(&s->c[SIDE_SERVER]);
    if (!s->ev.count)
        evstore_free(&s->ev);   /* nothing held: the next event allocates it again */
    H.released = 1;
}

/* Stopping is over once the worker and its children are reaped and none of its operations is
 * in flight. */
static int stopped(const struct session *s)
{
    return s->worker_reaped && !s->exit_armed && !s->doorbell_armed && !s->report_armed &&
           !s->spawning && recovery_kids_reaped(s);   /* asleep: no process of its own */
}

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The cold path: memory and report socket anew, then a worker from the zygote restoring
 * the snapshot the session sleeps at; the events after it are fed once it is there. */
static void wake(struct session *s)
{
    char err[256] = "";

    if (zygote_waiting(s) >= WAKES_QUEUED_MAX)
        return;   /* its zygote is being restarted, or busy: the tick tries again */
    s->hib.wake_pending = 0;
    s->hib.wake_ns = mono_ns();
    if (sess_prepare(s, err, sizeof(err)) < 0 ||
        sess_spawn_worker(s, s->hib.pos, err, sizeof(err)) < 0) {
        H.wake_failures++;
        s->hib.state = HIB_AWAKE;
        s->hib.wake_ns = 0;
        sess_fail(s, WIRE_ERR_SESSION, "a hibernated session could not wake: %s", err);
        return;
    }
    s->hib.state = HIB_AWAKE;
    s->snap_written = s->snap_pos;   /* the new worker's chain starts over with a full */
    /* The event watchdog's clock starts when it next looks (as after a recovery): the time
     * asleep is not time the app spent on an event. */
    s->wd_since_ms = 0;
    s->ctl->replay_until = s->next_pos - 1;   /* stamped when it is through (wake_timed) */
    atomic_store(&s->ctl->replayed_ns, 0);
    H.wakes++;
    LOG(LOG_INFO, "session=%llu msg=\"waking\" snapshot=%llu events_waiting=%llu",
        ull(s->id), ull(s->hib.pos), ull(s->next_pos - 1 - s->hib.pos));
}

/* A wake is over when the new worker has processed the events that waited for it: it
 * stamps replayed_ns then (the same stamp a recovery's timing uses). */
static void wake_timed(struct session *s)
{
    uint64_t done = s->ctl && s->state < S_DEAD ? atomic_load(&s->ctl->replayed_ns) : 0;

    if (!s->hib.wake_ns || done < s->hib.wake_ns)
        return;
    uint64_t us = (done - s->hib.wake_ns) / 1000;
    H.wake_us_sum += us;
    H.wake_us_n++;
    if (us > H.wake_us_max)
        H.wake_us_max = us;
    s->hib.wake_ns = 0;
}

void hib_after_op(struct session *s)
{
    if (s->hib.state == HIB_AWAKE) {
        if (s->hib.wake_ns)
            wake_timed(s);
        return;
    }
    if (s->state != S_LIVE && s->state != S_CLOSING)
        return;   /* ending: sess_maybe_free releases what is left */
    if (s->hib.state == HIB_STOPPING && stopped(s)) {
        release(s);
        s->hib.state = HIB_ASLEEP;
        LOG(LOG_INFO, "session=%llu msg=\"hibernated\" snapshot=%llu timers=%u",
            ull(s->id), ull(s->hib.pos), timers_armed(s));
    }
    if (s->hib.state == HIB_ASLEEP && s->hib.wake_pending)
        wake(s);
}

void hib_tick(uint64_t now_ms)
{
    char msg[256];
    int asks = 0;

    if (H.released) {
        /* Freed buffers sit in the middle of the heap: only malloc_trim returns their pages. */
        H.released = 0;
        malloc_trim(0);
    }

    for (uint32_t i = 0; i < S.slot_high; i++) {
        struct session *s = &S.sessions[i];

        if (s->state != S_LIVE && s->state != S_CLOSING)
            continue;
        if (s->hib.wake_ns)
            wake_timed(s);
        if (s->hib.state != HIB_AWAKE) {
            if (s->hib.state == HIB_ASLEEP && s->hib.wake_pending)
                wake(s);   /* it waited for the zygote */
            continue;
        }
        if (!S.cfg.hibernate_after_ms || S.draining ||
            now_ms - s->hib.last_event_ms < S.cfg.hibernate_after_ms || !quiet(s))
            continue;
        uint64_t p = s->next_pos - 1;
        if (s->snap_pos == p && !s->pend.valid && !s->snap_inflight) {
            stop(s, now_ms);
            continue;
        }
        if (s->snap_inflight || s->snap_written == p)
            continue;   /* on its way; or written, durable once its outputs are out */
        if (s->hib.asked_pos == p && now_ms - s->hib.asked_ms < ASK_AGAIN_MS)
            continue;   /* asked already: it failed, try again a little later */
        if (asks++ >= ASKS_PER_TICK)
            continue;
        s->hib.asked_pos = p;
        s->hib.asked_ms = now_ms;
        if (recovery_request_snapshot(s, msg, sizeof(msg)) < 0)
            LOG(LOG_DEBUG, "session=%llu msg=\"hibernate: snapshot not requested\" why=\"%.*s\"",
                ull(s->id), (int)strcspn(msg, "\n"), msg);
    }
}

const char *hib_state_name(const struct session *s, const char *live_name)
{
    if (s->state != S_LIVE && s->state != S_CLOSING)
        return live_name;
    switch (s->hib.state) {
    case HIB_STOPPING: return "hibernating";
    case HIB_ASLEEP:   return "hibernated";
    default:           return live_name;
    }
}

uint64_t hib_events(const struct session *s)
{
    return s->hib.state == HIB_AWAKE ? 0 : s->hib.pos;
}

void hib_totals(struct hib_totals *t)
{
    memset(t, 0, sizeof(*t));
    for (uint32_t i = 0; i < S.slot_high; i++) {
        const struct session *s = &S.sessions[i];
        if (s->state == S_FREE || s->state >= S_DEAD)
            continue;
        t->asleep += s->hib.state == HIB_ASLEEP;
        t->going += s->hib.state == HIB_STOPPING;
    }
    t->hibernations = H.hibernations;
    t->wakes = H.wakes;
    t->wake_failures = H.wake_failures;
}

size_t hib_stats(char *out, size_t cap)
{
    struct hib_totals t;
    int n;

    hib_totals(&t);
    n = snprintf(out, cap, " hibernated=%u hibernating=%u hibernations=%llu wakes=%llu "
                 "wake_failures=%llu wake_us_avg=%llu wake_us_max=%llu", t.asleep, t.going,
                 ull(H.hibernations), ull(H.wakes), ull(H.wake_failures),
                 ull(H.wake_us_n ? H.wake_us_sum / H.wake_us_n : 0), ull(H.wake_us_max));
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}
