/* test_ring.c - the shared-memory SPSC record ring (common/ring.c). */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ring.h"

TestSuite(ring);

/* ---- helpers ---------------------------------------------------------------------------- */

static void *ring_map(size_t bytes, int shared)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED, "mmap %zu: %s", bytes, strerror(errno));
    return p;
}

/* A formatted ring with separate producer and consumer views, as in the real processes. */
struct tring {
    void *mem;
    size_t bytes;
    struct ring p, c;
};

static void tring_new(struct tring *t, uint32_t size)
{
    t->bytes = ring_mem_size(size);
    cr_assert_geq(t->bytes, sizeof(struct ring_shared) + size, "ring_mem_size(%u)", size);
    t->mem = ring_map(t->bytes, 0);
    memset(t->mem, 0xa5, t->bytes); /* formatting must not depend on zeroed memory */
    ring_format(t->mem, size);
    cr_assert_eq(ring_attach(&t->p, t->mem), 0, "attach producer");
    cr_assert_eq(ring_attach(&t->c, t->mem), 0, "attach consumer");
}

static void tring_free(struct tring *t)
{
    munmap(t->mem, t->bytes);
}

static uint64_t tail_of(const struct tring *t)
{
    return atomic_load(&((struct ring_shared *)t->mem)->tail);
}

static uint64_t head_of(const struct tring *t)
{
    return atomic_load(&((struct ring_shared *)t->mem)->head);
}

/* Record content derived from a sequence number: the seq itself in the first 8 bytes when
 * they fit, then a pattern of seq and offset. */
static uint8_t rec_byte(uint64_t seq, uint32_t i)
{
    return (uint8_t)(seq * 0x9e3779b1u + i * 31u + (i >> 8));
}

static void rec_fill(uint8_t *p, uint64_t seq, uint32_t len)
{
    uint32_t i = 0;
    if (len >= 8) {
        memcpy(p, &seq, 8);
        i = 8;
    }
    for (; i < len; i++)
        p[i] = rec_byte(seq, i);
}

/* 0 when p[0..len) is what rec_fill wrote for seq, else the first bad offset + 1. */
static uint32_t rec_check(const uint8_t *p, uint64_t seq, uint32_t len)
{
    uint32_t i = 0;
    if (len >= 8) {
        uint64_t s;
        memcpy(&s, p, 8);
        if (s != seq)
            return 1;
        i = 8;
    }
    for (; i < len; i++)
        if (p[i] != rec_byte(seq, i))
            return i + 1;
    return 0;
}

static uint16_t rec_type(uint64_t seq)
{
    return (uint16_t)(1 + seq % 65535); /* never RING_PAD */
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* Push one record; 1 on success, 0 when full. Checks where ring_reserve put it. */
static int push(struct tring *t, uint64_t seq, uint32_t len)
{
    uint8_t *data = (uint8_t *)t->mem + sizeof(struct ring_shared);
    uint8_t *p = ring_reserve(&t->p, rec_type(seq), len);

    if (!p)
        return 0;
    cr_assert(p >= data + RING_HDR_LEN && p + len <= data + t->p.size,
              "seq %llu: payload [%p, +%u) outside the data area", (unsigned long long)seq,
              (void *)p, len);
    cr_assert_eq((uintptr_t)(p - data) % 8, 0, "seq %llu: payload not 8-aligned",
                 (unsigned long long)seq);
    rec_fill(p, seq, len);
    ring_commit(&t->p);
    return 1;
}

/* Pop one record and check it is seq with length len. */
static void pop_expect(struct tring *t, uint64_t seq, uint32_t len)
{
    uint16_t type = 0;
    uint32_t got_len = 0;
    const uint8_t *p = ring_peek(&t->c, &type, &got_len);

    cr_assert_not_null(p, "seq %llu: ring empty", (unsigned long long)seq);
    cr_assert_neq(type, RING_PAD, "seq %llu: a PAD record reached the consumer",
                  (unsigned long long)seq);
    cr_assert_eq(type, rec_type(seq), "seq %llu: type %u, want %u", (unsigned long long)seq,
                 type, rec_type(seq));
    cr_assert_eq(got_len, len, "seq %llu: len %u, want %u", (unsigned long long)seq, got_len, len);
    uint32_t bad = rec_check(p, seq, len);
    cr_assert_eq(bad, 0, "seq %llu: content differs at byte %u", (unsigned long long)seq, bad - 1);
    ring_pop(&t->c);
}

/* ---- single thread ---------------------------------------------------------------------- */

Test(ring, empty_after_format)
{
    struct tring t;
    uint16_t type;
    uint32_t len;

    tring_new(&t, 4096);
    cr_assert_eq(t.p.size, 4096);
    cr_assert(ring_empty(&t.c), "a new ring is empty");
    cr_assert_null(ring_peek(&t.c, &type, &len), "nothing to peek");
    cr_assert_eq(head_of(&t), 0);
    cr_assert_eq(tail_of(&t), 0);
    tring_free(&t);
}

Test(ring, push_peek_pop)
{
    struct tring t;
    uint16_t type;
    uint32_t len;

    tring_new(&t, 4096);
    cr_assert(push(&t, 1, 5));
    cr_assert(push(&t, 2, 0));
    cr_assert(push(&t, 3, 100));
    cr_assert(!ring_empty(&t.c));
    cr_assert_eq(tail_of(&t), 16 + 8 + 112, "records take 8 + len rounded up to 8");

    /* Peeking twice gives the same record. */
    const void *a = ring_peek(&t.c, &type, &len);
    const void *b = ring_peek(&t.c, &type, &len);
    cr_assert_eq(a, b, "peek without pop returns the same record");
    pop_expect(&t, 1, 5);
    pop_expect(&t, 2, 0);
    pop_expect(&t, 3, 100);
    cr_assert(ring_empty(&t.c));
    cr_assert_null(ring_peek(&t.c, &type, &len));
    cr_assert_eq(head_of(&t), tail_of(&t));
    tring_free(&t);
}

Test(ring, reserved_but_uncommitted_is_invisible)
{
    struct tring t;
    uint16_t type;
    uint32_t len;

    tring_new(&t, 1024);
    void *p = ring_reserve(&t.p, 7, 16);
    cr_assert_not_null(p);
    cr_assert(ring_empty(&t.c), "not committed yet");
    cr_assert_null(ring_peek(&t.c, &type, &len));
    memset(p, 1, 16);
    ring_commit(&t.p);
    cr_assert_not_null(ring_peek(&t.c, &type, &len));
    cr_assert_eq(type, 7);
    cr_assert_eq(len, 16);
    tring_free(&t);
}

Test(ring, full_ring_refuses)
{
    struct tring t;

    tring_new(&t, 256);
    /* 24-byte payloads take 32 bytes: exactly 8 fit. */
    for (uint64_t s = 0; s < 8; s++)
        cr_assert(push(&t, s, 24), "record %llu of 8 fits", (unsigned long long)s);
    uint64_t tail = tail_of(&t);
    cr_assert_eq(tail, 256);
    cr_assert_null(ring_reserve(&t.p, 1, 24), "9th record: full");
    cr_assert_null(ring_reserve(&t.p, 1, 0), "even an empty record: full");
    cr_assert_eq(tail_of(&t), tail, "a refused reserve publishes nothing");

    pop_expect(&t, 0, 24);
    cr_assert_null(ring_reserve(&t.p, 1, 25), "25 bytes need 40, only 32 free");
    cr_assert(push(&t, 8, 24), "room again after a pop");
    cr_assert_null(ring_reserve(&t.p, 1, 0), "full again");
    for (uint64_t s = 1; s <= 8; s++)
        pop_expect(&t, s, 24);
    cr_assert(ring_empty(&t.c));
    tring_free(&t);
}

Test(ring, refused_reserve_does_not_publish_pad)
{
    struct tring t;

    tring_new(&t, 256);
    for (uint64_t s = 0; s < 7; s++)
        cr_assert(push(&t, s, 24));
    pop_expect(&t, 0, 24);
    pop_expect(&t, 1, 24);
    /* tail at 224 (32 to the end), head at 64: 96 bytes free, but a 72-byte record needs a
     * 32-byte PAD first: 104 > 96. */
    uint64_t tail = tail_of(&t);
    cr_assert_eq(tail, 224);
    cr_assert_null(ring_reserve(&t.p, 1, 64), "PAD + record do not fit");
    cr_assert_eq(tail_of(&t), tail, "no PAD was published for a refused record");
    /* 56 bytes (64 with header) + 32 PAD = 96: fits exactly. */
    cr_assert(push(&t, 7, 56), "PAD + record fit exactly");
    cr_assert_eq(tail_of(&t), 256 + 64);
    cr_assert_null(ring_reserve(&t.p, 1, 0), "now full");
    for (uint64_t s = 2; s < 7; s++)
        pop_expect(&t, s, 24);
    pop_expect(&t, 7, 56);
    cr_assert(ring_empty(&t.c));
    tring_free(&t);
}

Test(ring, exact_fit_at_end_needs_no_pad)
{
    struct tring t;

    tring_new(&t, 256);
    cr_assert(push(&t, 0, 88)); /* 96 */
    cr_assert(push(&t, 1, 88)); /* 192 */
    pop_expect(&t, 0, 88);
    pop_expect(&t, 1, 88);
    cr_assert(push(&t, 2, 56), "64 bytes exactly to the end");
    cr_assert_eq(tail_of(&t), 256, "no PAD in front of an exact fit");
    cr_assert(push(&t, 3, 0), "next record starts at offset 0");
    pop_expect(&t, 2, 56);
    pop_expect(&t, 3, 0);
    tring_free(&t);
}

Test(ring, pad_published_before_commit)
{
    struct tring t;
    uint16_t type;
    uint32_t len;

    tring_new(&t, 512);
    cr_assert(push(&t, 1, 184)); /* 192 bytes */
    cr_assert(push(&t, 2, 248)); /* 256 bytes: 64 left to the end */
    pop_expect(&t, 1, 184);
    pop_expect(&t, 2, 248);
    void *p = ring_reserve(&t.p, 5, 100); /* 112 bytes: a 64-byte PAD, then offset 0 */
    cr_assert_not_null(p, "100 bytes after a 64-byte PAD");
    cr_assert_eq(p, t.p.data + RING_HDR_LEN, "the record starts at offset 0");
    cr_assert_null(ring_peek(&t.c, &type, &len),
                   "the consumer skips the PAD but the record is not committed yet");
    cr_assert_eq(head_of(&t), 512, "the PAD was consumed");
    rec_fill(p, 42, 100);
    ring_commit(&t.p);
    const uint8_t *q = ring_peek(&t.c, &type, &len);
    cr_assert_not_null(q, "committed record visible");
    cr_assert_eq(type, 5);
    cr_assert_eq(len, 100);
    cr_assert_eq(rec_check(q, 42, 100), 0, "content");
    ring_pop(&t.c);
    cr_assert(ring_empty(&t.c));
    cr_assert_eq(head_of(&t), 512 + 112);
    tring_free(&t);
}

/* Move an empty ring's head and tail to offset off without PAD records. */
static void move_to(struct tring *t, uint32_t off)
{
    uint32_t size = t->p.size;

    for (;;) {
        uint32_t cur = (uint32_t)(tail_of(t) % size);
        if (cur == off)
            return;
        uint32_t gap = off > cur ? off - cur : size - cur;
        if (gap > size / 2)
            gap = size / 2;
        cr_assert(push(t, 1, gap - RING_HDR_LEN), "filler of %u bytes", gap);
        pop_expect(t, 1, gap - RING_HDR_LEN);
    }
}

Test(ring, max_payload)
{
    static const uint32_t sizes[] = { 64, 256, 4096, 1u << 20 };

    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        struct tring t;
        uint32_t size = sizes[k];

        tring_new(&t, size);
        uint32_t max = ring_max_payload(&t.p);
        cr_assert_eq(max, size / 2 - RING_HDR_LEN, "size %u: max payload %u", size, max);
        cr_assert_null(ring_reserve(&t.p, 1, max + 1), "size %u: max + 1 refused", size);
        cr_assert_null(ring_reserve(&t.p, 1, size), "size %u: size refused", size);
        cr_assert_null(ring_reserve(&t.p, 1, UINT32_MAX), "size %u: UINT32_MAX refused", size);
        cr_assert_eq(tail_of(&t), 0, "refusals publish nothing");
        cr_assert(ring_empty(&t.c));

        /* A max record fits into an empty ring wherever head and tail stand. */
        uint32_t step = size <= 4096 ? 8 : 4096;
        for (uint32_t off = 0; off <= size; off += step) {
            uint32_t at = off < size ? off : size - 8;
            move_to(&t, at);
            cr_assert(push(&t, at, max), "size %u: max record at offset %u", size, at);
            pop_expect(&t, at, max);
            cr_assert(ring_empty(&t.c));
        }
        tring_free(&t);
    }
}

/* Records of every size, produced in bursts and consumed in bursts, many times round. */
Test(ring, wraparound_many_cycles, .timeout = 20)
{
    struct tring t;
    uint64_t produced = 0, consumed = 0, pads = 0;
    uint64_t seed = 12345;

    tring_new(&t, 1024);
    uint32_t max = ring_max_payload(&t.p);
    while (consumed < 300000) {
        uint64_t r = mix(++seed);
        int burst = 1 + (int)(r % 12);
        for (int i = 0; i < burst; i++) {
            uint64_t seq = produced;
            uint32_t len = (uint32_t)(mix(seq) % 4 == 0 ? mix(seq + 7) % (max + 1)
                                                         : mix(seq + 7) % 64);
            uint64_t before = tail_of(&t);
            if (!push(&t, seq, len))
                break;
            uint64_t used = tail_of(&t) - before;
            uint32_t need = (RING_HDR_LEN + len + 7) & ~7u;
            cr_assert(used == need || (used > need && (before + used - need) % 1024 == 0),
                      "seq %llu: tail moved %llu for a %u-byte record",
                      (unsigned long long)seq, (unsigned long long)used, need);
            pads += used != need;
            produced++;
        }
        int take = (int)((r >> 16) % 12);
        for (int i = 0; i < take && consumed < produced; i++) {
            uint64_t seq = consumed;
            uint32_t len = (uint32_t)(mix(seq) % 4 == 0 ? mix(seq + 7) % (max + 1)
                                                         : mix(seq + 7) % 64);
            pop_expect(&t, seq, len);
            consumed++;
        }
        cr_assert_leq(tail_of(&t) - head_of(&t), 1024, "never more than size in use");
    }
    cr_assert_gt(tail_of(&t) / 1024, 1000, "the ring went round many times");
    cr_assert_gt(pads, 1000, "PAD records were needed (%llu)", (unsigned long long)pads);
    tring_free(&t);
}

Test(ring, attach_refuses_bad_memory)
{
    size_t bytes = ring_mem_size(8192);
    uint8_t *mem = ring_map(bytes, 0);
    struct ring r;
    static const uint32_t bad_sizes[] = { 0, 1, 8, 32, 63, 96, 100, 1000, 4097, 0x80000001u };

    memset(mem, 0, bytes);
    cr_assert_eq(ring_attach(&r, mem), -EINVAL, "zeroed memory is not a ring");
    memset(mem, 0xff, bytes);
    cr_assert_eq(ring_attach(&r, mem), -EINVAL, "0xff memory is not a ring");
    for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
        ring_format(mem, bad_sizes[i]);
        cr_assert_eq(ring_attach(&r, mem), -EINVAL, "size %u refused", bad_sizes[i]);
    }
    ring_format(mem, 8192);
    ((struct ring_shared *)mem)->magic ^= 1;
    cr_assert_eq(ring_attach(&r, mem), -EINVAL, "bad magic refused");
    ring_format(mem, 64);
    cr_assert_eq(ring_attach(&r, mem), 0, "64 is the smallest ring");
    ring_format(mem, 8192);
    cr_assert_eq(ring_attach(&r, mem), 0);
    cr_assert_eq(r.size, 8192);
    munmap(mem, bytes);
}

Test(ring, consumer_sleep_flags)
{
    struct tring t;

    tring_new(&t, 1024);
    cr_assert_eq(ring_wants_wakeup(&t.p), 0, "nobody sleeps yet");
    cr_assert_eq(ring_sleep_prepare(&t.c), 1, "empty: the consumer may block");
    cr_assert_eq(ring_wants_wakeup(&t.p), 1, "the sleeping consumer needs its doorbell");
    cr_assert_eq(ring_wants_wakeup(&t.p), 0, "one doorbell per sleep");

    cr_assert_eq(ring_sleep_prepare(&t.c), 1);
    ring_sleep_done(&t.c);
    cr_assert_eq(ring_wants_wakeup(&t.p), 0, "sleep_done clears the flag");

    cr_assert(push(&t, 1, 8));
    cr_assert_eq(ring_sleep_prepare(&t.c), 0, "not empty: do not block");
    cr_assert_eq(ring_wants_wakeup(&t.p), 0, "the flag was cleared again");
    tring_free(&t);
}

Test(ring, producer_wait_flags)
{
    struct tring t;

    tring_new(&t, 256);
    cr_assert_eq(ring_wait_prepare(&t.p, 24), 0, "room: do not block");
    cr_assert_eq(ring_producer_waits(&t.c), 0, "the flag was cleared again");
    for (uint64_t s = 0; s < 8; s++)
        cr_assert(push(&t, s, 24));
    cr_assert_eq(ring_wait_prepare(&t.p, 0), 1, "full: the producer may block");
    pop_expect(&t, 0, 24);
    cr_assert_eq(ring_producer_waits(&t.c), 1, "the waiting producer needs its doorbell");
    cr_assert_eq(ring_producer_waits(&t.c), 0, "one doorbell per wait");
    cr_assert_eq(ring_wait_prepare(&t.p, 24), 0, "room for 24 after a pop");
    cr_assert_eq(ring_wait_prepare(&t.p, 25), 1, "no room for 25");
    tring_free(&t);
}

/* ring_wait_prepare's idea of room matches ring_reserve's, PAD included. */
Test(ring, wait_prepare_agrees_with_reserve)
{
    struct tring t;
    uint64_t produced = 0, consumed = 0;

    tring_new(&t, 512);
    uint32_t max = ring_max_payload(&t.p);
    for (int it = 0; it < 100000; it++) {
        uint64_t r = mix((uint64_t)it + 99);
        if (r % 3) {
            uint32_t len = (uint32_t)((r >> 8) % (max + 1));
            int blocks = ring_wait_prepare(&t.p, len);
            ring_producer_waits(&t.c); /* clear the flag either way */
            uint64_t tail = tail_of(&t);
            int pushed = push(&t, produced, len);
            cr_assert_eq(blocks, !pushed, "len %u at tail %llu head %llu: wait_prepare %d, "
                         "reserve %s", len, (unsigned long long)tail,
                         (unsigned long long)head_of(&t), blocks, pushed ? "ok" : "NULL");
            if (pushed) {
                produced++;
                cr_assert(produced - consumed <= 512 / 8);
            } else {
                cr_assert_eq(tail_of(&t), tail, "a refused reserve publishes nothing");
            }
        } else if (consumed < produced) {
            uint16_t type;
            uint32_t len;
            cr_assert_not_null(ring_peek(&t.c, &type, &len));
            cr_assert_eq(type, rec_type(consumed));
            cr_assert_eq(rec_check(ring_peek(&t.c, &type, &len), consumed, len), 0);
            ring_pop(&t.c);
            consumed++;
        }
    }
    tring_free(&t);
}

/* ---- two threads / two processes -------------------------------------------------------- */

#define STRESS_N      1000000ull
#define STRESS_RING   4096u
#define STRESS_PAUSE  100000ull  /* every so often one side pauses so the other must block */

/* Shared between the sides (in MAP_SHARED memory for the two-process test). */
struct stress {
    _Atomic int stop;
    int efd_cons;   /* consumer's doorbell */
    int efd_prod;   /* producer's doorbell */
    uint64_t consumer_sleeps, producer_waits, bells_cons, bells_prod;
    char perr[256], cerr[256];
};

static uint32_t stress_len(uint64_t seq, uint32_t max)
{
    uint64_t m = mix(seq);
    if (m % 64 == 0)
        return (uint32_t)((m >> 8) % (max + 1));  /* now and then up to the max */
    return (uint32_t)((m >> 8) % 301);
}

static void bell(int efd)
{
    uint64_t one = 1;
    ssize_t n = write(efd, &one, 8);
    (void)n;
}

/* Block on a doorbell. A lost wakeup would block forever; give up after 10 s with that
 * diagnosis instead (the ring is not looked at meanwhile, so nothing is papered over). */
static int doorbell_wait(struct stress *s, int efd, char *err, const char *who)
{
    for (int waited = 0;; waited += 100) {
        struct pollfd pfd = { .fd = efd, .events = POLLIN };
        int rc = poll(&pfd, 1, 100);
        if (rc == 1) {
            uint64_t v;
            if (read(efd, &v, 8) != 8) {
                snprintf(err, 256, "%s: eventfd read: %s", who, strerror(errno));
                return -1;
            }
            return 0;
        }
        if (rc == -1 && errno != EINTR) {
            snprintf(err, 256, "%s: poll: %s", who, strerror(errno));
            return -1;
        }
        if (atomic_load(&s->stop))
            return -1;
        if (waited >= 10000) {
            snprintf(err, 256, "lost wakeup: the %s blocked for 10 s", who);
            return -1;
        }
    }
}

static int stress_produce(struct stress *s, struct ring *r)
{
    uint32_t max = ring_max_payload(r);
    int batch = 1;

    for (uint64_t seq = 1; seq <= STRESS_N; seq++) {
        uint32_t len = stress_len(seq, max);
        uint8_t *p;

        while (!(p = ring_reserve(r, rec_type(seq), len))) {
            /* Full: make sure the consumer is awake before blocking ourselves. */
            if (ring_wants_wakeup(r)) {
                s->bells_cons++;
                bell(s->efd_cons);
            }
            if (ring_wait_prepare(r, len)) {
                s->producer_waits++;
                if (doorbell_wait(s, s->efd_prod, s->perr, "producer") < 0)
                    goto fail;
            }
        }
        rec_fill(p, seq, len);
        ring_commit(r);
        if (--batch == 0 || seq % STRESS_PAUSE == 0) {
            if (ring_wants_wakeup(r)) {
                s->bells_cons++;
                bell(s->efd_cons);
            }
            batch = 1 + (int)(mix(seq ^ 0x55) % 16);
        }
        if (seq % STRESS_PAUSE == 0)
            usleep(2000); /* let the consumer drain and go to sleep */
    }
    if (ring_wants_wakeup(r)) {
        s->bells_cons++;
        bell(s->efd_cons);
    }
    return 0;
fail:
    atomic_store(&s->stop, 1);
    return -1;
}

static int stress_consume(struct stress *s, struct ring *r)
{
    uint32_t max = ring_max_payload(r);
    uint64_t seq = 1;

    while (seq <= STRESS_N) {
        uint16_t type;
        uint32_t len;
        const uint8_t *p = ring_peek(r, &type, &len);

        if (!p) {
            if (ring_sleep_prepare(r)) {
                s->consumer_sleeps++;
                if (doorbell_wait(s, s->efd_cons, s->cerr, "consumer") < 0)
                    goto fail;
                ring_sleep_done(r);
            }
            continue;
        }
        uint32_t want_len = stress_len(seq, max), bad;
        if (type != rec_type(seq) || len != want_len) {
            snprintf(s->cerr, sizeof(s->cerr), "seq %llu: type %u len %u, want type %u len %u",
                     (unsigned long long)seq, type, len, rec_type(seq), want_len);
            goto fail;
        }
        if ((bad = rec_check(p, seq, len)) != 0) {
            snprintf(s->cerr, sizeof(s->cerr), "seq %llu (len %u): content differs at byte %u",
                     (unsigned long long)seq, len, bad - 1);
            goto fail;
        }
        ring_pop(r);
        if (ring_producer_waits(r)) {
            s->bells_prod++;
            bell(s->efd_prod);
        }
        if (seq % STRESS_PAUSE == STRESS_PAUSE / 2)
            usleep(2000); /* let the producer fill the ring and wait */
        seq++;
    }
    uint16_t type;
    uint32_t len;
    if (ring_peek(r, &type, &len)) {
        snprintf(s->cerr, sizeof(s->cerr), "a record after the last one");
        goto fail;
    }
    return 0;
fail:
    atomic_store(&s->stop, 1);
    return -1;
}

static void stress_init(struct stress *s)
{
    memset(s, 0, sizeof(*s));
    s->efd_cons = eventfd(0, EFD_CLOEXEC);
    s->efd_prod = eventfd(0, EFD_CLOEXEC);
    cr_assert(s->efd_cons >= 0 && s->efd_prod >= 0, "eventfd: %s", strerror(errno));
}

static void stress_report(const struct stress *s)
{
    cr_log_info("ring stress: consumer slept %llu times, producer waited %llu times, "
                "%llu + %llu doorbells", (unsigned long long)s->consumer_sleeps,
                (unsigned long long)s->producer_waits, (unsigned long long)s->bells_cons,
                (unsigned long long)s->bells_prod);
    cr_assert_gt(s->consumer_sleeps, 0, "the consumer never slept: sleep path not exercised");
    cr_assert_gt(s->producer_waits, 0, "the producer never waited: wait path not exercised");
}

struct stress_thread {
    struct stress *s;
    struct ring r;
    int rc;
};

static void *producer_thread(void *arg)
{
    struct stress_thread *pt = arg;
    pt->rc = stress_produce(pt->s, &pt->r);
    return NULL;
}

Test(ring, stress_two_threads, .timeout = 20)
{
    struct stress s;
    struct stress_thread pt = { .s = &s };
    struct ring cr;
    size_t bytes = ring_mem_size(STRESS_RING);
    void *mem = ring_map(bytes, 0);
    pthread_t th;

    stress_init(&s);
    ring_format(mem, STRESS_RING);
    cr_assert_eq(ring_attach(&pt.r, mem), 0);
    cr_assert_eq(ring_attach(&cr, mem), 0);
    cr_assert_eq(pthread_create(&th, NULL, producer_thread, &pt), 0, "pthread_create");
    int crc = stress_consume(&s, &cr);
    pthread_join(th, NULL);
    cr_assert_eq(crc, 0, "consumer: %s", s.cerr);
    cr_assert_eq(pt.rc, 0, "producer: %s", s.perr);
    stress_report(&s);
    close(s.efd_cons);
    close(s.efd_prod);
    munmap(mem, bytes);
}

Test(ring, stress_two_processes, .timeout = 20)
{
    size_t rbytes = ring_mem_size(STRESS_RING);
    size_t bytes = (sizeof(struct stress) + 63) / 64 * 64 + rbytes;
    uint8_t *shm = ring_map(bytes, 1);
    struct stress *s = (struct stress *)shm;
    void *mem = shm + (sizeof(struct stress) + 63) / 64 * 64;
    struct ring cr;
    int status;

    stress_init(s);
    ring_format(mem, STRESS_RING);
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct ring pr;
        if (ring_attach(&pr, mem) != 0) {
            snprintf(s->perr, sizeof(s->perr), "child: ring_attach failed");
            atomic_store(&s->stop, 1);
            _exit(1);
        }
        _exit(stress_produce(s, &pr) == 0 ? 0 : 1);
    }
    cr_assert_eq(ring_attach(&cr, mem), 0);
    int crc = stress_consume(s, &cr);
    if (crc != 0)
        kill(pid, SIGKILL);
    cr_assert_eq(waitpid(pid, &status, 0), pid, "waitpid: %s", strerror(errno));
    cr_assert_eq(crc, 0, "consumer: %s", s->cerr);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "producer process: %s (status %#x)",
              s->perr, status);
    stress_report(s);
    close(s->efd_cons);
    close(s->efd_prod);
    munmap(shm, bytes);
}

/* ---- a hostile producer: the consumer checks what it reads and never loops -------------- */

static void scribble_record(struct tring *t, uint64_t at, uint32_t len, uint16_t type)
{
    struct ring_shared *sh = t->mem;
    uint8_t *p = (uint8_t *)t->mem + sizeof(*sh) + (at & (sh->size - 1));

    memcpy(p, &len, 4);
    memcpy(p + 4, &type, 2);
}

Test(ring, bogus_record_length_breaks_the_ring_not_the_consumer, .timeout = 5)
{
    struct tring t;
    uint16_t type;
    uint32_t len;

    tring_new(&t, 4096);
    void *w = ring_reserve(&t.p, 7, 16);
    cr_assert_not_null(w);
    ring_commit(&t.p);
    scribble_record(&t, 0, 0x7ffffff0u, 7);
    cr_assert_null(ring_peek(&t.c, &type, &len));
    cr_assert_not_null(t.c.broken);
    cr_assert_null(ring_peek(&t.c, &type, &len), "stays broken");
    tring_free(&t);
}

Test(ring, huge_pad_record_breaks_the_ring, .timeout = 5)
{
    struct tring t;
    uint16_t type;
    uint32_t len;

    tring_new(&t, 4096);
    cr_assert_not_null(ring_reserve(&t.p, 7, 16));
    ring_commit(&t.p);
    scribble_record(&t, 0, 0x7ffffff0u, RING_PAD);
    cr_assert_null(ring_peek(&t.c, &type, &len));
    cr_assert_not_null(t.c.broken);
    tring_free(&t);
}

Test(ring, tail_beyond_the_ring_breaks_it, .timeout = 5)
{
    struct tring t;
    uint16_t type;
    uint32_t len;

    tring_new(&t, 4096);
    atomic_store(&((struct ring_shared *)t.mem)->tail, 1ull << 40);
    cr_assert_null(ring_peek(&t.c, &type, &len));
    cr_assert_not_null(t.c.broken);
    tring_free(&t);
}

Test(ring, record_longer_than_what_was_published_breaks_it, .timeout = 5)
{
    struct tring t;
    uint16_t type;
    uint32_t len;

    tring_new(&t, 4096);
    cr_assert_not_null(ring_reserve(&t.p, 7, 16));
    ring_commit(&t.p);
    scribble_record(&t, 0, 1024, 7);   /* claims more than tail - head */
    cr_assert_null(ring_peek(&t.c, &type, &len));
    cr_assert_not_null(t.c.broken);
    tring_free(&t);
}

/* A producer that rewinds the shared head cannot make the consumer read records again. */
Test(ring, rewound_head_is_not_read_back, .timeout = 5)
{
    struct tring t;
    uint16_t type;
    uint32_t len;
    int seen = 0;

    tring_new(&t, 4096);
    for (int i = 0; i < 3; i++) {
        cr_assert_not_null(ring_reserve(&t.p, 7, 16));
        ring_commit(&t.p);
    }
    while (ring_peek(&t.c, &type, &len)) {
        ring_pop(&t.c);
        atomic_store(&((struct ring_shared *)t.mem)->head, 0);   /* the producer scribbles */
        cr_assert_lt(++seen, 10, "the consumer loops on rewound records");
    }
    cr_assert_eq(seen, 3);
    cr_assert_null(t.c.broken);
    tring_free(&t);
}

/* ---- long records: pieces ---------------------------------------------------------------- */

/* Byte i of long record seq (head and body together). */
static uint8_t long_byte(uint64_t seq, uint32_t i)
{
    return (uint8_t)(seq * 131u + i * 7u + (i >> 9));
}

struct long_rx {
    struct ring_asm a;
    uint64_t next;          /* the record expected next */
    unsigned pieces;        /* ring records flagged as pieces */
    unsigned singles;
};

/* Consume what the ring holds, putting pieces together; checks records seq next, ... with
 * the lengths in lens[]. Returns the number of whole records taken. */
static unsigned long_drain(struct tring *t, struct long_rx *rx, const uint32_t *lens, uint32_t max)
{
    const void *p, *whole;
    uint16_t type;
    uint32_t len, wlen;
    unsigned n = 0;

    while ((p = ring_peek(&t->c, &type, &len))) {
        uint16_t flags = t->c.peeked_flags;
        int rc = ring_asm_take(&rx->a, type, flags, p, len, max, &whole, &wlen);
        cr_assert_geq(rc, 0, "record %llu: %s", (unsigned long long)rx->next, rx->a.err);
        cr_assert_leq(len, ring_max_payload(&t->c));
        if (flags)
            rx->pieces++;
        else
            rx->singles++;
        if (rc == 1) {
            uint64_t seq = rx->next++;
            cr_assert_eq(type, rec_type(seq));
            cr_assert_eq(wlen, lens[seq], "record %llu: %u bytes, want %u",
                         (unsigned long long)seq, wlen, lens[seq]);
            cr_assert_eq(flags != 0, lens[seq] > ring_max_payload(&t->c),
                         "record %llu of %u bytes: in pieces exactly when it does not fit one",
                         (unsigned long long)seq, wlen);
            for (uint32_t i = 0; i < wlen; i++)
                if (((const uint8_t *)whole)[i] != long_byte(seq, i))
                    cr_assert_fail("record %llu: byte %u differs", (unsigned long long)seq, i);
            ring_asm_reset(&rx->a);
            n++;
        } else {
            uint32_t have;
            cr_assert_not_null(ring_asm_partial(&rx->a, &have));
            cr_assert_gt(have, 0);
        }
        ring_pop(&t->c);
    }
    return n;
}

static void long_round_trip(uint32_t size, const uint32_t *lens, unsigned count)
{
    struct tring t;
    struct long_rx rx = { 0 };
    uint8_t head[24];

    tring_new(&t, size);
    for (unsigned seq = 0; seq < count; seq++) {
        uint32_t hlen = lens[seq] < sizeof(head) ? lens[seq] : sizeof(head), done = 0;
        uint8_t *body = malloc(lens[seq] + 1);
        cr_assert(body);
        for (uint32_t i = 0; i < lens[seq]; i++)
            *(i < hlen ? &head[i] : &body[i - hlen]) = long_byte(seq, i);
        int spins = 0;
        while (!ring_put(&t.p, rec_type(seq), head, hlen, body, lens[seq] - hlen, &done)) {
            uint32_t need = ring_put_need(&t.p, lens[seq], done);
            cr_assert_leq(need, ring_max_payload(&t.p));
            cr_assert_eq(ring_wait_prepare(&t.p, need), 1, "full, so the producer may sleep");
            long_drain(&t, &rx, lens, 64u << 20);
            cr_assert_eq(ring_producer_waits(&t.c), 1);
            cr_assert_lt(++spins, 100000);
        }
        cr_assert_eq(done, 0, "done is 0 again after a whole record");
        free(body);
    }
    long_drain(&t, &rx, lens, 64u << 20);
    cr_assert_eq(rx.next, count, "every record arrived");
    cr_assert(ring_empty(&t.c));
    ring_asm_reset(&rx.a);
    tring_free(&t);
}

Test(ring, long_records_of_sizes_around_the_piece_boundary, .timeout = 20)
{
    const uint32_t size = 4096;
    struct tring t;

    tring_new(&t, size);
    const uint32_t m = ring_max_payload(&t.p);         /* largest record in one piece */
    const uint32_t piece = ring_put_need(&t.p, 1u << 20, 1);   /* a middle piece */
    tring_free(&t);
    cr_assert_lt(piece, m);
    uint32_t lens[] = {
        0, 1, 7, 8, m - 1, m, m + 1, m + 2, m + 8,
        piece - 8, piece, piece + 1, 2 * piece - 8, 2 * piece - 9, 2 * piece - 7,
        2 * m - 1, 2 * m, 2 * m + 1, 3 * piece, 5 * m + 3, 17, 65536, 65537, 1u << 20, 3,
    };
    long_round_trip(size, lens, sizeof(lens) / sizeof(lens[0]));
}

Test(ring, long_records_in_a_session_sized_ring, .timeout = 20)
{
    uint32_t lens[40];

    for (unsigned i = 0; i < 40; i++)
        lens[i] = (uint32_t)(mix(i + 1) % (3u << 20)) + (i % 3 == 0 ? 0 : 100);
    long_round_trip(256u << 10, lens, 40);
}

Test(ring, long_record_pieces_use_the_room_a_pop_makes, .timeout = 5)
{
    struct tring t;
    struct long_rx rx = { 0 };
    static uint8_t body[100000];
    uint32_t lens[1] = { sizeof(body) }, done = 0;

    tring_new(&t, 4096);
    for (uint32_t i = 0; i < sizeof(body); i++)
        body[i] = long_byte(0, i);
    /* The ring fills after a few pieces; done says how far it got, and the next call with
     * the same done goes on from there. */
    cr_assert_eq(ring_put(&t.p, rec_type(0), NULL, 0, body, sizeof(body), &done), 0);
    cr_assert_gt(done, 0);
    cr_assert_lt(done, sizeof(body));
    uint32_t first = done;
    cr_assert_eq(ring_put(&t.p, rec_type(0), NULL, 0, body, sizeof(body), &done), 0);
    cr_assert_eq(done, first, "no room, no progress");
    while (!ring_put(&t.p, rec_type(0), NULL, 0, body, sizeof(body), &done))
        cr_assert_eq(long_drain(&t, &rx, lens, 1u << 20), 0, "not whole before the last piece");
    cr_assert_eq(long_drain(&t, &rx, lens, 1u << 20), 1);
    cr_assert_geq(rx.pieces, sizeof(body) / ring_max_payload(&t.p));
    ring_asm_reset(&rx.a);
    tring_free(&t);
}

/* A hostile producer: records written by hand with any flags. */
static void raw_put(struct tring *t, uint16_t type, uint16_t flags, const void *p, uint32_t len)
{
    uint8_t *dst = ring_reserve(&t->p, type, len);

    cr_assert_not_null(dst);
    memcpy(dst - 2, &flags, 2);   /* the header's flags field */
    if (len)
        memcpy(dst, p, len);
    ring_commit(&t->p);
}

static void raw_first(struct tring *t, uint16_t type, uint64_t total, uint32_t len)
{
    uint8_t buf[2048] = { 0 };

    cr_assert_leq(len + 8, sizeof(buf));
    memcpy(buf, &total, 8);
    raw_put(t, type, RING_F_FIRST, buf, len + 8);
}

/* Take every record; returns the first error (its reason in *why), or 0. */
static int raw_take_all(struct tring *t, struct ring_asm *a, uint32_t max, const char **why)
{
    const void *p, *whole;
    uint16_t type;
    uint32_t len, wlen;
    int rc = 0;

    while (!rc && (p = ring_peek(&t->c, &type, &len))) {
        rc = ring_asm_take(a, type, t->c.peeked_flags, p, len, max, &whole, &wlen);
        ring_pop(&t->c);
        if (rc > 0) {
            ring_asm_reset(a);
            rc = 0;
        }
    }
    *why = a->err;
    return rc;
}

static void expect_refused(struct tring *t, struct ring_asm *a, uint32_t max, const char *reason)
{
    const char *why = NULL;
    uint32_t have;

    cr_assert_eq(raw_take_all(t, a, max, &why), -EPROTO, "refused: %s", reason);
    cr_assert(why && strstr(why, reason), "reason '%s', want '%s'", why ? why : "(none)", reason);
    cr_assert_null(a->buf, "the partial record's memory is released");
    cr_assert_null(ring_asm_partial(a, &have));
    while (ring_peek(&t->c, &(uint16_t){ 0 }, &have))
        ring_pop(&t->c);
}

Test(ring, long_record_pieces_that_do_not_add_up_are_refused, .timeout = 5)
{
    struct tring t;
    struct ring_asm a = { 0 };
    uint8_t bytes[1500] = { 0 };

    tring_new(&t, 8192);
    raw_put(&t, 5, RING_F_CONT, bytes, 100);
    expect_refused(&t, &a, 1u << 20, "without a first piece");

    raw_first(&t, 5, 5000, 1000);
    raw_put(&t, 5, 0, bytes, 100);
    expect_refused(&t, &a, 1u << 20, "in the middle of a long record");

    raw_first(&t, 5, 5000, 1000);
    raw_first(&t, 5, 5000, 1000);
    expect_refused(&t, &a, 1u << 20, "in the middle of a long record");

    raw_first(&t, 5, 5000, 1000);
    raw_put(&t, 6, RING_F_CONT, bytes, 1000);
    expect_refused(&t, &a, 1u << 20, "another type");

    /* pieces longer than the length the first one announced */
    raw_first(&t, 5, 2500, 1000);
    raw_put(&t, 5, RING_F_CONT, bytes, 1000);
    raw_put(&t, 5, RING_F_CONT, bytes, 1000);
    expect_refused(&t, &a, 1u << 20, "does not fit");

    raw_first(&t, 5, 2500, 1000);
    raw_put(&t, 5, RING_F_CONT, bytes, 0);
    expect_refused(&t, &a, 1u << 20, "does not fit");

    /* a length over the limit: refused before anything is allocated */
    raw_first(&t, 5, (1ull << 20) + 1, 1000);
    expect_refused(&t, &a, 1u << 20, "over the size limit");
    raw_first(&t, 5, ~0ull, 1000);
    expect_refused(&t, &a, 1u << 20, "over the size limit");

    raw_first(&t, 5, 1000, 1000);
    expect_refused(&t, &a, 1u << 20, "fits its first piece");

    raw_put(&t, 5, RING_F_FIRST, bytes, 7);
    expect_refused(&t, &a, 1u << 20, "shorter than its length field");

    raw_put(&t, 5, 0x8, bytes, 10);
    expect_refused(&t, &a, 1u << 20, "unknown flags");
    raw_put(&t, 5, RING_F_FIRST | RING_F_CONT, bytes, 10);
    expect_refused(&t, &a, 1u << 20, "continuation piece without a first piece");

    /* and an honest sequence is taken whole */
    const char *why;
    raw_first(&t, 5, 2500, 1000);
    raw_put(&t, 5, RING_F_CONT, bytes, 1000);
    raw_put(&t, 5, RING_F_CONT, bytes, 500);
    cr_assert_eq(raw_take_all(&t, &a, 1u << 20, &why), 0);
    tring_free(&t);
}

/* A child forked in the middle of a long record (a snapshot, a hot standby) does not get
 * the assembly buffer: it forgets the record, and the parent goes on with it. */
Test(ring, long_record_buffer_is_not_inherited_by_a_child, .timeout = 10)
{
    struct tring t;
    struct ring_asm a = { 0 };
    static uint8_t body[20000];
    uint32_t done = 0, have, lens[1] = { sizeof(body) };
    const void *p;
    uint16_t type;
    uint32_t len;

    tring_new(&t, 4096);
    for (uint32_t i = 0; i < sizeof(body); i++)
        body[i] = long_byte(0, i);
    cr_assert_eq(ring_put(&t.p, rec_type(0), NULL, 0, body, sizeof(body), &done), 0);
    p = ring_peek(&t.c, &type, &len);
    const void *whole;
    cr_assert_eq(ring_asm_take(&a, type, t.c.peeked_flags, p, len, 1u << 20, &whole, &len), 0);
    ring_pop(&t.c);
    const uint8_t *buf = ring_asm_partial(&a, &have);
    cr_assert_not_null(buf);

    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        unsigned char vec;
        int unmapped = mincore((void *)((uintptr_t)buf & ~(uintptr_t)4095), 4096, &vec) == -1 &&
                       errno == ENOMEM;
        ring_asm_forget(&a);
        _exit(unmapped && !ring_asm_partial(&a, &have) ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child saw the buffer");

    struct long_rx rx = { .a = a };
    while (!ring_put(&t.p, rec_type(0), NULL, 0, body, sizeof(body), &done))
        long_drain(&t, &rx, lens, 1u << 20);
    long_drain(&t, &rx, lens, 1u << 20);
    cr_assert_eq(rx.next, 1, "the parent's record arrives whole");
    ring_asm_reset(&rx.a);
    tring_free(&t);
}

/* A consumer that pops a full ring wakes the waiting producer once, when half is free. */
Test(ring, producer_waiting_on_a_full_ring_is_woken_at_half, .timeout = 5)
{
    struct tring t;
    uint64_t seq = 0, next = 0;

    tring_new(&t, 4096);
    while (push(&t, seq, 56))
        seq++;
    cr_assert_eq(ring_wait_prepare(&t.p, 56), 1, "full: the producer may sleep");
    int woken = 0;
    while (next < seq) {
        pop_expect(&t, next, 56);
        next++;
        uint64_t used = tail_of(&t) - head_of(&t);
        int w = ring_producer_waits_half(&t.c);
        cr_assert(!w || used <= 2048, "woken with %llu bytes still in use", (unsigned long long)used);
        if (used > 2048)
            cr_assert_eq(w, 0);
        woken += w;
        if (used <= 2048 && !woken)
            cr_assert_fail("not woken with %llu bytes in use", (unsigned long long)used);
    }
    cr_assert_eq(woken, 1, "once");
    tring_free(&t);
}

/* ring_holds_type finds a record anywhere between head and tail without taking it, across
 * the wrap, and not one already taken. */
Test(ring, holds_type_looks_without_taking)
{
    struct tring t;

    tring_new(&t, 4096);
    cr_assert_not(ring_holds_type(&t.c, rec_type(7)), "an empty ring holds nothing");
    cr_assert(push(&t, 1, 100));
    cr_assert(push(&t, 7, 0));
    cr_assert(push(&t, 2, 5));
    cr_assert(ring_holds_type(&t.c, rec_type(7)));
    cr_assert(ring_holds_type(&t.c, rec_type(2)));
    cr_assert_not(ring_holds_type(&t.c, rec_type(9)));
    pop_expect(&t, 1, 100);
    cr_assert(ring_holds_type(&t.c, rec_type(7)), "still there after an earlier one was taken");
    pop_expect(&t, 7, 0);
    cr_assert_not(ring_holds_type(&t.c, rec_type(7)), "taken: no longer held");
    pop_expect(&t, 2, 5);
    /* Across the end of the ring: records go round past the wrap, the one after it is found. */
    for (int i = 0; i < 20; i++) {
        cr_assert(push(&t, 3, 150));
        pop_expect(&t, 3, 150);
    }
    cr_assert(push(&t, 3, 1000));
    cr_assert(push(&t, 3, 1000));
    cr_assert(push(&t, 8, 16));
    cr_assert(ring_holds_type(&t.c, rec_type(8)));
    cr_assert_not(ring_holds_type(&t.c, rec_type(7)));
    tring_free(&t);
}
