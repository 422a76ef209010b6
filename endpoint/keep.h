/* keep.h - what an endpoint keeps so that a new edge can rebuild its session
 * (docs/protocol.md, "What endpoints keep"): the DATA frames it sent that no off-node
 * durable snapshot covers yet, the event order it received from position `order_base` on,
 * the last OUT number it received, and its epoch.
 *
 * A pure data structure: no I/O. SNAP_DURABLE frees (keep_durable); the caller stops
 * reading its program while keep_full() (nothing is ever dropped to make room). */
#ifndef CESSNA_KEEP_H
#define CESSNA_KEEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "order.h"

#define KEEP_MAX_DEFAULT (64u << 20)

struct keep {
    /* Whole DATA frames as sent (header, seq, payload), ascending seq, in msgs[off, off+len). */
    uint8_t *msgs;
    size_t msgs_off, msgs_len, msgs_cap;
    size_t nmsgs;
    /* Order entries: order[0] is at position order_base; order_next is the position the
     * next entry received takes (entries below order_base are skipped: already durable). */
    struct order_entry *order;
    size_t norder, order_cap;
    uint64_t order_base, order_next;
    uint64_t order_time;        /* absolute time of the last entry received */
    uint64_t last_out;
    uint64_t epoch;
    size_t max_bytes;           /* keep_full() at or past this */
};

void keep_init(struct keep *k, size_t max_bytes);
void keep_free(struct keep *k);

/* Bytes held (messages plus order entries). */
size_t keep_bytes(const struct keep *k);
bool   keep_full(const struct keep *k);

/* Keep a copy of a whole DATA frame (its seq must be above every kept one). 0 or -ENOMEM. */
int keep_put_data(struct keep *k, const void *frame, size_t len);
/* Append entries from an OUT's or ORDER's order bytes, decoded from the last entry's time.
 * 0, -EPROTO (nothing appended), -ENOMEM. */
int keep_put_order(struct keep *k, const uint8_t *order, size_t len);

/* SNAP_DURABLE: free the messages with seq <= seq and the order entries at positions
 * before position (the entry at position stays). */
void keep_durable(struct keep *k, uint64_t position, uint64_t seq);

/* Iterate kept DATA frames: start with *cursor = 0; 1 with (*frame, *len), 0 at the end. */
int keep_next_data(const struct keep *k, size_t *cursor, const uint8_t **frame, size_t *len);

/* Re-encode the kept order as ORDER frames (the first entry's delta is its absolute time),
 * each of whole entries and at most WIRE_ORDER_PIECE order bytes. emit is called per frame.
 * 0, or emit's first nonzero return. */
int keep_order_frames(const struct keep *k,
                      int (*emit)(void *arg, const uint8_t *frame, size_t len), void *arg);

#endif
