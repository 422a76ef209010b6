/* bell.h - doorbells between the supervisor and a worker without a descriptor of their
 * own: a counter in the session's shared memory (shm_ctl.bell_in, bell_out).
 *
 * A waiter reads the counter (bell_seen) BEFORE it looks for work, and sleeps only while
 * the counter still has that value, so a ring that lands between the look and the sleep
 * is never missed. A ringer adds one, then wakes the sleeper.
 *
 * Worker to supervisor (bell_out) is a futex word: the supervisor waits on it through
 * io_uring (IORING_OP_FUTEX_WAIT, Linux 6.7), and only while the worker owes it something;
 * on older kernels it keeps an eventfd, which the worker rings as well.
 *
 * Supervisor to worker (bell_in): the worker sleeps in read() on its report socket, and a
 * ringer that finds it asleep sends it one byte (bell_sleep, bell_claim_sleeper). Not a
 * futex: every shared futex waiter of the machine sits in one kernel hash (512 buckets on
 * 2 CPUs), and with 10,000 idle workers waiting there each wake walked ~20 strangers'
 * entries (futex_wake was 14% of the machine at 10,000 sessions moving once a second). A
 * sleeping socket reader waits on its own socket's queue. */
#ifndef CESSNA_BELL_H
#define CESSNA_BELL_H

#include <errno.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline uint32_t bell_seen(_Atomic uint32_t *w)
{
    return atomic_load(w);
}

static inline void bell_add(_Atomic uint32_t *w)
{
    atomic_fetch_add(w, 1);
}

/* bell_out's futex wake (the supervisor waits on the word through io_uring). */
static inline void bell_wake(_Atomic uint32_t *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* The worker: sleep until a ring after `seen`. `asleep` is raised before the counter is
 * checked, and a ringer adds to the counter before it looks at `asleep` (both sequentially
 * consistent): either the check sees the ring, or the ringer sees the sleeper and sends a
 * byte to `fd`. A byte sent to a worker that then did not sleep stays queued and ends its
 * next sleep early: one extra look, nothing lost. Returns 0 on a ring or a signal (callers
 * loop), -EPIPE when the other end is closed, or -errno: nobody can wake the caller then. */
static inline int bell_sleep(_Atomic uint32_t *w, _Atomic uint32_t *asleep, uint32_t seen,
                             int fd)
{
    char byte;
    ssize_t n = 1;

    atomic_store(asleep, 1);
    if (atomic_load(w) == seen)
        n = read(fd, &byte, 1);
    atomic_store(asleep, 0);
    if (n == 0)
        return -EPIPE;
    return n < 0 && errno != EINTR ? -errno : 0;
}

/* The ringer, after bell_add: 1 when it must send the sleeper its byte. Taking the flag
 * means one byte per sleep however many rings land during it. */
static inline int bell_claim_sleeper(_Atomic uint32_t *asleep)
{
    return atomic_load(asleep) && atomic_exchange(asleep, 0);
}

#endif
