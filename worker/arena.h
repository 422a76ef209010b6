/* arena.h - the deterministic allocator behind cessna_malloc and friends.
 *
 * The arena is one fixed-address mapping, reserved large (MAP_NORESERVE) and touched from
 * low addresses up. Every byte of allocator state (bins, top, counters) lives in a header
 * at the arena's base, and all links are offsets from the base, so the arena memory alone
 * is the allocator's whole state: a snapshot of [base, base + arena_extent()) restores it
 * exactly. The only state outside is the base pointer set by arena_init()/arena_attach().
 *
 * Deterministic: the same sequence of calls gives the same offsets, whatever the base.
 * Not thread-safe (a worker is single-threaded). A double free or a pointer that is not
 * a live allocation aborts the process with a message on stderr.
 */
#ifndef CESSNA_ARENA_H
#define CESSNA_ARENA_H

#include <stddef.h>

/* Format a fresh arena over [base, base + size) and use it. base must be 16-byte aligned
 * and size large enough for the header; 0 or -EINVAL. Touches only the header. size is
 * also the cap: an allocation that would touch memory past it returns NULL, a pure function
 * of the allocation history (the runtime passes the session's max_session_memory). */
int    arena_init(void *base, size_t size);

/* Use an arena that already holds state (after a restore, or in a forked child). Aborts
 * when base does not hold a formatted arena. */
void   arena_attach(void *base);

void  *arena_malloc(size_t n);                 /* 16-byte aligned; NULL when full */
void  *arena_calloc(size_t k, size_t n);       /* NULL on k * n overflow */
void  *arena_realloc(void *p, size_t n);       /* realloc(p, 0) frees p and returns NULL */
void   arena_free(void *p);                    /* also takes arena_memalign() pointers */
/* align a power of two; NULL when full or align is not one. free/realloc/usable_size take
 * the result like any other (realloc does not keep an alignment above 16). */
void  *arena_memalign(size_t align, size_t n);
size_t arena_usable_size(void *p);            /* bytes usable at p (>= the request) */

size_t arena_used(void);                       /* usable bytes of the live allocations */
size_t arena_extent(void);                     /* bytes from base ever touched, page-rounded */
int    arena_check(void);                      /* 0 if all metadata is consistent, else -EFAULT */

#endif
