/* ring.h - a single-producer single-consumer ring of variable-length records, in memory
 * shared between the supervisor and one worker (DESIGN.md section 7).
 *
 * A record is an 8-byte header (u32 len, u16 type, u16 flags) and len bytes, padded to 8.
 * A record never wraps: when it does not fit before the end, a PAD record fills the rest.
 *
 * Long records. A record whose payload is larger than ring_max_payload crosses as pieces:
 * consecutive ring records of its type, the first flagged RING_F_FIRST and carrying the
 * whole payload's length (u64) before its first bytes, the others flagged RING_F_CONT. So
 * the ring's size need not grow with the largest record (ring_put writes them,
 * struct ring_asm puts them back together and checks that the pieces add up).
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
    uint16_t peeked_flags;  /* consumer: the flags of that record (RING_F_*) */
    const char *broken;     /* consumer: why the other side's indexes or records make no
                             * sense (then ring_peek returns NULL for good) */
};

#define RING_HDR_LEN 8u
#define RING_PAD     0     /* record type reserved for padding */

#define RING_F_FIRST 0x1u  /* first piece of a long record: u64 total length, then bytes */
#define RING_F_CONT  0x2u  /* a later piece: bytes only */
#define RING_PIECE_HDR 8u  /* the u64 total length at the start of a first piece */

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

/* Producer: write a record of hlen + blen payload bytes (head, then body): as one record
 * when it fits ring_max_payload, else in pieces. *done counts the payload bytes written so
 * far (0 to start). Writes what fits; returns 1 when the record is complete (*done is 0
 * again), 0 when the ring is full (call again with the same arguments once there is room:
 * ring_put_need says how much). */
int ring_put(struct ring *r, uint16_t type, const void *head, uint32_t hlen,
             const void *body, uint32_t blen, uint32_t *done);
/* The payload length of the next ring record ring_put writes for this record. */
uint32_t ring_put_need(const struct ring *r, uint64_t total, uint32_t done);

/* Consumer: the oldest record, or NULL when empty. The producer is not trusted: indexes
 * and lengths are checked, and a ring that breaks them sets r->broken (NULL from then on).
 * The payload stays in shared memory: copy what must not change while you use it. */
const void *ring_peek(struct ring *r, uint16_t *type, uint32_t *len);
/* Consumer: release the record returned by ring_peek. */
void ring_pop(struct ring *r);
/* Consumer: whether a record of this type waits anywhere in the ring, looked for without
 * taking anything (0 too for a ring whose indexes or lengths are out of range). For a ring
 * whose producer is gone: another may still be writing. */
int ring_holds_type(const struct ring *r, uint16_t type);

/* Consumer: putting long records back together. The pieces are copied into a buffer of
 * the process's own (mmap, outside any allocator: in a worker it must not touch the arena;
 * not inherited by children), released after each long record, so memory goes back once
 * the record is handled. */
struct ring_asm {
    uint8_t *buf;       /* NULL, or the record being assembled (cap bytes mapped) */
    size_t cap;
    uint32_t total;     /* its payload length, from the first piece */
    uint32_t have;      /* bytes received so far */
    uint16_t type;
    const char *err;    /* why the last ring_asm_take failed */
};
/* Take the record ring_peek returned (type, its flags r->peeked_flags, payload p of len
 * bytes). Returns 1 with *out, *outlen the whole record: p itself for a record in one
 * piece, else the assembled buffer (valid until ring_asm_reset, which the caller calls
 * once it is done with it). Returns 0 for a piece with more to come (pop it, peek again),
 * -EPROTO when the pieces do not add up (a->err says how; the partial record is dropped),
 * -ENOMEM. A long record longer than max is refused before anything is allocated. */
int ring_asm_take(struct ring_asm *a, uint16_t type, uint16_t flags, const void *p,
                  uint32_t len, uint32_t max, const void **out, uint32_t *outlen);
/* The bytes of a partial record (NULL when none is under way); *have gets their count. */
const void *ring_asm_partial(const struct ring_asm *a, uint32_t *have);
/* Drop the record being assembled (or the one just completed) and its memory. */
void ring_asm_reset(struct ring_asm *a);
/* In a child forked while a record was being assembled: the buffer is not mapped here
 * (MADV_DONTFORK), so only the state goes. */
void ring_asm_forget(struct ring_asm *a);

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
/* The same, but only once at most half the ring is in use, for a consumer that calls it
 * after every pop and pops until the ring is empty: a producer waiting on a full ring is
 * woken once per half ring, not once per record. */
int ring_producer_waits_half(struct ring *r);

#endif
