/* timers.c - see timers.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sup.h"
#include "timers.h"

static struct stimer *slot_at(const struct timers *t, uint32_t idx)
{
    return &t->blocks[idx / TIMER_BLOCK][idx % TIMER_BLOCK];
}

static uint32_t nslots(const struct timers *t)
{
    return t->nblocks * TIMER_BLOCK;
}

/* A slot whose last timeout has completed, growing by a block when none is. */
static int slot_get(struct timers *t, uint32_t *idx)
{
    for (uint32_t i = 0; i < nslots(t); i++) {
        struct stimer *st = slot_at(t, i);
        if (!st->id && !st->in_kernel) {
            *idx = i;
            return 0;
        }
    }
    if (nslots(t) + TIMER_BLOCK > TIMER_MAX_SLOTS)
        return -ENOSPC;
    struct stimer **b = realloc(t->blocks, (t->nblocks + 1) * sizeof(*b));
    if (!b)
        return -ENOMEM;
    t->blocks = b;
    b[t->nblocks] = calloc(TIMER_BLOCK, sizeof(struct stimer));
    if (!b[t->nblocks])
        return -ENOMEM;
    *idx = t->nblocks++ * TIMER_BLOCK;
    return 0;
}

static void submit_timeout(struct session *s, uint32_t idx, uint64_t delay_ms)
{
    struct stimer *st = slot_at(&s->timers, idx);
    struct io_uring_sqe *sqe = sup_sqe();

    st->ts.tv_sec = (long long)(delay_ms / 1000);
    st->ts.tv_nsec = (long long)(delay_ms % 1000) * 1000000;
    st->in_kernel = 1;
    io_uring_prep_timeout(sqe, &st->ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_TIMER, s->slot, TIMER_ARG(idx, st->gen)));
    s->inflight++;
}

int timers_arm(struct session *s, uint64_t id, uint64_t delay_ms)
{
    uint32_t idx;
    int rc = slot_get(&s->timers, &idx);

    if (rc < 0)
        return rc;
    struct stimer *st = slot_at(&s->timers, idx);
    st->id = id;
    st->gen++;
    submit_timeout(s, idx, delay_ms);
    return 0;
}

int timers_has(const struct session *s, uint64_t id)
{
    for (uint32_t i = 0; i < nslots(&s->timers); i++)
        if (slot_at(&s->timers, i)->id == id)
            return 1;
    return 0;
}

void timers_cancel(struct session *s, uint64_t id)
{
    for (uint32_t i = 0; i < nslots(&s->timers); i++) {
        struct stimer *st = slot_at(&s->timers, i);
        if (st->id != id)
            continue;
        st->id = 0;   /* its completion, whenever it comes, only frees the slot */
        if (st->in_kernel) {
            struct io_uring_sqe *sqe = sup_sqe();
            io_uring_prep_timeout_remove(sqe, UD(OP_TIMER, s->slot, TIMER_ARG(i, st->gen)), 0);
            io_uring_sqe_set_data64(sqe, UD(OP_TIMER_CANCEL, s->slot, 0));
            s->inflight++;
        }
        return;
    }
}

void timers_cancel_all(struct session *s)
{
    for (uint32_t i = 0; i < nslots(&s->timers); i++)
        if (slot_at(&s->timers, i)->id)
            timers_cancel(s, slot_at(&s->timers, i)->id);
}

uint64_t timers_on_complete(struct session *s, uint32_t arg, int res, uint32_t *idx)
{
    uint32_t i = TIMER_ARG_IDX(arg);

    if (i >= nslots(&s->timers))
        return 0;
    struct stimer *st = slot_at(&s->timers, i);
    if (TIMER_ARG_GEN(arg) != st->gen)
        return 0;   /* cannot happen: a slot is not reused before its completion */
    st->in_kernel = 0;
    if (!st->id)
        return 0;   /* cancelled */
    if (res != -ETIME) {
        st->id = 0;
        return 0;
    }
    *idx = i;
    return st->id;
}

void timers_done(struct session *s, uint32_t idx)
{
    slot_at(&s->timers, idx)->id = 0;
}

void timers_retry(struct session *s, uint32_t idx)
{
    submit_timeout(s, idx, 1);
}

uint32_t timers_armed(const struct session *s)
{
    uint32_t n = 0;

    for (uint32_t i = 0; i < nslots(&s->timers); i++)
        n += slot_at(&s->timers, i)->id != 0;
    return n;
}

void timers_free(struct session *s)
{
    for (uint32_t b = 0; b < s->timers.nblocks; b++)
        free(s->timers.blocks[b]);
    free(s->timers.blocks);
    memset(&s->timers, 0, sizeof(s->timers));
}
