/* order.h - the session's event order, as piggybacked on OUT frames (DESIGN.md 2.5).
 *
 * The order is a sequence of entries, one per event position 1, 2, 3, ...; client and
 * server events are consumed in sequence-number order, so the source alone says which
 * message came: the k-th CLIENT entry is client message seq k. Entry encoding:
 *
 *   u8 src, varint time_delta_ms (from the previous entry; the first from 0),
 *   for TIMER entries varint timer_id, for START entries varint app_hash (in timer_id) (the hash of the
 *   [app] values the session started with, appcfg.h; 0: none).
 *
 * Each OUT frame carries the entries that its destination has not seen yet, up to the
 * event that produced the output, so each endpoint holds a prefix of the order. */
#ifndef CESSNA_ORDER_H
#define CESSNA_ORDER_H

#include <stddef.h>
#include <stdint.h>

enum order_src {
    ORDER_START = 1,        /* session start: init() and accept_client_connection() */
    ORDER_CLIENT = 2,       /* the next client message */
    ORDER_SERVER = 3,       /* the next server message */
    ORDER_TIMER = 4,        /* a timer fired */
    ORDER_CLOSE_CLIENT = 5, /* the client closed */
    ORDER_CLOSE_SERVER = 6, /* the server closed */
};

struct order_entry {
    uint8_t  src;
    uint64_t time_ms;
    uint64_t timer_id;  /* TIMER: the timer's id; START: the app_hash (appcfg.h); else 0 */
};

#define ORDER_ENTRY_MAX 21  /* 1 + 10 + 10 */

/* Append e to buf; *prev_time is the previous entry's time (updated). Returns bytes written. */
size_t order_encode(uint8_t *buf, const struct order_entry *e, uint64_t *prev_time);

/* Decode the entry at buf[*off]; advances *off. 0, or -EPROTO (bad source, truncated
 * varint, time going backwards cannot happen: deltas are unsigned). */
int order_decode(const uint8_t *buf, size_t len, size_t *off, struct order_entry *e,
                 uint64_t *prev_time);

/* LEB128 varints, shared with other codecs. */
size_t varint_put(uint8_t *buf, uint64_t v);
int varint_get(const uint8_t *buf, size_t len, size_t *off, uint64_t *v);

#endif
