/* appcfg.h - the [app] section of the edge config as it travels with a session.
 *
 * The section is kept as one blob of "key\0value\0" pairs in file order (config.c builds
 * it). A new session gets the blob as the payload of its start event (EV_START), so it is
 * in the held events, the ordering log and, once the worker copied it into its arena, in
 * every snapshot: a recovery, a wake and cessna-replay see what the session started with.
 * The START entry of the piggybacked order carries appcfg_hash(), so an edge that rebuilds
 * a session from its start (remote recovery without a snapshot) can check that its own
 * [app] is the one the session started with (supervisor/resume.c). */
#ifndef CESSNA_APPCFG_H
#define CESSNA_APPCFG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <xxhash.h>

#define APPCFG_KEYS     64      /* keys at most */
#define APPCFG_KEY_MAX  64      /* bytes of a key */
#define APPCFG_VAL_MAX  1024    /* bytes of a value */
#define APPCFG_BYTES    (APPCFG_KEYS * (APPCFG_KEY_MAX + APPCFG_VAL_MAX + 2))

/* The value of key in the blob, or NULL. The blob may come from anywhere (an event): a
 * pair that runs off its end ends the search. */
static inline const char *appcfg_get(const char *blob, size_t len, const char *key)
{
    size_t off = 0;

    while (off < len) {
        const char *k = blob + off, *kend = memchr(k, 0, len - off), *v, *vend;
        if (!kend)
            return NULL;
        v = kend + 1;
        if ((size_t)(v - blob) >= len || !(vend = memchr(v, 0, len - (size_t)(v - blob))))
            return NULL;
        if (strcmp(k, key) == 0)
            return v;
        off = (size_t)(vend - blob) + 1;
    }
    return NULL;
}

/* What the START order entry carries: 0 for an empty section. */
static inline uint64_t appcfg_hash(const void *blob, size_t len)
{
    return len ? XXH3_64bits(blob, len) | 1 : 0;
}

#endif
