/* test_arena.c - the deterministic arena allocator (worker/arena.c). */
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "../worker/arena.h"

#define MiB (1024u * 1024u)
#define GiB (1024ull * MiB)

/* A reserved, mostly untouched mapping, like the worker's arena. */
static void *map_arena(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    cr_assert_neq(p, MAP_FAILED, "mmap %zu: %s", size, strerror(errno));
    return p;
}

static void *new_arena(size_t size)
{
    void *b = map_arena(size);
    cr_assert_eq(arena_init(b, size), 0);
    return b;
}

/* xorshift64*: the tests' own fixed-seed PRNG. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static void fill(void *p, size_t n, uint64_t tag)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(tag * 131 + i * 7 + (i >> 8));
}

static int verify(const void *p, size_t n, uint64_t tag)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(tag * 131 + i * 7 + (i >> 8)))
            return 0;
    return 1;
}

Test(arena, init_rejects_bad_arguments)
{
    char *b = map_arena(MiB);
    cr_expect_eq(arena_init(NULL, MiB), -EINVAL);
    cr_expect_eq(arena_init(b + 8, MiB - 8), -EINVAL);
    cr_expect_eq(arena_init(b, 64), -EINVAL);
    cr_expect_eq(arena_init(b, MiB), 0);
    cr_expect_eq(arena_check(), 0);
    cr_expect_eq(arena_used(), 0);
    cr_expect_eq(arena_extent(), (size_t)sysconf(_SC_PAGESIZE));
}

Test(arena, alignment)
{
    char *b = new_arena(64 * MiB);
    void *ptrs[600];
    for (size_t i = 0; i < 600; i++) {
        size_t n = i < 300 ? i : (i - 299) * 97;
        ptrs[i] = arena_malloc(n);
        cr_assert_not_null(ptrs[i], "malloc(%zu)", n);
        cr_assert_eq((uintptr_t)ptrs[i] % 16, 0, "malloc(%zu) not 16-byte aligned", n);
        cr_assert((char *)ptrs[i] > b && (char *)ptrs[i] + n <= b + 64 * MiB);
        fill(ptrs[i], n, i);
    }
    for (size_t i = 0; i < 600; i++) {
        size_t n = i < 300 ? i : (i - 299) * 97;
        cr_assert(verify(ptrs[i], n, i), "allocation %zu overlaps another", i);
    }
    cr_assert_eq(arena_check(), 0);
}

Test(arena, reuse_after_free)
{
    new_arena(64 * MiB);
    void *a = arena_malloc(100);
    void *guard = arena_malloc(100);         /* keeps a from merging into top */
    arena_free(a);
    cr_expect_eq(arena_malloc(100), a, "same size reuses the freed chunk");
    arena_free(a);
    cr_expect_eq(arena_malloc(40), a, "a smaller request splits the freed chunk");

    void *big = arena_malloc(100000);
    void *guard2 = arena_malloc(16);
    arena_free(big);
    cr_expect_eq(arena_malloc(50000), big, "a large free chunk is reused before top");
    cr_expect_not_null(guard);
    cr_expect_not_null(guard2);
    cr_assert_eq(arena_check(), 0);
}

Test(arena, coalescing)
{
    new_arena(64 * MiB);
    char *p[5];
    for (int i = 0; i < 5; i++)
        p[i] = arena_malloc(200);
    size_t extent = arena_extent();
    /* Free out of order: 1 and 3 alone, then 2 joins them both. */
    arena_free(p[1]);
    arena_free(p[3]);
    cr_assert_eq(arena_check(), 0);
    arena_free(p[2]);
    cr_assert_eq(arena_check(), 0);
    char *q = arena_malloc(3 * 200 + 2 * 16);
    cr_expect_eq(q, p[1], "the three neighbours coalesced into one chunk");
    cr_expect_eq(arena_extent(), extent);

    /* Freeing the last chunk gives it back to top; then its neighbour joins too. */
    arena_free(p[4]);
    arena_free(q);
    arena_free(p[0]);
    cr_expect_eq(arena_used(), 0);
    cr_expect_eq(arena_malloc(200), p[0], "everything merged back into top");
    cr_assert_eq(arena_check(), 0);
}

Test(arena, used_accounting)
{
    new_arena(64 * MiB);
    void *a = arena_malloc(1);
    cr_expect_geq(arena_used(), 1);
    size_t one = arena_used();
    void *b = arena_malloc(1000);
    cr_expect_geq(arena_used(), one + 1000);
    arena_free(a);
    arena_free(b);
    cr_expect_eq(arena_used(), 0);
}

Test(arena, realloc_grow_shrink_keeps_content)
{
    new_arena(64 * MiB);
    /* Grow in place into top. */
    char *a = arena_malloc(100);
    fill(a, 100, 1);
    char *a2 = arena_realloc(a, 5000);
    cr_expect_eq(a2, a, "the last chunk grows into top");
    cr_assert(verify(a2, 100, 1));
    fill(a2, 5000, 2);

    /* Grow in place by absorbing a free neighbour. */
    char *b = arena_malloc(3000);
    char *guard = arena_malloc(10);
    arena_free(b);
    char *a3 = arena_realloc(a2, 7000);
    cr_expect_eq(a3, a2, "grows into the free neighbour");
    cr_assert(verify(a3, 5000, 2));
    cr_assert_eq(arena_check(), 0);

    /* Grow by moving. */
    fill(a3, 7000, 3);
    char *a4 = arena_realloc(a3, 100000);
    cr_expect_neq(a4, a3);
    cr_assert(verify(a4, 7000, 3));
    cr_assert_eq(arena_check(), 0);

    /* Shrink in place; the tail is reusable. */
    fill(a4, 100000, 4);
    char *a5 = arena_realloc(a4, 1000);
    cr_expect_eq(a5, a4);
    cr_assert(verify(a5, 1000, 4));
    cr_assert_eq(arena_check(), 0);

    cr_expect_null(arena_realloc(guard, 0), "realloc(p, 0) frees");
    char *n = arena_realloc(NULL, 64);
    cr_expect_not_null(n, "realloc(NULL, n) allocates");
    cr_expect_null(arena_realloc(n, (size_t)-1));
    cr_assert_eq(arena_check(), 0);
}

Test(arena, calloc_zeroes_and_checks_overflow)
{
    new_arena(64 * MiB);
    char *a = arena_malloc(4096);
    memset(a, 0xaa, 4096);
    void *guard = arena_malloc(1);
    arena_free(a);
    char *z = arena_calloc(64, 64);
    cr_assert_eq(z, a, "calloc reuses the dirty chunk");
    for (size_t i = 0; i < 4096; i++)
        cr_assert_eq(z[i], 0, "byte %zu not zeroed", i);
    cr_expect_null(arena_calloc(SIZE_MAX / 2, 3));
    cr_expect_null(arena_calloc((size_t)1 << 33, (size_t)1 << 33));
    cr_expect_not_null(arena_calloc(0, 10));
    cr_expect_not_null(guard);
    cr_assert_eq(arena_check(), 0);
}

Test(arena, out_of_space_returns_null)
{
    new_arena(MiB);
    cr_expect_null(arena_malloc(2 * MiB));
    cr_expect_null(arena_malloc(SIZE_MAX));
    void *p[2000];
    int n = 0;
    while (n < 2000 && (p[n] = arena_malloc(1000)) != NULL)
        n++;
    cr_assert(n > 900 && n < 1100, "%d allocations of 1000 bytes in 1 MiB", n);
    cr_expect_null(arena_malloc(1000));
    cr_assert_eq(arena_check(), 0);
    arena_free(p[n / 2]);
    cr_expect_eq(arena_malloc(1000), p[n / 2]);
    for (int i = 0; i < n; i++)
        arena_free(p[i]);
    cr_expect_eq(arena_used(), 0);
    cr_expect_not_null(arena_malloc(MiB / 2));
    cr_assert_eq(arena_check(), 0);
}

/* Run a fixed pseudo-random sequence; record every returned offset from base. */
#define DET_SLOTS 256
#define DET_OPS   5000
static void det_run(char *b, uint64_t seed, uint64_t *slots, uint64_t *offs)
{
    uint64_t s = seed;
    for (int i = 0; i < DET_OPS; i++) {
        uint64_t r = rng_next(&s);
        unsigned k = r % DET_SLOTS;
        size_t n = (r >> 16) % 4 == 0 ? (r >> 24) % 40000 : (r >> 24) % 300;
        void *p = slots[k] ? b + slots[k] : NULL;
        void *q;
        switch ((r >> 8) % 3) {
        case 0:
            arena_free(p);
            q = arena_malloc(n);
            break;
        case 1:
            q = arena_realloc(p, n + 1);
            break;
        default:
            arena_free(p);
            q = NULL;
            break;
        }
        slots[k] = q ? (uint64_t)((char *)q - b) : 0;
        offs[i] = slots[k];
    }
}

Test(arena, deterministic_across_bases)
{
    static uint64_t sa[DET_SLOTS], sb[DET_SLOTS], oa[DET_OPS], ob[DET_OPS];
    char *a = new_arena(GiB);
    det_run(a, 42, sa, oa);
    size_t ea = arena_extent(), ua = arena_used();
    char *b = map_arena(GiB + 4096);
    b += 4096;                               /* a different base */
    cr_assert_eq(arena_init(b, GiB), 0);
    det_run(b, 42, sb, ob);
    cr_assert_eq(memcmp(oa, ob, sizeof(oa)), 0, "same calls, different offsets");
    cr_assert_eq(arena_extent(), ea);
    cr_assert_eq(arena_used(), ua);
    cr_assert_eq(memcmp(a, b, ea), 0, "the arenas' bytes differ");

    /* A copy of the touched extent is the whole state: attach it elsewhere and go on. */
    char *c = map_arena(GiB);
    memcpy(c, a, ea);
    arena_attach(c);
    cr_assert_eq(arena_check(), 0);
    static uint64_t sc[DET_SLOTS];
    memcpy(sc, sa, sizeof(sc));
    det_run(c, 7, sc, oa);
    arena_attach(a);
    det_run(a, 7, sa, ob);
    cr_assert_eq(memcmp(oa, ob, sizeof(oa)), 0, "the restored copy diverged");
    cr_assert_eq(arena_check(), 0);
}

Test(arena, randomized_stress)
{
    enum { SLOTS = 1000, OPS = 40000 };
    static struct { char *p; size_t n; uint64_t tag; } slot[SLOTS];
    new_arena(GiB);
    uint64_t s = 12345, tag = 0;
    for (int i = 0; i < OPS; i++) {
        uint64_t r = rng_next(&s);
        unsigned k = r % SLOTS;
        size_t n;
        switch ((r >> 12) % 16) {
        case 0:  n = (r >> 20) % 300000; break;          /* large */
        case 1: case 2: n = (r >> 20) % 16384; break;    /* medium */
        default: n = (r >> 20) % 1040; break;            /* small */
        }
        if (slot[k].p)
            cr_assert(verify(slot[k].p, slot[k].n, slot[k].tag), "op %d: slot %u corrupted", i, k);
        switch ((r >> 8) % 4) {
        case 0: case 1:                                  /* malloc (freeing what was there) */
            arena_free(slot[k].p);
            slot[k].p = arena_malloc(n);
            cr_assert_not_null(slot[k].p);
            slot[k].n = n;
            slot[k].tag = ++tag;
            fill(slot[k].p, n, tag);
            break;
        case 2: {                                        /* realloc keeps the common prefix */
            char *q = arena_realloc(slot[k].p, n + 1);
            cr_assert_not_null(q);
            size_t keep = slot[k].n < n + 1 ? slot[k].n : n + 1;
            if (slot[k].p)
                cr_assert(verify(q, keep, slot[k].tag), "op %d: realloc lost content", i);
            slot[k].p = q;
            slot[k].n = n + 1;
            slot[k].tag = ++tag;
            fill(q, n + 1, tag);
            break;
        }
        default:
            arena_free(slot[k].p);
            slot[k].p = NULL;
            slot[k].n = 0;
            break;
        }
        if (i % 8 == 0)
            cr_assert_eq(arena_check(), 0, "op %d: metadata inconsistent", i);
    }
    for (int k = 0; k < SLOTS; k++) {
        if (slot[k].p)
            cr_assert(verify(slot[k].p, slot[k].n, slot[k].tag));
        arena_free(slot[k].p);
    }
    cr_assert_eq(arena_check(), 0);
    cr_assert_eq(arena_used(), 0);
    /* Live data peaks around 1000 * ~25 KiB; the touched extent must stay in proportion. */
    cr_expect_lt(arena_extent(), 128 * MiB, "extent %zu", arena_extent());
}

Test(arena, extent_stays_small_when_memory_is_reused)
{
    new_arena(GiB);
    void *keep = arena_malloc(100);
    for (int i = 0; i < 100000; i++) {               /* per-message style churn */
        void *a = arena_malloc(4000 + i % 1000);
        void *b = arena_calloc(1, 200);
        arena_free(a);
        arena_free(b);
    }
    cr_expect_leq(arena_extent(), 4 * 4096u, "extent %zu after churn", arena_extent());

    /* Repeatedly fill 8 MiB in pieces and free it all, in varying orders. */
    static void *p[2048];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 2048; i++)
            p[i] = arena_malloc(4096 - 16);
        for (int i = 0; i < 2048; i++)
            arena_free(p[(i * (round * 2 + 1)) % 2048]);
    }
    cr_expect_leq(arena_extent(), 8 * MiB + 4 * 4096u, "extent %zu", arena_extent());
    cr_expect_not_null(keep);
    cr_assert_eq(arena_check(), 0);
}

Test(arena, double_free_aborts, .signal = SIGABRT)
{
    new_arena(MiB);
    void *a = arena_malloc(64);
    void *guard = arena_malloc(64);
    (void)guard;
    arena_free(a);
    arena_free(a);
}

Test(arena, double_free_after_coalescing_aborts, .signal = SIGABRT)
{
    new_arena(MiB);
    void *a = arena_malloc(64);
    void *b = arena_malloc(64);
    void *guard = arena_malloc(64);
    (void)guard;
    arena_free(a);
    arena_free(b);                           /* b merges into a */
    arena_free(b);
}

Test(arena, invalid_pointer_aborts, .signal = SIGABRT)
{
    new_arena(MiB);
    char *a = arena_malloc(64);
    arena_free(a + 16);
}

Test(arena, check_detects_corruption)
{
    new_arena(MiB);
    uint64_t *a = arena_malloc(64);
    arena_malloc(64);
    cr_assert_eq(arena_check(), 0);
    a[-1] ^= 0x40;                           /* scribble on the chunk header */
    cr_expect_eq(arena_check(), -EFAULT);
}

/* arena_memalign (behind memalign, posix_memalign, aligned_alloc in a worker): every
 * alignment, usable size, free, realloc keeps the content, and the metadata stays sound. */
Test(arena, memalign_free_realloc_usable_size)
{
    new_arena(64 * MiB);
    void *p[13];
    size_t n = 100;

    cr_assert_null(arena_memalign(48, 10), "not a power of two");
    cr_assert_null(arena_memalign(0, 10));
    for (int i = 0; i < 13; i++) {
        size_t align = (size_t)1 << (i + 1);   /* 2 .. 8192 */
        p[i] = arena_memalign(align, n + (size_t)i);
        cr_assert_not_null(p[i]);
        cr_assert_eq((uintptr_t)p[i] % (align < 16 ? 16 : align), 0, "align %zu", align);
        cr_assert_geq(arena_usable_size(p[i]), n + (size_t)i);
        fill(p[i], n + (size_t)i, (uint64_t)i);
    }
    cr_assert_eq(arena_check(), 0);
    for (int i = 0; i < 13; i += 2) {
        p[i] = arena_realloc(p[i], 5000);
        cr_assert_not_null(p[i]);
        cr_assert(verify(p[i], n + (size_t)i, (uint64_t)i), "realloc %d kept the content", i);
    }
    for (int i = 1; i < 13; i += 2)
        cr_assert(verify(p[i], n + (size_t)i, (uint64_t)i));
    cr_assert_eq(arena_check(), 0);
    for (int i = 0; i < 13; i++)
        arena_free(p[i]);
    cr_assert_eq(arena_check(), 0);
    cr_assert_eq(arena_used(), 0, "everything given back");
}

/* The size given to arena_init is the cap (max_session_memory): allocations past it fail,
 * smaller ones still succeed afterwards, the same way every time. */
Test(arena, size_is_the_cap)
{
    int got[2];

    for (int run = 0; run < 2; run++) {
        new_arena(8 * MiB);
        got[run] = 0;
        while (arena_malloc(MiB))
            got[run]++;
        cr_assert_not_null(arena_malloc(1000), "small allocations still fit");
        cr_assert_leq(arena_extent(), 8 * MiB);
    }
    cr_assert_eq(got[0], 7);
    cr_assert_eq(got[1], got[0]);
}
