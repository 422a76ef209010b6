/* test_timers.c - the session timer table (supervisor/timers.c) on a real io_uring: a
 * cancelled timer's completion or remove never touches a newer timer in its slot, every
 * armed timer fires once, and timers armed in one batch (the table growing meanwhile)
 * keep their timespecs until the kernel has read them. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../supervisor/sup.h"

/* The pieces of the supervisor timers.c uses: its ring and sup_sqe(). */
struct sup S;

struct io_uring_sqe *sup_sqe(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&S.ring);

    while (!sqe) {
        io_uring_submit(&S.ring);
        sqe = io_uring_get_sqe(&S.ring);
    }
    return sqe;
}

static struct session sess;
static int fired[4096];          /* fired[id]: times timer id fired */
static int cancels_done;

static void setup(void)
{
    cr_assert_eq(io_uring_queue_init(256, &S.ring, 0), 0);
    memset(&sess, 0, sizeof(sess));
    sess.slot = 7;
    memset(fired, 0, sizeof(fired));
    cancels_done = 0;
}

static void teardown(void)
{
    timers_free(&sess);
    io_uring_queue_exit(&S.ring);
}

TestSuite(timers_unit, .init = setup, .fini = teardown, .timeout = 20);

/* Run completions for up to ms, as the loop would; returns when nothing is in flight. */
static void run(int ms)
{
    struct __kernel_timespec ts = { 0, 10 * 1000000 };

    for (int waited = 0; waited < ms && sess.inflight; waited += 10) {
        struct io_uring_cqe *cqe;
        io_uring_submit(&S.ring);
        if (io_uring_wait_cqe_timeout(&S.ring, &cqe, &ts) != 0)
            continue;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&S.ring, head, cqe) {
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            n++;
            cr_assert_eq(UD_SLOT(ud), sess.slot);
            sess.inflight--;
            if (UD_OP(ud) == OP_TIMER_CANCEL) {
                cancels_done++;
                continue;
            }
            cr_assert_eq(UD_OP(ud), OP_TIMER);
            uint32_t idx;
            uint64_t id = timers_on_complete(&sess, UD_ARG(ud), cqe->res, &idx);
            if (id) {
                cr_assert_lt(id, 4096);
                fired[id]++;
                timers_done(&sess, idx);
            }
        }
        io_uring_cq_advance(&S.ring, n);
    }
}

Test(timers_unit, cancel_then_arm_in_the_same_batch_keeps_the_new_timer)
{
    cr_assert_eq(timers_arm(&sess, 1, 30), 0);
    io_uring_submit(&S.ring);
    timers_cancel(&sess, 1);
    cr_assert_eq(timers_arm(&sess, 2, 30), 0);   /* before the cancel is even submitted */
    run(2000);
    cr_assert_eq(fired[1], 0, "the cancelled timer fired");
    cr_assert_eq(fired[2], 1, "the new timer fired %d times", fired[2]);
    cr_assert_eq(timers_armed(&sess), 0);
}

Test(timers_unit, a_slot_is_reused_only_after_its_completion)
{
    cr_assert_eq(timers_arm(&sess, 1, 1000), 0);
    io_uring_submit(&S.ring);
    timers_cancel(&sess, 1);
    /* The cancelled slot's timeout has not completed: the next timer takes another slot,
     * so the pending remove (keyed by user_data) cannot hit it. */
    cr_assert_eq(timers_arm(&sess, 2, 20), 0);
    cr_assert_eq(timers_arm(&sess, 3, 20), 0);
    run(3000);
    cr_assert_eq(fired[2], 1);
    cr_assert_eq(fired[3], 1);
    cr_assert_eq(fired[1], 0);
    cr_assert_eq(cancels_done, 1);
}

Test(timers_unit, hundreds_armed_in_one_batch_each_fire_once)
{
    /* 300 timers across several blocks, none submitted until all are armed: every
     * timespec must still hold its delay when the kernel reads it. */
    for (uint64_t id = 1; id <= 300; id++)
        cr_assert_eq(timers_arm(&sess, id, 20 + id % 50), 0);
    cr_assert_eq(timers_armed(&sess), 300);
    run(5000);
    for (uint64_t id = 1; id <= 300; id++)
        cr_assert_eq(fired[id], 1, "timer %llu fired %d times", (unsigned long long)id, fired[id]);
    cr_assert_eq(timers_armed(&sess), 0);
}

Test(timers_unit, many_cancel_and_rearm_cycles)
{
    uint64_t id = 1;

    for (int cycle = 0; cycle < 200; cycle++) {
        cr_assert_eq(timers_arm(&sess, id, 500), 0);
        if (cycle % 3 == 0)
            io_uring_submit(&S.ring);
        timers_cancel(&sess, id);
        id++;
    }
    cr_assert_eq(timers_arm(&sess, id, 10), 0);
    run(5000);
    for (uint64_t k = 1; k < id; k++)
        cr_assert_eq(fired[k], 0, "cancelled timer %llu fired", (unsigned long long)k);
    cr_assert_eq(fired[id], 1);
}

Test(timers_unit, cancel_all_leaves_nothing_armed)
{
    for (uint64_t id = 1; id <= 100; id++)
        cr_assert_eq(timers_arm(&sess, id, 300), 0);
    io_uring_submit(&S.ring);
    timers_cancel_all(&sess);
    cr_assert_eq(timers_armed(&sess), 0);
    run(3000);
    for (uint64_t id = 1; id <= 100; id++)
        cr_assert_eq(fired[id], 0);
    cr_assert_eq(sess.inflight, 0, "every timeout and remove completed");
}

Test(timers_unit, retry_keeps_the_slot_until_it_fires)
{
    cr_assert_eq(timers_arm(&sess, 9, 10), 0);
    /* First completion: pretend the worker was behind, try again. */
    struct __kernel_timespec ts = { 2, 0 };
    struct io_uring_cqe *cqe;
    io_uring_submit(&S.ring);
    cr_assert_eq(io_uring_wait_cqe_timeout(&S.ring, &cqe, &ts), 0);
    uint32_t idx;
    cr_assert_eq(timers_on_complete(&sess, UD_ARG(io_uring_cqe_get_data64(cqe)), cqe->res, &idx), 9);
    io_uring_cqe_seen(&S.ring, cqe);
    sess.inflight--;
    timers_retry(&sess, idx);
    cr_assert_eq(timers_armed(&sess), 1);
    cr_assert_eq(timers_arm(&sess, 10, 10), 0);   /* must not take the retried slot */
    run(2000);
    cr_assert_eq(fired[9], 1);
    cr_assert_eq(fired[10], 1);
}
