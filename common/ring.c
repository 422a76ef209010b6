/* ring.c - see ring.h. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "ring.h"

#define RING_MAGIC 0x52494e47u /* "RING" */

static inline uint32_t rec_space(uint32_t len)
{
    return (RING_HDR_LEN + len + 7u) & ~7u;
}

/* The record header at position at (head <= at < tail), checked against the ring's bounds:
 * NULL and its type, length and space, or what is wrong with it. The producer is not
 * trusted. */
static inline const char *rec_header(const struct ring *r, uint64_t at, uint64_t tail,
                                     uint16_t *type, uint32_t *len, uint32_t *space)
{
    uint32_t off = (uint32_t)(at & (r->size - 1)), to_end = r->size - off;
    const uint8_t *p = r->data + off;

    if ((off & 7) || to_end < RING_HDR_LEN)
        return "ring indexes out of range";
    memcpy(len, p, 4);
    memcpy(type, p + 4, 2);
    *space = *len <= r->size ? rec_space(*len) : 0;
    if (!*space || *space > to_end || *space > tail - at)
        return "record length out of range";
    if (*type == RING_PAD && *space != to_end)
        return "padding record that does not end at the ring's end";
    return NULL;
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

static void put_hdr(uint8_t *p, uint32_t len, uint16_t type, uint16_t flags)
{
    memcpy(p, &len, 4);
    memcpy(p + 4, &type, 2);
    memcpy(p + 6, &flags, 2);
}

static void *reserve(struct ring *r, uint16_t type, uint16_t flags, uint32_t len)
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
        put_hdr(r->data + off, to_end - RING_HDR_LEN, RING_PAD, 0);
        tail += pad;
        atomic_store_explicit(&r->sh->tail, tail, memory_order_release);
        off = 0;
    }
    put_hdr(r->data + off, len, type, flags);
    r->reserved_at = tail;
    r->reserved_len = need;
    return r->data + off + RING_HDR_LEN;
}

void *ring_reserve(struct ring *r, uint16_t type, uint32_t len)
{
    return reserve(r, type, 0, len);
}

void ring_commit(struct ring *r)
{
    atomic_store_explicit(&r->sh->tail, r->reserved_at + r->reserved_len, memory_order_release);
}

/* Pieces are at most a quarter of the ring, so a few are in flight at once: the consumer
 * takes one while the producer writes the next. */
static uint32_t piece_max(const struct ring *r)
{
    return (ring_max_payload(r) / 2) & ~7u;
}

uint32_t ring_put_need(const struct ring *r, uint64_t total, uint32_t done)
{
    uint64_t rest;

    if (total <= ring_max_payload(r))
        return (uint32_t)total;
    rest = total - done + (done ? 0 : RING_PIECE_HDR);
    return rest < piece_max(r) ? (uint32_t)rest : piece_max(r);
}

/* Bytes [off, off + n) of head followed by body. */
static void copy_range(uint8_t *dst, const void *head, uint32_t hlen, const void *body,
                       uint32_t off, uint32_t n)
{
    if (off < hlen) {
        uint32_t k = hlen - off < n ? hlen - off : n;
        memcpy(dst, (const uint8_t *)head + off, k);
        dst += k;
        off += k;
        n -= k;
    }
    if (n)
        memcpy(dst, (const uint8_t *)body + (off - hlen), n);
}

int ring_put(struct ring *r, uint16_t type, const void *head, uint32_t hlen,
             const void *body, uint32_t blen, uint32_t *done)
{
    uint64_t total = (uint64_t)hlen + blen;
    uint8_t *dst;

    if (total <= ring_max_payload(r)) {
        if (!(dst = reserve(r, type, 0, (uint32_t)total)))
            return 0;
        copy_range(dst, head, hlen, body, 0, (uint32_t)total);
        ring_commit(r);
        return 1;
    }
    while (*done < total) {
        uint32_t n = ring_put_need(r, total, *done);
        if (!(dst = reserve(r, type, *done ? RING_F_CONT : RING_F_FIRST, n)))
            return 0;
        if (!*done) {
            memcpy(dst, &total, RING_PIECE_HDR);
            dst += RING_PIECE_HDR;
            n -= RING_PIECE_HDR;
        }
        copy_range(dst, head, hlen, body, *done, n);
        ring_commit(r);
        *done += n;
    }
    *done = 0;
    return 1;
}

const void *ring_peek(struct ring *r, uint16_t *type, uint32_t *len)
{
    while (!r->broken) {
        uint64_t head = r->chead;
        uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_acquire);
        uint32_t space;
        uint16_t t;

        if (head == tail)
            return NULL;
        if (tail - head > r->size) {
            r->broken = "ring indexes out of range";
            return NULL;
        }
        if ((r->broken = rec_header(r, head, tail, &t, len, &space)))
            return NULL;
        if (t == RING_PAD) {
            r->chead = head + space;
            atomic_store_explicit(&r->sh->head, r->chead, memory_order_release);
            continue;
        }
        const uint8_t *p = r->data + (head & (r->size - 1));
        *type = t;
        memcpy(&r->peeked_flags, p + 6, 2);
        r->peeked_space = space;
        return p + RING_HDR_LEN;
    }
    return NULL;
}

int ring_holds_type(const struct ring *r, uint16_t type)
{
    uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_acquire);

    if (r->broken || tail - r->chead > r->size)
        return 0;
    for (uint64_t at = r->chead; at != tail;) {
        uint32_t len, space;
        uint16_t t;

        if (rec_header(r, at, tail, &t, &len, &space))
            return 0;
        if (t == type)
            return 1;
        at += space;
    }
    return 0;
}

void ring_pop(struct ring *r)
{
    /* the length checked by ring_peek, not whatever the producer wrote since */
    r->chead += r->peeked_space;
    atomic_store_explicit(&r->sh->head, r->chead, memory_order_release);
    r->peeked_space = 0;
}

/* ---- long records, consumer side ---- */

void ring_asm_reset(struct ring_asm *a)
{
    if (a->buf)
        munmap(a->buf, a->cap);
    a->buf = NULL;
    a->cap = 0;
    a->total = a->have = 0;
    a->type = 0;
}

void ring_asm_forget(struct ring_asm *a)
{
    memset(a, 0, sizeof(*a));
}

static int asm_fail(struct ring_asm *a, const char *why)
{
    ring_asm_reset(a);
    a->err = why;
    return -EPROTO;
}

int ring_asm_take(struct ring_asm *a, uint16_t type, uint16_t flags, const void *p,
                  uint32_t len, uint32_t max, const void **out, uint32_t *outlen)
{
    uint64_t total;

    if (a->buf && !a->total)
        ring_asm_reset(a);   /* the last long record, handled */
    if (flags & ~(RING_F_FIRST | RING_F_CONT))
        return asm_fail(a, "record with unknown flags");
    if (!a->total) {
        if (!flags) {
            *out = p;
            *outlen = len;
            return 1;
        }
        if (flags != RING_F_FIRST)
            return asm_fail(a, "continuation piece without a first piece");
        if (len < RING_PIECE_HDR)
            return asm_fail(a, "first piece shorter than its length field");
        memcpy(&total, p, RING_PIECE_HDR);
        if (total > max)
            return asm_fail(a, "long record over the size limit");
        if (total <= len - RING_PIECE_HDR)
            return asm_fail(a, "long record that fits its first piece");
        a->buf = mmap(NULL, total, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (a->buf == MAP_FAILED) {
            a->buf = NULL;
            a->err = "no memory for a long record";
            return -ENOMEM;
        }
        /* A child forked meanwhile (a snapshot, a hot standby) must not keep a copy. */
        madvise(a->buf, total, MADV_DONTFORK);
        a->cap = total;
        a->total = (uint32_t)total;
        a->type = type;
        a->have = len - RING_PIECE_HDR;
        memcpy(a->buf, (const uint8_t *)p + RING_PIECE_HDR, a->have);
        return 0;
    }
    if (flags != RING_F_CONT)
        return asm_fail(a, "another record in the middle of a long record");
    if (type != a->type)
        return asm_fail(a, "piece of another type in the middle of a long record");
    if (!len || len > a->total - a->have)
        return asm_fail(a, "piece that does not fit the long record's length");
    memcpy(a->buf + a->have, p, len);
    a->have += len;
    if (a->have < a->total)
        return 0;
    *out = a->buf;
    *outlen = a->total;
    a->total = a->have = 0;   /* complete: the buffer stays until reset or the next take */
    return 1;
}

const void *ring_asm_partial(const struct ring_asm *a, uint32_t *have)
{
    *have = a->total ? a->have : 0;
    return a->total ? a->buf : NULL;
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

int ring_producer_waits_half(struct ring *r)
{
    uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_acquire);

    if (tail - r->chead > r->size / 2)
        return 0;   /* a later pop (at the latest the one that empties the ring) says it */
    return ring_producer_waits(r);
}
