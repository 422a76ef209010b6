/* hibernate.h - idle sessions without a process (hibernate.c).
 *
 * A live session whose last event (a message from either side, a timer firing) is older
 * than hibernate_after_ms, with nothing unfed and no output waiting, is snapshotted; once
 * that snapshot is durable its worker (and hot standby) is stopped and what only a worker
 * needs is released. Its connections and timers stay with the supervisor; its next event
 * starts a worker from the zygote that restores the snapshot (the cold path) before the
 * event is fed. */
#ifndef CESSNA_HIBERNATE_H
#define CESSNA_HIBERNATE_H

#include <stddef.h>
#include <stdint.h>

enum hib_state {
    HIB_AWAKE = 0,  /* a worker runs (or is being started) */
    HIB_STOPPING,   /* the worker was killed at a durable snapshot; waiting for it to go */
    HIB_ASLEEP,     /* no worker, no shared memory: the next event wakes it */
};

/* What hibernate.c knows of a session; embedded in it, written only by hibernate.c. */
struct hib {
    enum hib_state state;
    uint64_t last_event_ms;     /* tmo_now_ms() of the session's last event */
    uint64_t asked_pos, asked_ms;   /* the snapshot to sleep on, last asked for */
    uint64_t pos;               /* the durable snapshot it sleeps at */
    uint64_t wake_ns;           /* a wake in progress: since when (0: none) */
    unsigned wake_pending : 1;  /* an event came while stopping or asleep */
};

struct session;

/* An event was ordered for s (session.c, sess_push_event_at). */
void hib_on_event(struct session *s);
/* 1 while s has no worker to feed because of hibernation: events wait in the store. */
int  hib_holds(const struct session *s);
/* s's worker was reaped (session.c, sess_on_worker_exit): 1 when it was stopped to hibernate (no
 * recovery then), 0 when its death is recovery's business. */
int  hib_worker_exited(struct session *s);
/* After every completion of s (loop.c): finish stopping, or wake for an event that came. */
void hib_after_op(struct session *s);
/* From the periodic tick: idle sessions go to sleep; wakes that had to wait are retried. */
void hib_tick(uint64_t now_ms);
/* 1 when nothing is in flight between s and its worker (every event ordered was processed,
 * no output waits in its ring), or s sleeps with no event waiting (drain.c). */
int  hib_quiet(const struct session *s);
/* tmo_now_ms() of s's last event (a message from either side, a timer firing). */
uint64_t hib_last_event_ms(const struct session *s);
/* "hibernated" / "hibernating" for cessna-ctl sessions, else live_name. */
const char *hib_state_name(const struct session *s, const char *live_name);
/* The events a hibernated session's worker had processed (its shared memory is gone). */
uint64_t hib_events(const struct session *s);
/* " hibernated=N ..." for cessna-ctl stats: the length written. */
size_t hib_stats(char *out, size_t cap);
/* The same counters for the metrics (metrics.c). */
struct hib_totals {
    uint32_t asleep, going;     /* sessions hibernated, and going to sleep now */
    uint64_t hibernations, wakes, wake_failures;
};
void hib_totals(struct hib_totals *t);

#endif
