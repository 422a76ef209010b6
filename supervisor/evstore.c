/* evstore.c - see evstore.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "evstore.h"

#define REC_HDR 8u

static size_t rec_space(size_t payload)
{
    return (REC_HDR + payload + 7u) & ~(size_t)7u;
}

static uint32_t rec_len(const uint8_t *p)
{
    uint32_t len;

    memcpy(&len, p, 4);
    return len;
}

void evrec_put(uint8_t *dst, uint16_t type, const struct shm_rec *rec, const void *data,
               size_t len)
{
    uint32_t plen = (uint32_t)(sizeof(*rec) + len);

    memcpy(dst, &plen, 4);
    memcpy(dst + 4, &type, 2);
    memset(dst + 6, 0, 2);
    memcpy(dst + REC_HDR, rec, sizeof(*rec));
    if (len)
        memcpy(dst + REC_HDR + sizeof(*rec), data, len);
    size_t end = REC_HDR + plen, space = evrec_space(len);
    if (space > end)
        memset(dst + end, 0, space - end);
}

int evstore_append(struct evstore *e, uint16_t type, const struct shm_rec *rec,
                   const void *data, size_t len)
{
    size_t need = evrec_space(len);
    uint8_t *p;

    if (e->len + need > e->cap) {
        size_t cap = e->cap ? e->cap : 65536;
        while (cap < e->len + need)
            cap *= 2;
        p = realloc(e->buf, cap);
        if (!p)
            return -ENOMEM;
        e->buf = p;
        e->cap = cap;
    }
    if (!e->count)
        e->first = rec->pos;
    evrec_put(e->buf + e->len, type, rec, data, len);
    e->len += need;
    e->count++;
    return 0;
}

unsigned evstore_feed(struct evstore *e, struct ring *r)
{
    unsigned n = 0;

    while (e->fed < e->len) {
        const uint8_t *p = e->buf + e->fed;
        uint32_t len = rec_len(p), before = e->fed_part;
        uint16_t type;
        int whole;

        memcpy(&type, p + 4, 2);
        whole = ring_put(r, type, p + REC_HDR, len, NULL, 0, &e->fed_part);
        n += whole || e->fed_part != before;
        if (whole) {
            e->fed += rec_space(len);
            continue;
        }
        /* Full: mark ourselves waiting (the worker rings us after its next pop) and stop,
         * unless room appeared meanwhile (ring_wait_prepare() returns 0): go on. */
        if (ring_wait_prepare(r, ring_put_need(r, len, e->fed_part)))
            break;
    }
    return n;
}

/* Byte offset of the record at position pos (first <= pos <= first + count). */
static size_t offset_of(const struct evstore *e, uint64_t pos)
{
    size_t off = 0;

    for (uint64_t p = e->first; p < pos && off < e->len; p++)
        off += rec_space(rec_len(e->buf + off));
    return off;
}

int evstore_rewind(struct evstore *e, uint64_t p)
{
    if (e->count && (p + 1 < e->first || p > e->first + e->count))
        return -ENOENT;
    e->fed = e->count ? offset_of(e, p + 1) : 0;
    e->fed_part = 0;
    return 0;
}

void evstore_drop_through(struct evstore *e, uint64_t p)
{
    if (!e->count || p < e->first)
        return;
    uint64_t drop = p - e->first + 1;
    if (drop > e->count)
        drop = e->count;
    size_t off = offset_of(e, e->first + drop);
    memmove(e->buf, e->buf + off, e->len - off);
    e->len -= off;
    if (e->fed < off)
        e->fed_part = 0;   /* the record partly fed is gone too */
    e->fed = e->fed > off ? e->fed - off : 0;
    e->first += drop;
    e->count -= drop;
}

void evstore_free(struct evstore *e)
{
    free(e->buf);
    memset(e, 0, sizeof(*e));
}
