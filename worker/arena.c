/* arena.c - the deterministic arena allocator (see arena.h).
 *
 * Layout: [header | chunk | chunk | ... | chunk | top ......... end]
 *
 * - The header at base holds the bins, the top offset, the high-water mark and counters.
 * - A chunk is a 16-byte header {prev_size, size|flags} followed by its payload; sizes are
 *   multiples of 16 and the payload is 16-byte aligned. prev_size is valid only when the
 *   previous chunk is free (PINUSE clear): it is the boundary tag used to coalesce.
 * - A free chunk keeps its list links {fd, bk} (offsets, 0 = none) in its payload.
 * - Memory from top to the end has never been handed out (or was given back): fresh chunks
 *   are cut from it only when no free chunk fits, so touched memory stays compact.
 *
 * Invariants (arena_check() verifies them): no two free chunks are adjacent, the chunk just
 * below top is never free (freeing it lowers top instead), and every free chunk is in
 * exactly one bin. Small chunks (<= SMALL_MAX) sit in exact-size bins; larger ones in
 * power-of-two bins searched first fit. Two bitmaps make finding a non-empty bin O(1).
 */
#include "arena.h"
#include "log.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARENA_MAGIC   0x414e45524e535343ull   /* "CSSNRENA" */
#define ARENA_VERSION 1u

#define ALIGN      16u
#define CHDR       16u                   /* chunk header bytes */
#define MIN_CHUNK  32u                   /* header + room for the fd/bk links */
#define CINUSE     1u                    /* this chunk is allocated */
#define PINUSE     2u                    /* the previous chunk is allocated (or none) */
#define ALIGNED    4u                    /* a fake header before an over-aligned payload */
#define FLAGS      15u

#define NSMALL     64                    /* exact bins for chunk sizes 32, 48, ..., 1040 */
#define SMALL_MAX  ((NSMALL + 1) * 16u)
#define NLARGE     54                    /* bin i holds sizes in [2^(i+10), 2^(i+11)) */

struct chunk {
    uint64_t prev_size;                  /* size of the previous chunk, when it is free */
    uint64_t head;                       /* size | CINUSE | PINUSE */
    uint64_t fd, bk;                     /* free chunks only: bin list links */
};

struct arena_hdr {
    uint64_t magic;
    uint32_t version;
    uint32_t first;                      /* offset of the first chunk */
    uint64_t size;                       /* arena bytes (multiple of 16) */
    uint64_t top;                        /* offset of the untouched tail */
    uint64_t hwm;                        /* highest top ever: the touched extent */
    uint64_t used;                       /* payload bytes of live chunks */
    uint64_t small_map, large_map;       /* bit i set <=> bin i not empty */
    uint64_t small[NSMALL];              /* bin heads (chunk offsets, 0 = empty) */
    uint64_t large[NLARGE];
};

#define FIRST_OFF ((sizeof(struct arena_hdr) + ALIGN - 1) & ~(uint64_t)(ALIGN - 1))

static char *base;                       /* the only state outside the arena */

static inline struct arena_hdr *H(void) { return (struct arena_hdr *)base; }
static inline struct chunk *CH(uint64_t off) { return (struct chunk *)(base + off); }
static inline uint64_t csize(const struct chunk *c) { return c->head & ~(uint64_t)FLAGS; }

static void die(const char *what, const void *p)
{
    log_write(LOG_ERROR, "msg=\"arena: %s\" pointer=%p", what, p);
    abort();
}

/* ---- bins ---- */

static inline unsigned large_index(uint64_t size)
{
    return 63u - (unsigned)__builtin_clzll(size) - 10u;
}

/* The list head and bitmap that hold chunks of this size. */
static void bin_of(uint64_t size, uint64_t **head, uint64_t **map, uint64_t *bit)
{
    if (size <= SMALL_MAX) {
        unsigned i = (unsigned)(size >> 4) - 2u;
        *head = &H()->small[i];
        *map = &H()->small_map;
        *bit = 1ull << i;
    } else {
        unsigned i = large_index(size);
        *head = &H()->large[i];
        *map = &H()->large_map;
        *bit = 1ull << i;
    }
}

static void bin_insert(uint64_t off)
{
    struct chunk *c = CH(off);
    uint64_t *head, *map, bit;

    bin_of(csize(c), &head, &map, &bit);
    c->fd = *head;
    c->bk = 0;
    if (*head)
        CH(*head)->bk = off;
    *head = off;
    *map |= bit;
}

static void bin_unlink(uint64_t off)
{
    struct chunk *c = CH(off);
    uint64_t *head, *map, bit;

    bin_of(csize(c), &head, &map, &bit);
    if (c->bk)
        CH(c->bk)->fd = c->fd;
    else
        *head = c->fd;
    if (c->fd)
        CH(c->fd)->bk = c->bk;
    if (!*head)
        *map &= ~bit;
}

/* ---- chunks ---- */

/* Chunk size for an n-byte request, or 0 when it can never fit. */
static uint64_t request_size(size_t n)
{
    if (n > H()->size)
        return 0;
    uint64_t s = ((uint64_t)n + CHDR + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
    return s < MIN_CHUNK ? MIN_CHUNK : s;
}

/* Give the free chunk at off (coalescing with its free neighbours, or with top). */
static void free_chunk(uint64_t off)
{
    struct arena_hdr *h = H();
    struct chunk *c = CH(off);
    uint64_t size = csize(c);

    h->used -= size - CHDR;
    if (!(c->head & PINUSE)) {
        uint64_t poff = off - c->prev_size;
        struct chunk *p = CH(poff);
        if (c->prev_size < MIN_CHUNK || poff < h->first || (p->head & CINUSE) ||
            csize(p) != c->prev_size)
            die("corrupted boundary tag", base + off + CHDR);
        bin_unlink(poff);
        c->head = 0;                     /* a stale header must not pass for a live one */
        off = poff;
        c = p;
        size += csize(p);
    }
    uint64_t next = off + size;
    if (next == h->top) {                /* give it back to top */
        h->top = off;
        c->head = 0;
        return;
    }
    struct chunk *n = CH(next);
    if (!(n->head & CINUSE)) {
        bin_unlink(next);
        size += csize(n);
        n->head = 0;
        next = off + size;
        n = CH(next);
    }
    c->head = size | PINUSE;             /* the chunk before a free one is always in use */
    n->prev_size = size;
    n->head &= ~(uint64_t)PINUSE;
    bin_insert(off);
}

/* Mark the live chunk at off as size s (<= its size), freeing the tail if it is big enough. */
static void shrink_chunk(uint64_t off, uint64_t s)
{
    struct chunk *c = CH(off);
    uint64_t size = csize(c);

    if (size - s < MIN_CHUNK)
        return;
    c->head = s | (c->head & FLAGS);
    struct chunk *r = CH(off + s);
    r->head = (size - s) | CINUSE | PINUSE;
    H()->used -= CHDR;                   /* the tail's header comes out of the payload */
    free_chunk(off + s);
}

/* Allocate the free, binned chunk at off for size s: unlink, mark, split off the rest. */
static uint64_t use_free_chunk(uint64_t off, uint64_t s)
{
    struct chunk *c = CH(off);
    uint64_t size = csize(c);

    bin_unlink(off);
    c->head |= CINUSE;
    CH(off + size)->head |= PINUSE;      /* a free chunk is never next to top */
    H()->used += size - CHDR;
    shrink_chunk(off, s);
    return off;
}

/* A free chunk of at least s bytes from the bins, or 0. */
static uint64_t from_bins(uint64_t s)
{
    struct arena_hdr *h = H();
    unsigned from = 0;

    if (s <= SMALL_MAX) {
        unsigned i = (unsigned)(s >> 4) - 2u;
        uint64_t m = h->small_map & (~0ull << i);
        if (m)
            return use_free_chunk(h->small[__builtin_ctzll(m)], s);
    } else {
        /* The first fit in s's own bin, else any chunk of a higher bin. */
        from = large_index(s);
        for (uint64_t off = h->large[from]; off; off = CH(off)->fd)
            if (csize(CH(off)) >= s)
                return use_free_chunk(off, s);
        from++;
    }
    if (from >= NLARGE)
        return 0;
    uint64_t m = h->large_map & (~0ull << from);
    if (m)
        return use_free_chunk(h->large[__builtin_ctzll(m)], s);
    return 0;
}

/* A fresh chunk of s bytes cut from top, or 0. */
static uint64_t from_top(uint64_t s)
{
    struct arena_hdr *h = H();

    if (s > h->size - h->top)
        return 0;
    uint64_t off = h->top;
    CH(off)->head = s | CINUSE | PINUSE; /* the chunk below top is in use (or none) */
    h->top += s;
    if (h->top > h->hwm)
        h->hwm = h->top;
    h->used += s - CHDR;
    return off;
}

/* The offset of the live chunk whose payload is p; aborts if p is not one. */
static uint64_t chunk_of(void *p)
{
    struct arena_hdr *h = H();

    if (!base)
        die("free of a pointer before the arena exists", p);
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
    if ((a & (ALIGN - 1)) || a < b + h->first + CHDR || a >= b + h->top)
        die("invalid pointer", p);
    uint64_t off = a - b - CHDR;
    struct chunk *c = CH(off);
    uint64_t size = csize(c);
    if (!(c->head & CINUSE))
        die("double free or invalid pointer", p);
    if (size < MIN_CHUNK || size > h->top - off)
        die("invalid pointer or corrupted chunk header", p);
    if (off + size < h->top && !(CH(off + size)->head & PINUSE))
        die("invalid pointer or corrupted chunk header", p);
    return off;
}

/* ---- API ---- */

int arena_init(void *b, size_t size)
{
    if (!b || ((uintptr_t)b & (ALIGN - 1)))
        return -EINVAL;
    size &= ~(size_t)(ALIGN - 1);
    if (size < FIRST_OFF + MIN_CHUNK)
        return -EINVAL;
    struct arena_hdr *h = b;
    memset(h, 0, sizeof(*h));
    h->magic = ARENA_MAGIC;
    h->version = ARENA_VERSION;
    h->first = FIRST_OFF;
    h->size = size;
    h->top = FIRST_OFF;
    h->hwm = FIRST_OFF;
    base = b;
    return 0;
}

void arena_attach(void *b)
{
    const struct arena_hdr *h = b;
    if (!h || h->magic != ARENA_MAGIC || h->version != ARENA_VERSION)
        die("attach to memory that holds no arena", b);
    base = b;
}

void *arena_malloc(size_t n)
{
    if (!base)
        return NULL;
    uint64_t s = request_size(n);
    if (!s)
        return NULL;
    uint64_t off = from_bins(s);
    if (!off)
        off = from_top(s);
    return off ? base + off + CHDR : NULL;
}

void *arena_calloc(size_t k, size_t n)
{
    size_t t;
    if (__builtin_mul_overflow(k, n, &t))
        return NULL;
    void *p = arena_malloc(t);
    if (p)
        memset(p, 0, t);
    return p;
}

/* An arena_memalign() payload p sits inside a chunk's payload q; the 16 bytes before p are
 * {p - q, ALIGNED}. A chunk header never has ALIGNED set. Returns q, or p itself. */
static void *unwrap(void *p, size_t *skip)
{
    const uint64_t *h = (const uint64_t *)p - 2;

    *skip = 0;
    if (((uintptr_t)p & (ALIGN - 1)) || (uintptr_t)p < (uintptr_t)base + FIRST_OFF + 2 * CHDR ||
        !(h[1] & ALIGNED))
        return p;
    if (h[1] != ALIGNED || h[0] < CHDR || (h[0] & (ALIGN - 1)) ||
        h[0] > (uintptr_t)p - (uintptr_t)base)
        die("corrupted aligned allocation header", p);
    *skip = h[0];
    return (char *)p - h[0];
}

void *arena_memalign(size_t align, size_t n)
{
    size_t total;

    if (!align || (align & (align - 1)))
        return NULL;
    if (align <= ALIGN)
        return arena_malloc(n);
    if (__builtin_add_overflow(n, align, &total))
        return NULL;
    char *q = arena_malloc(total);
    if (!q)
        return NULL;
    /* q is 16-aligned and align >= 32, so p - q is in [16, align]: room for the tag. */
    char *p = (char *)(((uintptr_t)q + CHDR + align - 1) & ~(uintptr_t)(align - 1));
    uint64_t *h = (uint64_t *)p - 2;
    h[0] = (uint64_t)(p - q);
    h[1] = ALIGNED;
    return p;
}

size_t arena_usable_size(void *p)
{
    size_t skip;

    if (!p)
        return 0;
    void *q = unwrap(p, &skip);
    return csize(CH(chunk_of(q))) - CHDR - skip;
}

void *arena_realloc(void *p, size_t n)
{
    if (!p)
        return arena_malloc(n);
    if (n == 0) {
        arena_free(p);
        return NULL;
    }
    size_t skip;
    if (unwrap(p, &skip) != p) {        /* over-aligned: realloc need not keep the alignment */
        size_t have = arena_usable_size(p);
        void *q = arena_malloc(n);
        if (!q)
            return NULL;
        memcpy(q, p, have < n ? have : n);
        arena_free(p);
        return q;
    }
    struct arena_hdr *h = H();
    uint64_t off = chunk_of(p);
    struct chunk *c = CH(off);
    uint64_t size = csize(c), s = request_size(n);
    if (!s)
        return NULL;

    if (s <= size) {                     /* shrink in place */
        shrink_chunk(off, s);
        return p;
    }
    uint64_t next = off + size;
    if (next == h->top && s - size <= h->size - h->top) {   /* grow into top */
        c->head = s | (c->head & FLAGS);
        h->top = off + s;
        if (h->top > h->hwm)
            h->hwm = h->top;
        h->used += s - size;
        return p;
    }
    struct chunk *nc = CH(next);
    if (next < h->top && !(nc->head & CINUSE) && size + csize(nc) >= s) {
        uint64_t total = size + csize(nc);  /* absorb the free neighbour, then trim */
        bin_unlink(next);
        nc->head = 0;
        c->head = total | (c->head & FLAGS);
        CH(off + total)->head |= PINUSE;
        h->used += total - size;
        shrink_chunk(off, s);
        return p;
    }
    void *q = arena_malloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, size - CHDR);
    arena_free(p);
    return q;
}

void arena_free(void *p)
{
    size_t skip;

    if (!p)
        return;
    free_chunk(chunk_of(unwrap(p, &skip)));
}

size_t arena_used(void)
{
    return base ? H()->used : 0;
}

size_t arena_extent(void)
{
    if (!base)
        return 0;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    return (H()->hwm + page - 1) & ~(page - 1);
}

/* Walk one bin list; check every node and count them (bounded by the free count). */
static int check_bin(uint64_t head, uint64_t lo, uint64_t hi, uint64_t nfree, uint64_t *count)
{
    struct arena_hdr *h = H();
    uint64_t prev = 0;

    for (uint64_t off = head; off; off = CH(off)->fd) {
        if (++*count > nfree)
            return -1;                   /* a cycle, or a chunk listed twice */
        if (off < h->first || off >= h->top || (off & (ALIGN - 1)))
            return -1;
        struct chunk *c = CH(off);
        uint64_t size = csize(c);
        if ((c->head & CINUSE) || size < lo || size > hi || c->bk != prev)
            return -1;
        if (off + size >= h->top || CH(off + size)->prev_size != size)
            return -1;
        prev = off;
    }
    return 0;
}

int arena_check(void)
{
    if (!base)
        return -EFAULT;
    struct arena_hdr *h = H();
    if (h->magic != ARENA_MAGIC || h->version != ARENA_VERSION || h->first != FIRST_OFF ||
        h->top < h->first || h->top > h->size || h->hwm < h->top || h->hwm > h->size ||
        (h->top & (ALIGN - 1)))
        return -EFAULT;

    /* Address order: sizes, flags, boundary tags, coalescing, the used count. */
    uint64_t off = h->first, used = 0, nfree = 0;
    int prev_inuse = 1;
    while (off < h->top) {
        struct chunk *c = CH(off);
        uint64_t size = csize(c);
        if (size < MIN_CHUNK || (size & (ALIGN - 1)) || size > h->top - off)
            return -EFAULT;
        if (!!(c->head & PINUSE) != prev_inuse)
            return -EFAULT;
        if (c->head & CINUSE) {
            used += size - CHDR;
            prev_inuse = 1;
        } else {
            if (!prev_inuse || off + size == h->top)
                return -EFAULT;          /* not coalesced */
            if (CH(off + size)->prev_size != size)
                return -EFAULT;
            nfree++;
            prev_inuse = 0;
        }
        off += size;
    }
    if (off != h->top || used != h->used)
        return -EFAULT;

    /* The bins: each holds exactly the free chunks of its size range, bitmaps agree. */
    uint64_t count = 0;
    for (unsigned i = 0; i < NSMALL; i++) {
        uint64_t s = (i + 2u) * 16u;
        if (!!h->small[i] != !!(h->small_map & (1ull << i)) ||
            check_bin(h->small[i], s, s, nfree, &count))
            return -EFAULT;
    }
    for (unsigned i = 0; i < NLARGE; i++) {
        uint64_t lo = 1ull << (i + 10), hi = (lo << 1) - 1;
        if (lo <= SMALL_MAX)
            lo = SMALL_MAX + 16u;
        if (!!h->large[i] != !!(h->large_map & (1ull << i)) ||
            check_bin(h->large[i], lo, hi, nfree, &count))
            return -EFAULT;
    }
    if (h->large_map >> NLARGE)
        return -EFAULT;
    return count == nfree ? 0 : -EFAULT;
}
