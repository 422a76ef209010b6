/* timers.h - the app timers of one session, armed as io_uring timeouts.
 *
 * A timer lives in a slot; the slot index and a generation number make up the
 * timeout's user_data, so a cancelled timer's late completion (or its remove) can never
 * touch a newer timer that took the same slot. A slot is reused only after the kernel
 * has completed its timeout. Slots sit in fixed blocks that never move: the kernel reads
 * a timeout's timespec when the SQE is submitted, which may be after more timers were
 * armed. */
#ifndef CESSNA_TIMERS_H
#define CESSNA_TIMERS_H

#include <linux/time_types.h>
#include <stdint.h>

#define TIMER_BLOCK     64
#define TIMER_MAX_SLOTS (1u << 16)   /* 16 bits of user_data arg for the index, 8 for the gen */

struct stimer {
    uint64_t id;                    /* the app's timer id; 0 = not armed (or cancelled) */
    struct __kernel_timespec ts;
    uint8_t gen;
    uint8_t in_kernel;              /* a timeout for this slot has not completed yet */
};

struct timers {
    struct stimer **blocks;
    uint32_t nblocks;
};

#define TIMER_ARG(idx, gen)   (((uint32_t)(gen) << 16) | (uint32_t)(idx))
#define TIMER_ARG_IDX(arg)    ((arg) & 0xffffu)
#define TIMER_ARG_GEN(arg)    (((arg) >> 16) & 0xffu)

struct session;

/* Arm timer `id` to fire after delay_ms. 0, -ENOSPC or -ENOMEM. */
int  timers_arm(struct session *s, uint64_t id, uint64_t delay_ms);
/* 1 when timer `id` is armed. */
int  timers_has(const struct session *s, uint64_t id);
/* Cancel timer `id` if it is armed (a firing already ordered is not undone). */
void timers_cancel(struct session *s, uint64_t id);
void timers_cancel_all(struct session *s);
/* A timeout completion: the id of the timer that fired, or 0 when it was cancelled,
 * stale, or an error. The slot stays the caller's until timers_done() or a re-arm. */
uint64_t timers_on_complete(struct session *s, uint32_t arg, int res, uint32_t *idx);
/* After a firing: release the slot, or try again in 1 ms (the worker is behind). */
void timers_done(struct session *s, uint32_t idx);
void timers_retry(struct session *s, uint32_t idx);
/* Timers armed now (for tests and cessna-ctl). */
uint32_t timers_armed(const struct session *s);
void timers_free(struct session *s);

#endif
