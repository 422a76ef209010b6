/* order.c - encode and decode the piggybacked event order (order.h). */
#include <errno.h>

#include "order.h"

size_t varint_put(uint8_t *buf, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        buf[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    buf[n++] = (uint8_t)v;
    return n;
}

int varint_get(const uint8_t *buf, size_t len, size_t *off, uint64_t *v)
{
    uint64_t x = 0;
    size_t i = *off;

    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (i >= len)
            return -EPROTO;
        uint8_t b = buf[i++];
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *off = i;
            *v = x;
            return 0;
        }
    }
    return -EPROTO;
}

size_t order_encode(uint8_t *buf, const struct order_entry *e, uint64_t *prev_time)
{
    size_t n = 0;

    buf[n++] = e->src;
    n += varint_put(buf + n, e->time_ms - *prev_time);
    *prev_time = e->time_ms;
    if (e->src == ORDER_TIMER || e->src == ORDER_START)
        n += varint_put(buf + n, e->timer_id);
    return n;
}

int order_decode(const uint8_t *buf, size_t len, size_t *off, struct order_entry *e,
                 uint64_t *prev_time)
{
    size_t i = *off;
    uint64_t delta;

    if (i >= len)
        return -EPROTO;
    e->src = buf[i++];
    if (e->src < ORDER_START || e->src > ORDER_CLOSE_SERVER)
        return -EPROTO;
    if (varint_get(buf, len, &i, &delta) < 0)
        return -EPROTO;
    e->time_ms = *prev_time + delta;
    e->timer_id = 0;
    if ((e->src == ORDER_TIMER || e->src == ORDER_START) &&
        varint_get(buf, len, &i, &e->timer_id) < 0)
        return -EPROTO;
    *prev_time = e->time_ms;
    *off = i;
    return 0;
}
