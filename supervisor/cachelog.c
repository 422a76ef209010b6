/* cachelog.c - cache reads since the last durable snapshot, checked on replay (cachelog.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cachelog.h"
#include "log.h"
#include "sup.h"

#define NAME_MAX_LEN 200   /* as the worker's cache_name_ok() */

struct cl_rec {
    uint64_t pos, hash;
    uint32_t nlen;
    char name[NAME_MAX_LEN + 1];
};

struct cl_slot {
    uint64_t session_id;    /* whose records these are; another id means a new session */
    struct cl_rec *v;       /* sorted by (pos, name) */
    size_t n, cap;
};

static struct {
    struct cl_slot *slots;  /* S.slots, allocated on the first cache read */
} C;

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

static struct cl_slot *slot_of(struct session *s)
{
    if (!C.slots) {
        C.slots = calloc(S.slots, sizeof(*C.slots));
        if (!C.slots)
            return NULL;
    }
    if (s->slot >= S.slots)
        return NULL;
    struct cl_slot *cs = &C.slots[s->slot];
    if (cs->session_id != s->id) {   /* the slot's previous session has ended */
        cs->session_id = s->id;
        cs->n = 0;
    }
    return cs;
}

static int name_ok(const char *name, size_t nlen)
{
    if (nlen == 0 || nlen > NAME_MAX_LEN)
        return 0;
    for (size_t i = 0; i < nlen; i++)
        if (name[i] < 0x21 || name[i] > 0x7e)
            return 0;
    return 1;
}

static int cmp(const struct cl_rec *r, uint64_t pos, const char *name, size_t nlen)
{
    if (r->pos != pos)
        return r->pos < pos ? -1 : 1;
    int c = memcmp(r->name, name, r->nlen < nlen ? r->nlen : nlen);
    if (c)
        return c;
    return r->nlen == nlen ? 0 : (r->nlen < nlen ? -1 : 1);
}

int cachelog_read(struct session *s, uint64_t pos, const void *vname, size_t nlen, uint64_t hash)
{
    const char *name = vname;
    struct cl_slot *cs;
    size_t lo = 0, hi;

    if (!name_ok(name, nlen) || pos >= s->next_pos) {
        sess_fail(s, WIRE_ERR_SESSION, "worker reported a malformed cache read (event %llu, "
                  "last event %llu, name of %zu bytes)", ull(pos), ull(s->next_pos - 1), nlen);
        return -EINVAL;
    }
    LOG(LOG_DEBUG, "session=%llu msg=\"cache read\" pos=%llu name=%.*s hash=%016llx",
        ull(s->id), ull(pos), (int)nlen, name, ull(hash));
    cs = slot_of(s);
    if (!cs) {
        LOG(LOG_WARN, "session=%llu msg=\"cache read not recorded\" error=\"no memory\"",
            ull(s->id));
        return 0;
    }
    /* Binary search: the first record not below (pos, name). */
    hi = cs->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp(&cs->v[mid], pos, name, nlen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < cs->n && cmp(&cs->v[lo], pos, name, nlen) == 0) {
        if (cs->v[lo].hash == hash)
            return 0;
        sess_fail(s, WIRE_ERR_SESSION, "cache object %.*s changed since event %llu: replay "
                  "would diverge (%s)", (int)nlen, name, ull(pos),
                  !hash ? "it is gone" : !cs->v[lo].hash ? "it was missing then" :
                  "its content differs");
        return -ESTALE;
    }
    if (cs->n == cs->cap) {
        size_t cap = cs->cap ? cs->cap * 2 : 8;
        struct cl_rec *v = realloc(cs->v, cap * sizeof(*v));
        if (!v) {
            LOG(LOG_WARN, "session=%llu msg=\"cache read not recorded\" error=\"no memory\"",
                ull(s->id));
            return 0;
        }
        cs->v = v;
        cs->cap = cap;
    }
    memmove(&cs->v[lo + 1], &cs->v[lo], (cs->n - lo) * sizeof(*cs->v));
    cs->v[lo] = (struct cl_rec){ .pos = pos, .hash = hash, .nlen = (uint32_t)nlen };
    memcpy(cs->v[lo].name, name, nlen);
    cs->n++;
    return 0;
}

void cachelog_drop_through(struct session *s, uint64_t pos)
{
    if (!C.slots || s->slot >= S.slots)
        return;
    struct cl_slot *cs = &C.slots[s->slot];
    size_t k = 0;

    if (cs->session_id != s->id)
        return;
    while (k < cs->n && cs->v[k].pos <= pos)
        k++;
    memmove(cs->v, cs->v + k, (cs->n - k) * sizeof(*cs->v));
    cs->n -= k;
}
