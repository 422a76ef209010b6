/* bell.h - doorbells between the supervisor and a worker without a descriptor: a counter
 * in the session's shared memory (shm_ctl.bell_in, bell_out), used as a futex word.
 *
 * A waiter reads the counter (bell_seen) BEFORE it looks for work, and sleeps only while
 * the counter still has that value (bell_wait), so a ring that lands between the look and
 * the sleep is never missed. A ringer adds one, then wakes (bell_ring). The supervisor
 * waits through io_uring (IORING_OP_FUTEX_WAIT, Linux 6.7); on older kernels it keeps an
 * eventfd for the worker-to-supervisor direction, which the worker rings as well. */
#ifndef CESSNA_BELL_H
#define CESSNA_BELL_H

#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline uint32_t bell_seen(_Atomic uint32_t *w)
{
    return atomic_load(w);
}

/* Returns when the counter differs from `seen`, on a ring, or on a signal (callers loop). */
static inline void bell_wait(_Atomic uint32_t *w, uint32_t seen)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, seen, NULL, NULL, 0);
}

static inline void bell_add(_Atomic uint32_t *w)
{
    atomic_fetch_add(w, 1);
}

static inline void bell_wake(_Atomic uint32_t *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static inline void bell_ring(_Atomic uint32_t *w)
{
    bell_add(w);
    bell_wake(w);
}

#endif
