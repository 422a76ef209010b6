/* determ.c - libc calls that would escape determinism, answered by the session (determ.h).
 *
 * Heap: malloc, calloc, realloc, reallocarray, free, posix_memalign, aligned_alloc, memalign,
 *   valloc, pvalloc, malloc_usable_size (strdup, asprintf, ... call these). Not under ASan,
 *   which must own the heap to do its work: there the app's heap is libc's (docs say so).
 * Clocks: time, gettimeofday, clock_gettime (every clock id), timespec_get, clock.
 * Random: rand, srand, random, srandom, drand48, lrand48, mrand48, srand48, getrandom,
 *   getentropy, arc4random, arc4random_buf, arc4random_uniform.
 *
 * Everything here is a pure function of the event (its time), the session's PRNG and the
 * arena, all of which snapshots capture, so a replay returns the same answers. */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cessna.h"
#include "arena.h"
#include "determ.h"
#include "runtime.h"

static int active;   /* inside an event: the app runs */

void determ_enter(void)
{
    active = 1;
}

void determ_leave(void)
{
    active = 0;
}

/* libc's own definition of a function this file replaces, looked up once into *cache. */
static void *next_sym(void **cache, const char *name)
{
    if (!*cache)
        *cache = dlsym(RTLD_NEXT, name);
    return *cache;
}

/* ---- heap ---- */

#if !defined(__SANITIZE_ADDRESS__)

void *__libc_malloc(size_t n);
void *__libc_calloc(size_t k, size_t n);
void *__libc_realloc(void *p, size_t n);
void  __libc_free(void *p);
void *__libc_memalign(size_t align, size_t n);

static inline int in_arena(const void *p)
{
    return (uintptr_t)p - (uintptr_t)RT_ARENA_BASE < RT_ARENA_SIZE;
}

static void *nomem(void *p)
{
    if (!p)
        errno = ENOMEM;
    return p;
}

void *malloc(size_t n)
{
    return active ? nomem(arena_malloc(n)) : __libc_malloc(n);
}

void *calloc(size_t k, size_t n)
{
    return active ? nomem(arena_calloc(k, n)) : __libc_calloc(k, n);
}

void free(void *p)
{
    if (in_arena(p))
        arena_free(p);
    else
        __libc_free(p);
}

/* libc's usable size, for a block allocated before the session that moves into the arena. */
static void *real_usable_size;

static size_t libc_usable_size(void *p)
{
    size_t (*f)(void *) = (size_t (*)(void *))next_sym(&real_usable_size, "malloc_usable_size");

    return f ? f(p) : 0;
}

void *realloc(void *p, size_t n)
{
    if (!p)
        return malloc(n);
    if (in_arena(p)) {
        if (n == 0) {
            arena_free(p);
            return NULL;
        }
        return nomem(arena_realloc(p, n));
    }
    if (!active)
        return __libc_realloc(p, n);
    /* A block from before the session grows during it: its state must be in the arena. */
    if (n == 0) {
        __libc_free(p);
        return NULL;
    }
    void *q = arena_malloc(n);
    if (!q)
        return nomem(NULL);
    size_t have = libc_usable_size(p);
    memcpy(q, p, have < n ? have : n);
    __libc_free(p);
    return q;
}

void *reallocarray(void *p, size_t k, size_t n)
{
    size_t t;

    if (__builtin_mul_overflow(k, n, &t)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, t);
}

void *memalign(size_t align, size_t n)
{
    if (!active)
        return __libc_memalign(align, n);
    if (!align || (align & (align - 1))) {
        errno = EINVAL;
        return NULL;
    }
    return nomem(arena_memalign(align, n));
}

void *aligned_alloc(size_t align, size_t n)
{
    return memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (!align || (align & (align - 1)) || align % sizeof(void *))
        return EINVAL;
    void *p = active ? arena_memalign(align, n) : __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t n)
{
    return memalign((size_t)getpagesize(), n);
}

void *pvalloc(size_t n)
{
    size_t page = (size_t)getpagesize();

    if (n > SIZE_MAX - page) {
        errno = ENOMEM;
        return NULL;
    }
    return memalign(page, n ? (n + page - 1) & ~(page - 1) : page);
}

size_t malloc_usable_size(void *p)
{
    if (!p)
        return 0;
    return in_arena(p) ? arena_usable_size(p) : libc_usable_size(p);
}

#endif /* !__SANITIZE_ADDRESS__ */

/* ---- clocks: every clock reads the current event's time ---- */

/* libc's own clocks, for the runtime outside an event. */
static void *real_clock_gettime, *real_gettimeofday, *real_time, *real_clock;

int clock_gettime(clockid_t id, struct timespec *ts)
{
    if (!active) {
        int (*f)(clockid_t, struct timespec *) =
            (int (*)(clockid_t, struct timespec *))next_sym(&real_clock_gettime,
                                                            "clock_gettime");
        return f ? f(id, ts) : -1;
    }
    /* Realtime and monotonic alike: the event's time, which the orderer keeps monotonic.
     * CPU-time clocks too: a process's CPU time is not a function of its inputs. */
    uint64_t ms = cessna_now_ms();
    ts->tv_sec = (time_t)(ms / 1000);
    ts->tv_nsec = (long)(ms % 1000) * 1000000L;
    return 0;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    if (!active) {
        int (*f)(struct timeval *, void *) =
            (int (*)(struct timeval *, void *))next_sym(&real_gettimeofday, "gettimeofday");
        return f ? f(tv, tz) : -1;
    }
    uint64_t ms = cessna_now_ms();
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
    if (tz)
        memset(tz, 0, sizeof(struct timezone));
    return 0;
}

time_t time(time_t *t)
{
    if (!active) {
        time_t (*f)(time_t *) = (time_t (*)(time_t *))next_sym(&real_time, "time");
        return f ? f(t) : (time_t)-1;
    }
    time_t now = (time_t)(cessna_now_ms() / 1000);
    if (t)
        *t = now;
    return now;
}

int timespec_get(struct timespec *ts, int base)
{
    if (base != TIME_UTC)
        return 0;
    return clock_gettime(CLOCK_REALTIME, ts) == 0 ? base : 0;
}

clock_t clock(void)
{
    if (!active) {
        clock_t (*f)(void) = (clock_t (*)(void))next_sym(&real_clock, "clock");
        return f ? f() : (clock_t)-1;
    }
    return (clock_t)0;   /* CPU time used: not a function of the inputs; none, then */
}

/* Look up libc's own functions once, in the zygote: a lookup in each forked worker (the
 * first time its runtime read a clock) was the dynamic linker's share of setting one up. */
void determ_resolve_libc(void)
{
    next_sym(&real_clock_gettime, "clock_gettime");
    next_sym(&real_gettimeofday, "gettimeofday");
    next_sym(&real_time, "time");
    next_sym(&real_clock, "clock");
#ifndef __SANITIZE_ADDRESS__
    next_sym(&real_usable_size, "malloc_usable_size");
#endif
}

/* ---- randomness: the session's PRNG ---- */

/* rand/random/drand48 share one generator whose state is in the arena-held runtime state,
 * so srand(s) followed by rand() gives the same sequence every time, as in libc. */
static uint64_t next64(void)
{
    uint64_t *st = rt_rand_state();
    uint64_t z = (*st += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void seed(uint64_t s)
{
    *rt_rand_state() = s * 0x9e3779b97f4a7c15ull + 1;
}

#define REAL(ret, name, params, args)                                          \
    do {                                                                       \
        static void *real_;                                                    \
        ret (*f_) params = (ret (*) params)next_sym(&real_, #name);            \
        return f_ args;                                                        \
    } while (0)
#define REALV(name, params, args)                                              \
    do {                                                                       \
        static void *real_;                                                    \
        void (*f_) params = (void (*) params)next_sym(&real_, #name);          \
        f_ args;                                                               \
        return;                                                                \
    } while (0)

int rand(void)
{
    if (!active)
        REAL(int, rand, (void), ());
    return (int)(next64() >> 33);            /* 0 .. 2^31 - 1 = RAND_MAX */
}

long random(void)
{
    if (!active)
        REAL(long, random, (void), ());
    return (long)(next64() >> 33);
}

void srand(unsigned s)
{
    if (!active)
        REALV(srand, (unsigned), (s));
    seed(s);
}

void srandom(unsigned s)
{
    if (!active)
        REALV(srandom, (unsigned), (s));
    seed(s);
}

double drand48(void)
{
    if (!active)
        REAL(double, drand48, (void), ());
    return (double)(next64() >> 11) * 0x1.0p-53;
}

long lrand48(void)
{
    if (!active)
        REAL(long, lrand48, (void), ());
    return (long)(next64() >> 33);
}

long mrand48(void)
{
    if (!active)
        REAL(long, mrand48, (void), ());
    return (long)(int32_t)(uint32_t)(next64() >> 32);
}

void srand48(long s)
{
    if (!active)
        REALV(srand48, (long), (s));
    seed((uint64_t)s);
}

static void fill(void *buf, size_t len)
{
    unsigned char *p = buf;

    while (len) {
        uint64_t r = cessna_random();
        size_t n = len < 8 ? len : 8;
        memcpy(p, &r, n);
        p += n;
        len -= n;
    }
}

ssize_t getrandom(void *buf, size_t len, unsigned flags)
{
    if (!active)
        REAL(ssize_t, getrandom, (void *, size_t, unsigned), (buf, len, flags));
    if (len > 33554431)
        len = 33554431;                      /* as the kernel caps one call */
    fill(buf, len);
    return (ssize_t)len;
}

int getentropy(void *buf, size_t len)
{
    if (!active)
        REAL(int, getentropy, (void *, size_t), (buf, len));
    if (len > 256) {
        errno = EIO;
        return -1;
    }
    fill(buf, len);
    return 0;
}

uint32_t arc4random(void)
{
    if (!active)
        REAL(uint32_t, arc4random, (void), ());
    return (uint32_t)(cessna_random() >> 32);
}

void arc4random_buf(void *buf, size_t len)
{
    if (!active)
        REALV(arc4random_buf, (void *, size_t), (buf, len));
    fill(buf, len);
}

uint32_t arc4random_uniform(uint32_t bound)
{
    if (!active)
        REAL(uint32_t, arc4random_uniform, (uint32_t), (bound));
    if (bound < 2)
        return 0;
    uint32_t min = -bound % bound;           /* reject the biased low values */
    for (;;) {
        uint32_t r = (uint32_t)(cessna_random() >> 32);
        if (r >= min)
            return r % bound;
    }
}
