/* ring.c - see ring.h. */
#include <errno.h>
#include <string.h>

#include "ring.h"

#define RING_MAGIC 0x52494e47u /* "RING" */

static inline uint32_t rec_space(uint32_t len)
{
    return (RING_HDR_LEN + len + 7u) & ~7u;
}

size_t ring_mem_size(uint32_t size)
{
    return sizeof(struct ring_shared) + size;
}

void ring_format(void *mem, uint32_t size)
{
    struct ring_shared *sh = mem;

    memset(sh, 0, sizeof(*sh));
    sh->size = size;
    sh->magic = RING_MAGIC;
}

int ring_attach(struct ring *r, void *mem)
{
    struct ring_shared *sh = mem;

    if (sh->magic != RING_MAGIC || sh->size < 64 || (sh->size & (sh->size - 1)))
        return -EINVAL;
    memset(r, 0, sizeof(*r));
    r->sh = sh;
    r->data = (uint8_t *)mem + sizeof(*sh);
    r->size = sh->size;
    r->chead = atomic_load_explicit(&sh->head, memory_order_acquire);
    return 0;
}

uint32_t ring_max_payload(const struct ring *r)
{
    /* Worst case a record needs its space plus padding up to the end: keep it below half. */
    return r->size / 2 - RING_HDR_LEN;
}

static void put_hdr(uint8_t *p, uint32_t len, uint16_t type)
{
    memcpy(p, &len, 4);
    memcpy(p + 4, &type, 2);
    memset(p + 6, 0, 2);
}

void *ring_reserve(struct ring *r, uint16_t type, uint32_t len)
{
    uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->sh->head, memory_order_acquire);
    uint32_t need = rec_space(len);
    uint32_t off = (uint32_t)(tail & (r->size - 1));
    uint32_t to_end = r->size - off;
    uint32_t pad = need > to_end ? to_end : 0;

    if (len > ring_max_payload(r))
        return NULL;
    if (tail + pad + need - head > r->size)
        return NULL;
    if (pad) {
        /* Fill to the end with a PAD record and publish it; the record starts at 0. */
        put_hdr(r->data + off, to_end - RING_HDR_LEN, RING_PAD);
        tail += pad;
        atomic_store_explicit(&r->sh->tail, tail, memory_order_release);
        off = 0;
    }
    put_hdr(r->data + off, len, type);
    r->reserved_at = tail;
    r->reserved_len = need;
    return r->data + off + RING_HDR_LEN;
}

void ring_commit(struct ring *r)
{
    atomic_store_explicit(&r->sh->tail, r->reserved_at + r->reserved_len, memory_order_release);
}

const void *ring_peek(struct ring *r, uint16_t *type, uint32_t *len)
{
    while (!r->broken) {
        uint64_t head = r->chead;
        uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_acquire);
        uint32_t off = (uint32_t)(head & (r->size - 1)), to_end = r->size - off, space;
        const uint8_t *p;
        uint16_t t;

        if (head == tail)
            return NULL;
        if (tail - head > r->size || (off & 7) || to_end < RING_HDR_LEN) {
            r->broken = "ring indexes out of range";
            return NULL;
        }
        p = r->data + off;
        memcpy(len, p, 4);
        memcpy(&t, p + 4, 2);
        space = *len <= r->size ? rec_space(*len) : 0;
        if (!space || space > to_end || space > tail - head) {
            r->broken = "record length out of range";
            return NULL;
        }
        if (t == RING_PAD) {
            if (space != to_end) {
                r->broken = "padding record that does not end at the ring's end";
                return NULL;
            }
            r->chead = head + space;
            atomic_store_explicit(&r->sh->head, r->chead, memory_order_release);
            continue;
        }
        *type = t;
        r->peeked_space = space;
        return p + RING_HDR_LEN;
    }
    return NULL;
}

void ring_pop(struct ring *r)
{
    /* the length checked by ring_peek, not whatever the producer wrote since */
    r->chead += r->peeked_space;
    atomic_store_explicit(&r->sh->head, r->chead, memory_order_release);
    r->peeked_space = 0;
}

int ring_empty(const struct ring *r)
{
    return r->chead == atomic_load_explicit(&r->sh->tail, memory_order_acquire);
}

int ring_sleep_prepare(struct ring *r)
{
    atomic_store(&r->sh->consumer_sleeping, 1);
    atomic_thread_fence(memory_order_seq_cst);
    if (!ring_empty(r)) {
        atomic_store(&r->sh->consumer_sleeping, 0);
        return 0;
    }
    return 1;
}

void ring_sleep_done(struct ring *r)
{
    atomic_store_explicit(&r->sh->consumer_sleeping, 0, memory_order_relaxed);
}

int ring_wants_wakeup(struct ring *r)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (!atomic_load_explicit(&r->sh->consumer_sleeping, memory_order_relaxed))
        return 0;
    return atomic_exchange(&r->sh->consumer_sleeping, 0) == 1;
}

static int has_room(struct ring *r, uint32_t len)
{
    uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->sh->head, memory_order_acquire);
    uint32_t need = rec_space(len);
    uint32_t to_end = r->size - (uint32_t)(tail & (r->size - 1));
    uint32_t pad = need > to_end ? to_end : 0;

    return tail + pad + need - head <= r->size;
}

int ring_wait_prepare(struct ring *r, uint32_t len)
{
    atomic_store(&r->sh->producer_waiting, 1);
    atomic_thread_fence(memory_order_seq_cst);
    if (has_room(r, len)) {
        atomic_store(&r->sh->producer_waiting, 0);
        return 0;
    }
    return 1;
}

int ring_producer_waits(struct ring *r)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (!atomic_load_explicit(&r->sh->producer_waiting, memory_order_relaxed))
        return 0;
    return atomic_exchange(&r->sh->producer_waiting, 0) == 1;
}
