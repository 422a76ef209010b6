/* test_evstore.c - a session's held events (supervisor/evstore.c), fed into a real ring
 * (common/ring.c) whose consumer side the test plays.
 *
 * The test binary links with -Wl,--wrap=ring_put (Makefile): __wrap_ring_put below calls
 * the real one and, only when a test armed `reserve_fail_hook`, runs it once after it
 * found the ring full. That is how the consumer "pops in the nanoseconds between the failed
 * reserve and the producer_waiting store", deterministically. Unarmed, it changes nothing
 * for the other suites. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ring.h"
#include "shm.h"
#include "../supervisor/evstore.h"

TestSuite(evstore, .timeout = 30);

/* ---- the ring_put hook ------------------------------------------------------------------ */

int __real_ring_put(struct ring *r, uint16_t type, const void *head, uint32_t hlen,
                    const void *body, uint32_t blen, uint32_t *done);
int __wrap_ring_put(struct ring *r, uint16_t type, const void *head, uint32_t hlen,
                    const void *body, uint32_t blen, uint32_t *done);

static void (*reserve_fail_hook)(void);

int __wrap_ring_put(struct ring *r, uint16_t type, const void *head, uint32_t hlen,
                    const void *body, uint32_t blen, uint32_t *done)
{
    int whole = __real_ring_put(r, type, head, hlen, body, blen, done);

    if (!whole && reserve_fail_hook) {
        void (*fn)(void) = reserve_fail_hook;
        reserve_fail_hook = NULL;   /* once */
        fn();
    }
    return whole;
}

/* ---- helpers ---------------------------------------------------------------------------- */

/* A ring with a producer view (what the supervisor holds) and a consumer view (the worker). */
struct t_ring {
    void *mem;
    size_t bytes;
    struct ring p, c;
    struct ring_asm a;      /* the consumer's, for events in pieces */
    unsigned pieces;        /* ring records that were pieces */
};

static void t_ring_new(struct t_ring *t, uint32_t size)
{
    memset(t, 0, sizeof(*t));
    t->bytes = ring_mem_size(size);
    t->mem = mmap(NULL, t->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(t->mem, MAP_FAILED, "mmap %zu: %s", t->bytes, strerror(errno));
    ring_format(t->mem, size);
    cr_assert_eq(ring_attach(&t->p, t->mem), 0);
    cr_assert_eq(ring_attach(&t->c, t->mem), 0);
}

static void t_ring_free(struct t_ring *t)
{
    ring_asm_reset(&t->a);
    munmap(t->mem, t->bytes);
}

static uint32_t t_producer_waiting(const struct t_ring *t)
{
    return atomic_load(&((struct ring_shared *)t->mem)->producer_waiting);
}

/* Payload length of event pos in the tests that vary it: 0..max, deterministic. */
static size_t t_len_of(uint64_t pos, size_t max)
{
    uint64_t x = pos * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    return (size_t)(x % (max + 1));
}

static uint8_t t_byte(uint64_t pos, size_t i)
{
    return (uint8_t)(pos * 131u + i * 7u + (i >> 8));
}

static uint16_t t_type_of(uint64_t pos)
{
    return (uint16_t)(EV_START + pos % 5);
}

/* Append event pos with a payload of len bytes derived from pos. */
static void t_append(struct evstore *e, uint64_t pos, size_t len)
{
    uint8_t *data = malloc(len ? len : 1);
    cr_assert(data);
    for (size_t i = 0; i < len; i++)
        data[i] = t_byte(pos, i);
    struct shm_rec rec = { .pos = pos, .time = 1000 + pos, .a = pos * 3, .b = len };
    cr_assert_eq(evstore_append(e, t_type_of(pos), &rec, data, len), 0, "append %llu",
                 (unsigned long long)pos);
    free(data);
}

/* Check one record's payload as the ring delivers it (shm_rec, then the message). */
static void t_check_payload(const uint8_t *p, uint16_t type, uint32_t len, uint64_t want_pos)
{
    struct shm_rec rec;

    cr_assert_geq(len, sizeof(rec), "record %llu: %u bytes", (unsigned long long)want_pos, len);
    memcpy(&rec, p, sizeof(rec));
    cr_assert_eq(rec.pos, want_pos, "expected event %llu, got %llu",
                 (unsigned long long)want_pos, (unsigned long long)rec.pos);
    cr_assert_eq(type, t_type_of(want_pos), "type of event %llu", (unsigned long long)want_pos);
    cr_assert_eq(rec.time, 1000 + want_pos);
    cr_assert_eq(rec.a, want_pos * 3);
    size_t dlen = len - sizeof(rec);
    cr_assert_eq(rec.b, dlen, "event %llu: payload %zu bytes, appended %llu",
                 (unsigned long long)want_pos, dlen, (unsigned long long)rec.b);
    for (size_t i = 0; i < dlen; i++)
        if (p[sizeof(rec) + i] != t_byte(want_pos, i))
            cr_assert_fail("event %llu: byte %zu differs", (unsigned long long)want_pos, i);
}

/* Consume up to max events from the ring (putting pieces together as the worker does),
 * checking they are events *next, *next+1, ... */
static unsigned t_drain(struct t_ring *t, uint64_t *next, unsigned max)
{
    unsigned n = 0;
    const void *p, *whole;
    uint16_t type;
    uint32_t len;

    while (n < max && (p = ring_peek(&t->c, &type, &len))) {
        int rc = ring_asm_take(&t->a, type, t->c.peeked_flags, p, len, 64u << 20, &whole, &len);
        cr_assert_geq(rc, 0, "event %llu: %s", (unsigned long long)*next, t->a.err);
        if (t->c.peeked_flags)
            t->pieces++;
        if (rc == 1) {
            t_check_payload(whole, type, len, (*next)++);
            ring_asm_reset(&t->a);
            n++;
        }
        ring_pop(&t->c);
    }
    return n;
}

/* What evstore_feed must leave behind: everything fed, or the producer marked as waiting,
 * so that the consumer's next pop (ring_producer_waits) rings the supervisor. Otherwise
 * events stay unfed with nobody to resume them. */
static void t_check_not_stranded(const struct evstore *e, const struct t_ring *t)
{
    cr_assert(evstore_unfed(e) == 0 || t_producer_waiting(t) == 1,
              "stranded: %zu bytes unfed and producer_waiting=0", evstore_unfed(e));
}

/* Byte size of events [from, to] as t_append made them with lengths lens(pos). */
static size_t t_bytes(uint64_t from, uint64_t to, size_t (*lens)(uint64_t))
{
    size_t n = 0;
    for (uint64_t p = from; p <= to; p++)
        n += evrec_space(lens(p));
    return n;
}

static size_t len_fixed_40(uint64_t pos) { (void)pos; return 40; }
static size_t len_upto_300(uint64_t pos) { return t_len_of(pos, 300); }

/* ---- evrec / append --------------------------------------------------------------------- */

Test(evstore, evrec_space_rounds_to_8_with_header_and_rec)
{
    size_t base = EVREC_HDR + sizeof(struct shm_rec);

    cr_assert_eq(evrec_space(0), base);
    cr_assert_eq(evrec_space(1), base + 8);
    cr_assert_eq(evrec_space(8), base + 8);
    cr_assert_eq(evrec_space(9), base + 16);
    for (size_t len = 0; len < 100; len++) {
        cr_assert_eq(evrec_space(len) % 8, 0);
        cr_assert(evrec_space(len) >= base + len && evrec_space(len) < base + len + 8);
    }
}

Test(evstore, evrec_put_lays_out_a_ring_record_with_zero_padding)
{
    uint8_t buf[128];
    struct shm_rec rec = { .pos = 7, .time = 8, .a = 9, .b = 10 }, back;

    memset(buf, 0xee, sizeof(buf));
    evrec_put(buf, EV_CLIENT, &rec, "hello", 5);
    uint32_t len;
    uint16_t type, flags;
    memcpy(&len, buf, 4);
    memcpy(&type, buf + 4, 2);
    memcpy(&flags, buf + 6, 2);
    cr_assert_eq(len, sizeof(rec) + 5);
    cr_assert_eq(type, EV_CLIENT);
    cr_assert_eq(flags, 0);
    memcpy(&back, buf + EVREC_HDR, sizeof(back));
    cr_assert_eq(memcmp(&back, &rec, sizeof(rec)), 0);
    cr_assert_eq(memcmp(buf + EVREC_HDR + sizeof(rec), "hello", 5), 0);
    for (size_t i = EVREC_HDR + sizeof(rec) + 5; i < evrec_space(5); i++)
        cr_assert_eq(buf[i], 0, "padding byte %zu", i);
    cr_assert_eq(buf[evrec_space(5)], 0xee, "wrote past evrec_space");
}

Test(evstore, append_holds_records_in_order_from_the_first_position)
{
    struct evstore e = { 0 };

    cr_assert_eq(evstore_unfed(&e), 0);
    for (uint64_t pos = 5; pos < 25; pos++)
        t_append(&e, pos, len_upto_300(pos));
    cr_assert_eq(e.first, 5, "first is the position of the first record appended");
    cr_assert_eq(e.count, 20);
    cr_assert_eq(e.len, t_bytes(5, 24, len_upto_300));
    cr_assert_eq(e.fed, 0);
    cr_assert_eq(evstore_unfed(&e), e.len);

    /* Walk the buffer: each record as evrec_put lays it out, consecutive positions. */
    size_t off = 0;
    for (uint64_t pos = 5; pos < 25; pos++) {
        uint32_t len;
        uint16_t type;
        memcpy(&len, e.buf + off, 4);
        memcpy(&type, e.buf + off + 4, 2);
        t_check_payload(e.buf + off + EVREC_HDR, type, len, pos);
        off += evrec_space(len - sizeof(struct shm_rec));
    }
    cr_assert_eq(off, e.len);
    evstore_free(&e);
}

Test(evstore, append_grows_past_the_first_allocation_and_keeps_contents)
{
    struct evstore e = { 0 };
    uint64_t pos = 1;

    /* 64 KiB is the first allocation: go well past it, several doublings. */
    while (e.len < 5 * 65536)
        t_append(&e, pos, len_upto_300(pos)), pos++;
    cr_assert_geq(e.cap, e.len);
    cr_assert_eq(e.count, pos - 1);

    struct t_ring t;
    uint64_t next = 1;
    t_ring_new(&t, 1u << 20);
    cr_assert_eq(evstore_feed(&e, &t.p), pos - 1);
    cr_assert_eq(t_drain(&t, &next, UINT32_MAX), pos - 1);
    t_ring_free(&t);
    evstore_free(&e);
}

Test(evstore, append_of_a_large_record)
{
    struct evstore e = { 0 };
    size_t big = 3u << 20;   /* larger than the 64 KiB first allocation and any doubling step */

    t_append(&e, 1, 10);
    t_append(&e, 2, big);
    t_append(&e, 3, 0);
    cr_assert_eq(e.count, 3);
    cr_assert_eq(e.len, evrec_space(10) + evrec_space(big) + evrec_space(0));
    cr_assert_geq(e.cap, e.len);
    t_check_payload(e.buf + evrec_space(10) + EVREC_HDR, t_type_of(2),
                    (uint32_t)(sizeof(struct shm_rec) + big), 2);
    evstore_free(&e);
}

/* ---- feed ------------------------------------------------------------------------------- */

Test(evstore, feed_copies_every_record_when_the_ring_has_room)
{
    struct evstore e = { 0 };
    struct t_ring t;
    uint64_t next = 1;

    t_ring_new(&t, 1u << 16);
    cr_assert_eq(evstore_feed(&e, &t.p), 0, "an empty store feeds nothing");
    cr_assert(ring_empty(&t.c));
    for (uint64_t pos = 1; pos <= 50; pos++)
        t_append(&e, pos, len_upto_300(pos));
    cr_assert_eq(evstore_feed(&e, &t.p), 50);
    cr_assert_eq(evstore_unfed(&e), 0);
    cr_assert_eq(e.fed, e.len);
    cr_assert_eq(t_producer_waiting(&t), 0);
    cr_assert_eq(evstore_feed(&e, &t.p), 0, "nothing is fed twice");
    cr_assert_eq(t_drain(&t, &next, UINT32_MAX), 50);
    cr_assert(ring_empty(&t.c));

    /* Feeding continues where it stopped. */
    for (uint64_t pos = 51; pos <= 60; pos++)
        t_append(&e, pos, len_upto_300(pos));
    cr_assert_eq(evstore_unfed(&e), t_bytes(51, 60, len_upto_300));
    cr_assert_eq(evstore_feed(&e, &t.p), 10);
    cr_assert_eq(t_drain(&t, &next, UINT32_MAX), 10);
    cr_assert_eq(next, 61);
    t_ring_free(&t);
    evstore_free(&e);
}

Test(evstore, feed_stops_when_full_marks_waiting_and_resumes_after_drain)
{
    struct evstore e = { 0 };
    struct t_ring t;
    uint64_t next = 1, fed = 0;
    const uint64_t N = 2000;

    t_ring_new(&t, 4096);
    for (uint64_t pos = 1; pos <= N; pos++)
        t_append(&e, pos, len_upto_300(pos));

    int rounds = 0;
    while (next <= N) {
        fed += evstore_feed(&e, &t.p);
        cr_assert_eq(evstore_unfed(&e), t_bytes(fed + 1, N, len_upto_300),
                     "round %d: unfed after %llu fed", rounds, (unsigned long long)fed);
        t_check_not_stranded(&e, &t);
        if (fed < N)
            cr_assert_eq(t_producer_waiting(&t), 1, "round %d: full ring, producer waits", rounds);
        /* The worker pops a few, as it does between doorbells, then tells the producer. */
        unsigned popped = t_drain(&t, &next, 1 + (unsigned)(rounds % 7));
        cr_assert_gt(popped, 0);
        if (fed < N)
            cr_assert_eq(ring_producer_waits(&t.c), 1, "the consumer rings the waiting producer");
        rounds++;
    }
    cr_assert_eq(fed, N);
    cr_assert_gt(rounds, 100, "the ring filled up many times (%d rounds)", rounds);
    cr_assert(ring_empty(&t.c));
    t_ring_free(&t);
    evstore_free(&e);
}

/* B2: the ring is full, ring_reserve fails, and the worker pops before the supervisor marks
 * itself waiting. ring_wait_prepare then sees room and returns 0: the supervisor must
 * reserve again and go on feeding. Stopping there (the inverted test) leaves events unfed,
 * room in the ring and producer_waiting == 0: nobody ever resumes the session. */
static struct t_ring *race_ring;
static uint64_t race_next;

static void pop_one(void)
{
    cr_assert_eq(t_drain(race_ring, &race_next, 1), 1, "the hook pops a record");
}

Test(evstore, feed_goes_on_when_room_appears_before_it_waits)
{
    struct evstore e = { 0 };
    struct t_ring t;
    const uint32_t size = 4096;
    const size_t rec = evrec_space(40);
    const unsigned fit = (unsigned)(size / rec);   /* 51 records of 80 bytes, 16 left */

    t_ring_new(&t, size);
    cr_assert_eq(rec, 80, "record size the arithmetic below assumes");
    for (uint64_t pos = 1; pos <= 2 * fit; pos++)
        t_append(&e, pos, len_fixed_40(pos));

    race_ring = &t;
    race_next = 1;
    reserve_fail_hook = pop_one;
    unsigned n = evstore_feed(&e, &t.p);
    cr_assert_null(reserve_fail_hook, "the ring filled up and the hook ran");
    cr_assert_eq(race_next, 2, "the hook popped event 1");

    /* One slot freed after the first failure: one more record fits, then it is full. */
    cr_assert_eq(n, fit + 1, "fed %u, want %u: feed must use the room that appeared", n, fit + 1);
    cr_assert_eq(evstore_unfed(&e), (2 * fit - n) * rec);
    t_check_not_stranded(&e, &t);

    /* And the rest arrives intact, in order. */
    unsigned total = n;
    while (total < 2 * fit) {
        t_drain(&t, &race_next, 3);
        cr_assert_eq(ring_producer_waits(&t.c), 1);
        total += evstore_feed(&e, &t.p);
        t_check_not_stranded(&e, &t);
    }
    t_drain(&t, &race_next, UINT32_MAX);
    cr_assert_eq(race_next, 2 * fit + 1);
    t_ring_free(&t);
    evstore_free(&e);
}

Test(evstore, feed_records_up_to_the_ring_maximum_across_wraps)
{
    struct evstore e = { 0 };
    struct t_ring t;
    uint64_t next = 1, fed = 0;
    const uint32_t size = 8192;

    t_ring_new(&t, size);
    size_t max = ring_max_payload(&t.p) - sizeof(struct shm_rec);
    /* Largest records interleaved with small ones, so PAD records appear at the end. */
    const uint64_t N = 60;
    size_t lens[61];
    for (uint64_t pos = 1; pos <= N; pos++) {
        lens[pos] = pos % 3 == 0 ? max : pos % 3 == 1 ? t_len_of(pos, 200) : max - 8 * pos;
        t_append(&e, pos, lens[pos]);
    }
    while (next <= N) {
        fed += evstore_feed(&e, &t.p);
        t_check_not_stranded(&e, &t);
        cr_assert_gt(t_drain(&t, &next, 1), 0, "no progress at event %llu",
                     (unsigned long long)next);
        if (fed < N)
            ring_producer_waits(&t.c);
    }
    cr_assert_eq(fed, N);
    t_ring_free(&t);
    evstore_free(&e);
}

Test(evstore, feed_of_one_megabyte_messages_through_a_session_sized_ring)
{
    struct evstore e = { 0 };
    struct t_ring t;
    uint64_t next = 1, fed = 0;
    const uint32_t max_message = 1u << 20;
    int rounds = 0;

    /* The ring does not grow with the message: 1 MiB events cross in pieces. */
    t_ring_new(&t, SHM_RING_BYTES);
    cr_assert_lt(ring_max_payload(&t.p), sizeof(struct shm_rec) + max_message);
    for (uint64_t pos = 1; pos <= 12; pos++)
        t_append(&e, pos, pos % 2 ? max_message : 17);
    while (next <= 12) {
        fed += evstore_feed(&e, &t.p);
        t_check_not_stranded(&e, &t);
        cr_assert_gt(t_drain(&t, &next, 2) + t.pieces, 0);
        ring_producer_waits(&t.c);
        cr_assert_lt(++rounds, 10000, "no progress");
    }
    cr_assert_eq(next, 13);
    cr_assert_gt(fed, 12, "more ring records than events: %llu", (unsigned long long)fed);
    cr_assert_geq(t.pieces, 6 * ((max_message + ring_max_payload(&t.p) / 2) / (ring_max_payload(&t.p) / 2)),
                  "each 1 MiB event in pieces (%u pieces)", t.pieces);
    cr_assert_eq(evstore_unfed(&e), 0);
    t_ring_free(&t);
    evstore_free(&e);
}

/* ---- unfed / rewind --------------------------------------------------------------------- */

Test(evstore, unfed_counts_appended_bytes_not_yet_in_the_ring)
{
    struct evstore e = { 0 };
    struct t_ring t;
    uint64_t next = 1;

    t_ring_new(&t, 4096);
    for (uint64_t pos = 1; pos <= 100; pos++) {
        t_append(&e, pos, 40);
        cr_assert_eq(evstore_unfed(&e), pos * evrec_space(40));
    }
    unsigned fit = 4096 / (unsigned)evrec_space(40);
    cr_assert_eq(evstore_feed(&e, &t.p), fit);
    cr_assert_eq(evstore_unfed(&e), (100 - fit) * evrec_space(40));
    t_drain(&t, &next, UINT32_MAX);
    cr_assert_eq(evstore_unfed(&e), (100 - fit) * evrec_space(40), "popping does not change unfed");
    t_ring_free(&t);
    evstore_free(&e);
}

Test(evstore, rewind_feeds_again_from_the_event_after_a_position)
{
    struct evstore e = { 0 };
    struct t_ring t;

    t_ring_new(&t, 1u << 16);
    for (uint64_t pos = 1; pos <= 40; pos++)
        t_append(&e, pos, len_upto_300(pos));
    cr_assert_eq(evstore_feed(&e, &t.p), 40);
    uint64_t next = 1;
    t_drain(&t, &next, UINT32_MAX);

    /* A recovery from a snapshot at position 17: events 18.. go to the new worker. */
    const uint64_t ps[] = { 17, 0, 39, 40, 1, 25 };
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        uint64_t p = ps[i];
        cr_assert_eq(evstore_rewind(&e, p), 0, "rewind to %llu", (unsigned long long)p);
        cr_assert_eq(evstore_unfed(&e), p < 40 ? t_bytes(p + 1, 40, len_upto_300) : 0,
                     "unfed after rewind to %llu", (unsigned long long)p);
        cr_assert_eq(evstore_feed(&e, &t.p), 40 - p);
        next = p + 1;
        cr_assert_eq(t_drain(&t, &next, UINT32_MAX), 40 - p);
        cr_assert_eq(next, 41);
    }
    cr_assert_eq(e.count, 40, "rewinding does not drop anything");
    t_ring_free(&t);
    evstore_free(&e);
}

Test(evstore, rewind_before_the_first_held_event_is_enoent)
{
    struct evstore e = { 0 };

    cr_assert_eq(evstore_rewind(&e, 0), 0, "an empty store rewinds to nothing");
    cr_assert_eq(evstore_unfed(&e), 0);
    for (uint64_t pos = 1; pos <= 30; pos++)
        t_append(&e, pos, 8);
    evstore_drop_through(&e, 10);
    cr_assert_eq(e.first, 11);
    cr_assert_eq(evstore_rewind(&e, 10), 0, "event 11 is held");
    cr_assert_eq(evstore_unfed(&e), 20 * evrec_space(8));
    size_t fed = e.fed;
    cr_assert_eq(evstore_rewind(&e, 9), -ENOENT, "event 10 is gone");
    cr_assert_eq(evstore_rewind(&e, 0), -ENOENT);
    cr_assert_eq(e.fed, fed, "a failed rewind changes nothing");
    cr_assert_eq(evstore_rewind(&e, 40), -ENOENT, "beyond the last event held");
    evstore_free(&e);
}

/* ---- drop_through ----------------------------------------------------------------------- */

Test(evstore, drop_through_forgets_up_to_a_durable_position)
{
    struct evstore e = { 0 };
    struct t_ring t;
    uint64_t next = 1;

    t_ring_new(&t, 1u << 16);
    for (uint64_t pos = 1; pos <= 50; pos++)
        t_append(&e, pos, len_upto_300(pos));
    cr_assert_eq(evstore_feed(&e, &t.p), 50);
    t_drain(&t, &next, UINT32_MAX);

    evstore_drop_through(&e, 0);
    cr_assert_eq(e.first, 1, "position 0 is before everything");
    cr_assert_eq(e.count, 50);

    evstore_drop_through(&e, 20);
    cr_assert_eq(e.first, 21);
    cr_assert_eq(e.count, 30);
    cr_assert_eq(e.len, t_bytes(21, 50, len_upto_300));
    cr_assert_eq(evstore_unfed(&e), 0, "the fed offset moves with the records");
    evstore_drop_through(&e, 15);
    cr_assert_eq(e.first, 21, "an older position drops nothing");

    /* What stays is intact and replays from the new first event. */
    cr_assert_eq(evstore_rewind(&e, 20), 0);
    cr_assert_eq(evstore_feed(&e, &t.p), 30);
    next = 21;
    cr_assert_eq(t_drain(&t, &next, UINT32_MAX), 30);

    /* Records appended after a drop, then a partly fed store. */
    for (uint64_t pos = 51; pos <= 60; pos++)
        t_append(&e, pos, len_upto_300(pos));
    evstore_drop_through(&e, 40);
    cr_assert_eq(e.first, 41);
    cr_assert_eq(evstore_unfed(&e), t_bytes(51, 60, len_upto_300), "unfed events stay unfed");
    cr_assert_eq(evstore_feed(&e, &t.p), 10);
    next = 51;
    cr_assert_eq(t_drain(&t, &next, UINT32_MAX), 10);

    /* Past the last event: everything goes; the next append starts a new first. */
    evstore_drop_through(&e, 1000);
    cr_assert_eq(e.count, 0);
    cr_assert_eq(e.len, 0);
    cr_assert_eq(evstore_unfed(&e), 0);
    t_append(&e, 61, 5);
    cr_assert_eq(e.first, 61);
    cr_assert_eq(e.count, 1);
    cr_assert_eq(evstore_feed(&e, &t.p), 1);
    next = 61;
    cr_assert_eq(t_drain(&t, &next, UINT32_MAX), 1);
    t_ring_free(&t);
    evstore_free(&e);
}

Test(evstore, drop_through_of_events_not_yet_fed_leaves_the_rest_to_feed)
{
    struct evstore e = { 0 };
    struct t_ring t;
    uint64_t next = 1;

    t_ring_new(&t, 4096);
    unsigned fit = 4096 / (unsigned)evrec_space(40);   /* 51 */
    for (uint64_t pos = 1; pos <= 100; pos++)
        t_append(&e, pos, 40);
    cr_assert_eq(evstore_feed(&e, &t.p), fit);
    evstore_drop_through(&e, 60);
    cr_assert_eq(e.first, 61);
    cr_assert_eq(evstore_unfed(&e), 40 * evrec_space(40));
    cr_assert_eq(t_drain(&t, &next, UINT32_MAX), fit, "the ring still holds what was fed");
    ring_producer_waits(&t.c);
    cr_assert_eq(evstore_feed(&e, &t.p), 40);
    next = 61;
    cr_assert_eq(t_drain(&t, &next, UINT32_MAX), 40);
    t_ring_free(&t);
    evstore_free(&e);
}

/* ---- free ------------------------------------------------------------------------------- */

Test(evstore, free_releases_and_leaves_an_empty_reusable_store)
{
    struct evstore e = { 0 };

    evstore_free(&e);   /* an empty store */
    cr_assert_null(e.buf);
    for (uint64_t pos = 1; pos <= 10; pos++)
        t_append(&e, pos, 100);
    evstore_free(&e);
    cr_assert_null(e.buf);
    cr_assert_eq(e.len, 0);
    cr_assert_eq(e.cap, 0);
    cr_assert_eq(e.count, 0);
    cr_assert_eq(e.fed, 0);
    cr_assert_eq(evstore_unfed(&e), 0);
    t_append(&e, 7, 3);
    cr_assert_eq(e.first, 7);
    cr_assert_eq(e.count, 1);
    evstore_free(&e);
}

/* ---- many records ----------------------------------------------------------------------- */

/* The life of a session's store: appends, feeds into a small ring, a worker popping at its
 * own pace, snapshots becoming durable (drop_through), and recoveries (rewind). */
Test(evstore, many_records_appended_fed_dropped_and_rewound, .timeout = 180)
{
    struct evstore e = { 0 };
    struct t_ring t;
    uint64_t appended = 0, next = 1, durable = 0;
    uint64_t x = 12345;
    const uint64_t N = 100000;

    t_ring_new(&t, 8192);
    while (next <= N) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        unsigned op = (unsigned)(x % 100);
        if (op < 45 && appended < N) {
            for (unsigned k = 0; k < 1 + x % 20 && appended < N; k++)
                appended++, t_append(&e, appended, t_len_of(appended, 1000));
        } else if (op < 80) {
            evstore_feed(&e, &t.p);
            t_check_not_stranded(&e, &t);
        } else if (op < 97) {
            t_drain(&t, &next, 1 + (unsigned)(x >> 32) % 30);
            ring_producer_waits(&t.c);
        } else if (op < 99) {
            /* A snapshot of what the worker consumed became durable. */
            uint64_t p = next - 1 >= 2 ? next - 1 - (x >> 40) % 3 : next - 1;
            uint64_t first = e.first, count = e.count;
            if (p > durable)
                durable = p;
            evstore_drop_through(&e, durable);
            if (count && durable >= first) {
                uint64_t dropped = durable - first + 1 < count ? durable - first + 1 : count;
                cr_assert_eq(e.count, count - dropped);
                if (e.count)
                    cr_assert_eq(e.first, durable + 1);
            }
        } else {
            /* The worker died: a new one starts from the durable snapshot. */
            struct ring_shared *sh = t.mem;
            ring_format(t.mem, sh->size);
            cr_assert_eq(ring_attach(&t.p, t.mem), 0);
            cr_assert_eq(ring_attach(&t.c, t.mem), 0);
            cr_assert_eq(evstore_rewind(&e, durable), 0, "rewind to %llu",
                         (unsigned long long)durable);
            next = durable + 1;
        }
        if (e.count)
            cr_assert_eq(e.first + e.count - 1, appended, "the last appended event is held");
        else
            cr_assert_eq(appended, durable, "only durable events are dropped");
    }
    cr_assert_eq(appended, N);
    cr_assert_eq(evstore_unfed(&e), 0);
    t_ring_free(&t);
    evstore_free(&e);
}

/* ---- events in pieces ------------------------------------------------------------------- */

/* A fresh ring in place of the old one, as for a new worker. */
static void t_ring_reset(struct t_ring *t, uint32_t size)
{
    t_ring_free(t);
    t_ring_new(t, size);
}

Test(evstore, events_of_sizes_around_the_piece_boundary_arrive_whole)
{
    struct evstore e = { 0 };
    struct t_ring t;
    uint64_t next = 1, fed = 0;
    int rounds = 0;

    t_ring_new(&t, 8192);
    /* m: the largest message whose event fits one ring record */
    const size_t m = ring_max_payload(&t.p) - sizeof(struct shm_rec);
    const size_t piece = ring_put_need(&t.p, 1u << 20, 1);
    const size_t lens[] = { 0, m - 1, m, m + 1, 5, m + 2, 2 * m, 2 * m + 1, piece, piece + 1,
                            3 * piece - 40, 3 * piece - 41, 3 * piece - 39, 100000, 1, 65536 };
    const uint64_t N = sizeof(lens) / sizeof(lens[0]);
    for (uint64_t pos = 1; pos <= N; pos++)
        t_append(&e, pos, lens[pos - 1]);
    while (next <= N) {
        fed += evstore_feed(&e, &t.p);
        t_check_not_stranded(&e, &t);
        t_drain(&t, &next, 1 + (unsigned)rounds % 3);
        ring_producer_waits(&t.c);
        cr_assert_lt(++rounds, 100000, "no progress at event %llu", (unsigned long long)next);
    }
    cr_assert_eq(evstore_unfed(&e), 0);
    cr_assert_gt(fed, N, "the large ones went in pieces");
    cr_assert_gt(t.pieces, 0);
    t_ring_free(&t);
    evstore_free(&e);
}

Test(evstore, unfed_counts_the_pieces_already_in_the_ring)
{
    struct evstore e = { 0 };
    struct t_ring t;

    t_ring_new(&t, 4096);
    t_append(&e, 1, 20000);
    cr_assert_eq(evstore_unfed(&e), evrec_space(20000));
    cr_assert_gt(evstore_feed(&e, &t.p), 0, "the first pieces go in");
    cr_assert_gt(e.fed_part, 0);
    cr_assert_eq(e.fed, 0, "the event is not fed whole yet");
    cr_assert_eq(evstore_unfed(&e), evrec_space(20000) - e.fed_part);
    cr_assert_lt(evstore_unfed(&e), evrec_space(20000));
    t_check_not_stranded(&e, &t);
    t_ring_free(&t);
    evstore_free(&e);
}

/* A worker dies with half an event in its ring: the new worker gets that event whole, from
 * its first piece, then the rest in order. */
Test(evstore, rewind_feeds_a_partly_fed_event_again_whole)
{
    struct evstore e = { 0 };
    struct t_ring t;
    uint64_t next = 1;

    t_ring_new(&t, 4096);
    t_append(&e, 1, 100);
    t_append(&e, 2, 30000);
    t_append(&e, 3, 200);
    t_append(&e, 4, 9000);
    evstore_feed(&e, &t.p);
    cr_assert_eq(t_drain(&t, &next, 1), 1, "event 1");
    evstore_feed(&e, &t.p);
    cr_assert_eq(t_drain(&t, &next, UINT32_MAX), 0, "event 2 is not whole yet");
    cr_assert_gt(t.pieces, 0);
    evstore_feed(&e, &t.p);
    cr_assert_gt(e.fed_part, 0, "the store is in the middle of event 2");

    /* The worker dies; its replacement starts after position 1. */
    t_ring_reset(&t, 4096);
    cr_assert_eq(evstore_rewind(&e, 1), 0);
    cr_assert_eq(e.fed_part, 0);
    cr_assert_eq(evstore_unfed(&e), e.len - evrec_space(100));
    next = 2;
    for (int rounds = 0; next <= 4; rounds++) {
        evstore_feed(&e, &t.p);
        t_check_not_stranded(&e, &t);
        t_drain(&t, &next, UINT32_MAX);
        ring_producer_waits(&t.c);
        cr_assert_lt(rounds, 1000);
    }
    cr_assert_eq(evstore_unfed(&e), 0);

    /* Rewinding into the middle of what was fed in pieces works the same way. */
    t_ring_reset(&t, 4096);
    cr_assert_eq(evstore_rewind(&e, 2), 0);
    next = 3;
    for (int rounds = 0; next <= 4; rounds++) {
        evstore_feed(&e, &t.p);
        t_drain(&t, &next, UINT32_MAX);
        ring_producer_waits(&t.c);
        cr_assert_lt(rounds, 1000);
    }
    t_ring_free(&t);
    evstore_free(&e);
}

Test(evstore, drop_through_keeps_the_partly_fed_event_going)
{
    struct evstore e = { 0 };
    struct t_ring t;
    uint64_t next = 1;

    t_ring_new(&t, 4096);
    for (uint64_t pos = 1; pos <= 3; pos++)
        t_append(&e, pos, 40);
    t_append(&e, 4, 50000);
    t_append(&e, 5, 40);
    evstore_feed(&e, &t.p);
    cr_assert_eq(t_drain(&t, &next, 3), 3);
    evstore_feed(&e, &t.p);
    uint32_t part = e.fed_part;
    cr_assert_gt(part, 0);

    /* A snapshot at 3 is durable: 1..3 go; event 4 goes on from where it was. */
    evstore_drop_through(&e, 3);
    cr_assert_eq(e.first, 4);
    cr_assert_eq(e.fed, 0);
    cr_assert_eq(e.fed_part, part, "the pieces already in the ring stay counted");
    for (int rounds = 0; next <= 5; rounds++) {
        evstore_feed(&e, &t.p);
        t_drain(&t, &next, UINT32_MAX);
        ring_producer_waits(&t.c);
        cr_assert_lt(rounds, 1000);
    }
    cr_assert_eq(evstore_unfed(&e), 0);
    t_ring_free(&t);
    evstore_free(&e);
}
