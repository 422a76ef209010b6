/* evstore.h - a session's events since its last durable snapshot, in order, with their
 * payloads (DESIGN.md 2.4: nothing forgotten early). The worker's input ring is fed from
 * here, so live events and replay after a recovery take the same path.
 *
 * Records are laid out as in the rings: u32 len, u16 type, u16 0, then struct shm_rec and
 * the message bytes, padded to 8. Positions are consecutive from `first`. A record larger
 * than the ring's records goes into the ring in pieces (ring_put); `fed_part` says how
 * much of the record at `fed` is in the ring already. */
#ifndef CESSNA_EVSTORE_H
#define CESSNA_EVSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "ring.h"
#include "shm.h"

#define EVREC_HDR 8u

/* Bytes a record with a payload of len bytes takes (header, shm_rec, payload, padding). */
static inline size_t evrec_space(size_t len)
{
    return (EVREC_HDR + sizeof(struct shm_rec) + len + 7u) & ~(size_t)7u;
}
/* Encode a record at dst (evrec_space(len) bytes). */
void evrec_put(uint8_t *dst, uint16_t type, const struct shm_rec *rec, const void *data,
               size_t len);

struct evstore {
    uint8_t *buf;
    size_t len, cap;
    uint64_t first;     /* position of the first record held (1 at the start) */
    uint64_t count;     /* records held */
    size_t fed;         /* bytes of whole records already handed to the worker's ring */
    uint32_t fed_part;  /* payload bytes of the record at fed handed over as pieces */
};

/* Append an event; its shm_rec is filled from rec, payload copied. 0 or -ENOMEM. */
int  evstore_append(struct evstore *e, uint16_t type, const struct shm_rec *rec,
                    const void *data, size_t len);
/* Copy records into the ring while it has room, in pieces where they are larger than a
 * ring record. Returns how many ring records were written (0: nothing new for the worker). */
unsigned evstore_feed(struct evstore *e, struct ring *r);
/* Bytes held (what a durable snapshot would free). */
static inline size_t evstore_bytes(const struct evstore *e) { return e->len; }
/* Bytes appended but not yet fed. */
static inline size_t evstore_unfed(const struct evstore *e)
{
    return e->len - e->fed - e->fed_part;
}
/* Feed again from the first event after position p (after a recovery), whole: a record
 * the old worker got only pieces of starts over. 0, or -ENOENT when p + 1 is no longer held. */
int  evstore_rewind(struct evstore *e, uint64_t p);
/* Drop the events up to position p (a snapshot at p is durable). */
void evstore_drop_through(struct evstore *e, uint64_t p);
void evstore_free(struct evstore *e);

#endif
