/* ring.h - a single-producer single-consumer ring of variable-length records, in memory
 * shared between the supervisor and one worker (DESIGN.md section 7).
 *
 * A record is an 8-byte header (u32 len, u16 type, u16 flags) and len bytes, padded to 8.
 * A record never wraps: when it does not fit before the end, a PAD record fills the rest.
 *
 * Sleeping and waking use two flags in the shared header and an eventfd per side, which
 * the caller owns: a consumer that finds the ring empty sets `consumer_sleeping`, checks
 * again (ring_sleep_prepare), and only then blocks on its doorbell; a producer rings the
 * doorbell after a batch only when ring_wants_wakeup() says the consumer sleeps. The
 * same pattern covers a producer waiting for space (`producer_waiting`). */
#ifndef CESSNA_RING_H
#define CESSNA_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct ring_shared {
    _Atomic uint64_t tail;              /* bytes ever produced; written by the producer */
    char pad0[56];
    _Atomic uint64_t head;              /* bytes ever consumed; written by the consumer */
    char pad1[56];
    _Atomic uint32_t consumer_sleeping;
    _Atomic uint32_t producer_waiting;
    uint32_t size;                      /* data bytes, a power of two */
    uint32_t magic;
    char pad2[48];
};

struct ring {
    struct ring_shared *sh;
    uint8_t *data;
    uint32_t size;
    uint64_t reserved_at;   /* producer: offset of the record being written */
    uint32_t reserved_len;
    uint64_t chead;         /* consumer: its own copy of head (the shared one is only
                             * published, never read back: the producer may scribble it) */
    uint32_t peeked_space;  /* consumer: bytes of the record ring_peek returned */
    const char *broken;     /* consumer: why the other side's indexes or records make no
                             * sense (then ring_peek returns NULL for good) */
};

#define RING_HDR_LEN 8u
#define RING_PAD     0     /* record type reserved for padding */

/* Bytes of shared memory for a ring holding `size` data bytes (size: power of two). */
size_t ring_mem_size(uint32_t size);
/* Format shared memory (done once, by the supervisor). */
void ring_format(void *mem, uint32_t size);
/* Attach to formatted memory. 0, or -EINVAL if it is not a ring. */
int ring_attach(struct ring *r, void *mem);

/* The largest record payload a ring of this size accepts. */
uint32_t ring_max_payload(const struct ring *r);

/* Producer: room for a record of `len` bytes of type `type` (> 0). Returns where to write
 * the payload, or NULL when the ring is full now (or len > ring_max_payload). */
void *ring_reserve(struct ring *r, uint16_t type, uint32_t len);
/* Producer: publish the record from the last ring_reserve. */
void ring_commit(struct ring *r);

/* Consumer: the oldest record, or NULL when empty. The producer is not trusted: indexes
 * and lengths are checked, and a ring that breaks them sets r->broken (NULL from then on).
 * The payload stays in shared memory: copy what must not change while you use it. */
const void *ring_peek(struct ring *r, uint16_t *type, uint32_t *len);
/* Consumer: release the record returned by ring_peek. */
void ring_pop(struct ring *r);

/* Consumer: nothing to read. */
int ring_empty(const struct ring *r);

/* Consumer about to block: sets consumer_sleeping; returns 1 when it may block (still
 * empty), 0 when a record arrived meanwhile (the flag is cleared again). */
int ring_sleep_prepare(struct ring *r);
void ring_sleep_done(struct ring *r);
/* Producer after a batch: 1 when the consumer sleeps and needs its doorbell rung
 * (the flag is cleared, so one ring per sleep). */
int ring_wants_wakeup(struct ring *r);

/* Producer finding the ring full: marks itself waiting; returns 1 when it may block (still
 * no room for len), 0 when room appeared. The consumer calls ring_producer_waits() after
 * popping, and rings the producer's doorbell when it returns 1. */
int ring_wait_prepare(struct ring *r, uint32_t len);
int ring_producer_waits(struct ring *r);

#endif
