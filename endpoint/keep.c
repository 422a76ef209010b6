/* keep.c - see keep.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "keep.h"
#include "wire.h"

void keep_init(struct keep *k, size_t max_bytes)
{
    memset(k, 0, sizeof(*k));
    k->order_base = k->order_next = 1;   /* event positions start at 1 */
    k->max_bytes = max_bytes ? max_bytes : KEEP_MAX_DEFAULT;
}

void keep_free(struct keep *k)
{
    free(k->msgs);
    free(k->order);
    memset(k, 0, sizeof(*k));
}

size_t keep_bytes(const struct keep *k)
{
    return k->msgs_len + k->norder * sizeof(struct order_entry);
}

bool keep_full(const struct keep *k)
{
    return keep_bytes(k) >= k->max_bytes;
}

int keep_put_data(struct keep *k, const void *frame, size_t len)
{
    if (k->msgs_cap - k->msgs_off - k->msgs_len < len) {
        if (k->msgs_off) {   /* freed space at the front first */
            memmove(k->msgs, k->msgs + k->msgs_off, k->msgs_len);
            k->msgs_off = 0;
        }
        if (k->msgs_cap - k->msgs_len < len) {
            size_t cap = k->msgs_cap ? k->msgs_cap : 64u << 10;
            while (cap - k->msgs_len < len)
                cap *= 2;
            uint8_t *p = realloc(k->msgs, cap);
            if (!p)
                return -ENOMEM;
            k->msgs = p;
            k->msgs_cap = cap;
        }
    }
    memcpy(k->msgs + k->msgs_off + k->msgs_len, frame, len);
    k->msgs_len += len;
    k->nmsgs++;
    return 0;
}

int keep_put_order(struct keep *k, const uint8_t *order, size_t len)
{
    struct order_entry e;
    uint64_t t = k->order_time;
    size_t off = 0, n = 0;

    while (off < len) {   /* count and check first: nothing is appended from a bad frame */
        if (order_decode(order, len, &off, &e, &t) < 0)
            return -EPROTO;
        n++;
    }
    if (k->norder + n > k->order_cap) {
        size_t cap = k->order_cap ? k->order_cap : 256;
        while (cap < k->norder + n)
            cap *= 2;
        struct order_entry *p = realloc(k->order, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        k->order = p;
        k->order_cap = cap;
    }
    off = 0;
    while (off < len) {
        order_decode(order, len, &off, &e, &k->order_time);
        if (k->order_next++ >= k->order_base)   /* else durable already: not kept */
            k->order[k->norder++] = e;
    }
    return 0;
}

static uint64_t frame_seq(const uint8_t *p)
{
    return wire_get64(p + WIRE_HDR_LEN);
}

static size_t frame_len(const uint8_t *p)
{
    return WIRE_HDR_LEN + wire_get32(p + 8);
}

void keep_durable(struct keep *k, uint64_t position, uint64_t seq)
{
    while (k->msgs_len && frame_seq(k->msgs + k->msgs_off) <= seq) {
        size_t n = frame_len(k->msgs + k->msgs_off);
        k->msgs_off += n;
        k->msgs_len -= n;
        k->nmsgs--;
    }
    if (!k->msgs_len)
        k->msgs_off = 0;
    /* The entry at position itself stays: the next entry's time is a delta from it, and
     * a new edge needs that time to continue the order (docs/protocol.md). */
    if (position <= k->order_base)
        return;
    uint64_t drop = position - k->order_base;
    if (drop >= k->norder) {
        k->norder = 0;   /* entries before position that have not arrived yet are skipped */
    } else {
        memmove(k->order, k->order + drop, (k->norder - drop) * sizeof(*k->order));
        k->norder -= drop;
    }
    k->order_base = position;
}

int keep_next_data(const struct keep *k, size_t *cursor, const uint8_t **frame, size_t *len)
{
    if (*cursor >= k->msgs_len)
        return 0;
    *frame = k->msgs + k->msgs_off + *cursor;
    *len = frame_len(*frame);
    *cursor += *len;
    return 1;
}

int keep_order_frames(const struct keep *k,
                      int (*emit)(void *arg, const uint8_t *frame, size_t len), void *arg)
{
    uint8_t frame[WIRE_HDR_LEN + WIRE_ORDER_PIECE];
    uint64_t prev = 0;
    size_t used = 0;
    int rc;

    for (size_t i = 0; i < k->norder; i++) {
        uint8_t one[ORDER_ENTRY_MAX];
        uint64_t t = prev;
        size_t n = order_encode(one, &k->order[i], &t);
        if (used + n > WIRE_ORDER_PIECE) {
            wire_put_hdr(frame, WIRE_ORDER, (uint32_t)used);
            if ((rc = emit(arg, frame, WIRE_HDR_LEN + used)) != 0)
                return rc;
            used = 0;
        }
        memcpy(frame + WIRE_HDR_LEN + used, one, n);
        used += n;
        prev = t;
    }
    if (used) {
        wire_put_hdr(frame, WIRE_ORDER, (uint32_t)used);
        return emit(arg, frame, WIRE_HDR_LEN + used);
    }
    return 0;
}
