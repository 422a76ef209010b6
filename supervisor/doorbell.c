/* doorbell.c - waking a worker and being woken by it, without a descriptor of their own
 * (common/bell.h): the supervisor waits on shm_ctl.bell_out with IORING_OP_FUTEX_WAIT, and
 * wakes a sleeping worker with a byte on its report socket in the loop's next submission.
 * A kernel without io_uring futex operations (before 6.7) gets the eventfd it had before
 * for the worker-to-supervisor direction. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bell.h"
#include "log.h"
#include "sup.h"

/* Not in Debian 12's liburing and kernel headers yet. */
#define OP_FUTEX_WAIT 51
#define FUTEX2_U32    0x02          /* FUTEX2_SIZE_U32; shared (not FUTEX2_PRIVATE) */
#define FUTEX_ANY     0xffffffffu   /* FUTEX_BITSET_MATCH_ANY */

static void prep_futex(struct io_uring_sqe *sqe, int op, _Atomic uint32_t *word, uint64_t val)
{
    io_uring_prep_rw(op, sqe, FUTEX2_U32, word, 0, val);
    sqe->addr3 = FUTEX_ANY;
}

void doorbell_probe(void)
{
    struct io_uring_probe *p = io_uring_get_probe_ring(&S.ring);

    S.futex_bells = p && io_uring_opcode_supported(p, OP_FUTEX_WAIT);
    if (p)
        io_uring_free_probe(p);
    if (!S.futex_bells)
        LOG(LOG_INFO, "msg=\"io_uring has no futex operations (Linux < 6.7): each session "
            "keeps an eventfd doorbell\"");
}

void sess_arm_doorbell(struct session *s, uint32_t seen)
{
    struct io_uring_sqe *sqe = sup_sqe();

    if (S.futex_bells)
        prep_futex(sqe, OP_FUTEX_WAIT, &s->ctl->bell_out, seen);
    else
        io_uring_prep_read(sqe, s->doorbell_out, &s->doorbell_val, sizeof(s->doorbell_val), 0);
    io_uring_sqe_set_data64(sqe, UD(OP_DOORBELL, s->slot, 0));
    s->doorbell_armed = 1;
    s->inflight++;
}

void sess_ring_own_doorbell(struct session *s)
{
    uint64_t one = 1;

    sess_expect_worker(s);   /* a wait to complete: "come back to this session" */
    bell_add(&s->ctl->bell_out);
    if (S.futex_bells)
        bell_wake(&s->ctl->bell_out);
    else if (write(s->doorbell_out, &one, sizeof(one)) == -1)
        LOG(LOG_WARN, "session=%llu msg=\"doorbell\" error=\"%s\"", (unsigned long long)s->id,
            strerror(errno));
}

/* The supervisor waits on a worker's bell only while the worker owes it something (an
 * event fed and not yet processed, its outputs, room in the input ring): an idle
 * worker's session has no waiter in the kernel's futex hash, which every shared futex of
 * every process shares (10,000 idle sessions were 10,000 more waiters for each wake to walk
 * past). The wait is armed again from the bell's value at the last drain, so a ring since
 * then ends it at once. */
static int worker_running(const struct session *s)
{
    return s->ctl && s->state != S_FREE && s->pid > 0 && !s->spawning && !s->worker_reaped &&
           !s->worker_done;
}

/* (Only for a worker that runs: a wait armed before a spawn that then fails would hold the
 * session's slot for good; sess_watch_worker arms the first one.) */
void sess_expect_worker(struct session *s)
{
    if (!s->doorbell_armed && worker_running(s))
        sess_arm_doorbell(s, s->bell_out_seen);
}

static void wake_retry(struct session *s);

/* On the tick, for a session whose bell nobody waits on: a worker that rang all the same
 * is seen within the tick; one that owes something after all (thorough: every second, as
 * it reads more of the session's memory) within a second. And a worker whose wake-up byte
 * failed is rung again. */
void sess_bell_check(struct session *s, int thorough)
{
    if (s->wake_failed)
        wake_retry(s);
    if (!s->doorbell_armed && worker_running(s) &&
        (bell_seen(&s->ctl->bell_out) != s->bell_out_seen ||
         (thorough && !sess_worker_owes_nothing(s))))
        sess_arm_doorbell(s, s->bell_out_seen);
}

void sess_ring_worker(struct session *s)
{
    static const char byte;

    bell_add(&s->ctl->bell_in);
    /* A worker that is not asleep sees the count before it sleeps; one that is gets a byte
     * on its report socket (bell.h), sent with the loop's next submission beside the other
     * sends. Every close of a report socket submits first (recovery_close_report), so the
     * byte cannot reach a descriptor that took the number since. */
    if (s->report_fd < 0 || !bell_claim_sleeper(&s->ctl->in_asleep))
        return;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_send(sqe, s->report_fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    /* Only a failure comes back (sess_wake_failed); a completion for each ring was one more
     * pass of the loop per message. */
    if (S.futex_bells)   /* Linux 6.7: CQE_SKIP_SUCCESS (5.17) is there */
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, UD(OP_WAKE, s->slot, 0));
}

/* The byte did not go (no memory for it, say): the worker may sleep on with nobody to wake
 * it, since the ring took its flag. The tick rings it again. A worker that died meanwhile
 * (EPIPE) is rung again only until its exit is seen; a slot freed and taken again gets one
 * needless ring. On kernels before 6.7 every wake completes: res 1, nothing to do. */
void sess_wake_failed(uint32_t slot, int res)
{
    if (res >= 0 || slot >= S.slots || S.sessions[slot].state == S_FREE)
        return;
    S.sessions[slot].wake_failed = 1;
    LOG(LOG_DEBUG, "session=%llu msg=\"wake-up byte not sent; the tick rings again\" "
        "error=\"%s\"", (unsigned long long)S.sessions[slot].id, strerror(-res));
}

static void wake_retry(struct session *s)
{
    s->wake_failed = 0;
    if (!worker_running(s))
        return;
    atomic_store(&s->ctl->in_asleep, 1);   /* as if asleep: at worst one needless wake */
    sess_ring_worker(s);
}
