/* test_order.c - varints and the piggybacked event order (common/order.c). */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "order.h"

TestSuite(order);

/* Encode v, check the encoded size, decode it back from a buffer of exactly that size. */
static void varint_roundtrip(uint64_t v, size_t want_len)
{
    uint8_t buf[16];
    size_t off = 0;
    uint64_t got = 0xdeadbeef;

    memset(buf, 0xee, sizeof(buf));
    size_t n = varint_put(buf, v);
    cr_assert_eq(n, want_len, "varint_put(%#llx) wrote %zu bytes, want %zu",
                 (unsigned long long)v, n, want_len);
    cr_assert_eq(buf[n], 0xee, "varint_put(%#llx) wrote past its reported length",
                 (unsigned long long)v);
    cr_assert_eq(varint_get(buf, n, &off, &got), 0, "varint_get(%#llx)", (unsigned long long)v);
    cr_assert_eq(off, n, "varint_get(%#llx) consumed %zu bytes, want %zu",
                 (unsigned long long)v, off, n);
    cr_assert_eq(got, v, "varint round trip: got %#llx, want %#llx",
                 (unsigned long long)got, (unsigned long long)v);
}

Test(order, varint_boundaries)
{
    varint_roundtrip(0, 1);
    varint_roundtrip(1, 1);
    varint_roundtrip(127, 1);
    varint_roundtrip(128, 2);
    varint_roundtrip(16383, 2);
    varint_roundtrip(16384, 3);
    varint_roundtrip(UINT32_MAX, 5);
    varint_roundtrip((1ull << 56) - 1, 8);
    varint_roundtrip(1ull << 56, 9);
    varint_roundtrip((1ull << 63) - 1, 9);
    varint_roundtrip(1ull << 63, 10);
    varint_roundtrip(UINT64_MAX, 10);
}

Test(order, varint_is_leb128)
{
    uint8_t buf[16];

    cr_assert_eq(varint_put(buf, 0), 1);
    cr_assert_eq(buf[0], 0x00, "0 encodes as 00");
    cr_assert_eq(varint_put(buf, 127), 1);
    cr_assert_eq(buf[0], 0x7f, "127 encodes as 7f");
    cr_assert_eq(varint_put(buf, 128), 2);
    cr_assert(buf[0] == 0x80 && buf[1] == 0x01, "128 encodes as 80 01, got %02x %02x",
              buf[0], buf[1]);
    cr_assert_eq(varint_put(buf, 300), 2);
    cr_assert(buf[0] == 0xac && buf[1] == 0x02, "300 encodes as ac 02, got %02x %02x",
              buf[0], buf[1]);
    cr_assert_eq(varint_put(buf, UINT64_MAX), 10);
    for (int i = 0; i < 9; i++)
        cr_assert_eq(buf[i], 0xff, "UINT64_MAX byte %d is %02x, want ff", i, buf[i]);
    cr_assert_eq(buf[9], 0x01, "UINT64_MAX last byte is %02x, want 01", buf[9]);
}

Test(order, varint_decodes_at_offset)
{
    uint8_t buf[32];
    size_t n = 0, off;
    uint64_t v;

    buf[n++] = 0xaa; /* junk before */
    n += varint_put(buf + n, 300);
    n += varint_put(buf + n, UINT64_MAX);
    n += varint_put(buf + n, 0);
    off = 1;
    cr_assert_eq(varint_get(buf, n, &off, &v), 0);
    cr_assert_eq(v, 300);
    cr_assert_eq(off, 3);
    cr_assert_eq(varint_get(buf, n, &off, &v), 0);
    cr_assert_eq(v, UINT64_MAX);
    cr_assert_eq(off, 13);
    cr_assert_eq(varint_get(buf, n, &off, &v), 0);
    cr_assert_eq(v, 0);
    cr_assert_eq(off, n);
    cr_assert_eq(varint_get(buf, n, &off, &v), -EPROTO, "nothing left: -EPROTO");
    cr_assert_eq(off, n, "a failed varint_get leaves *off alone");
}

Test(order, varint_truncated)
{
    static const uint64_t vals[] = { 128, 16384, UINT32_MAX, 1ull << 63, UINT64_MAX };
    uint8_t buf[16];

    for (size_t k = 0; k < sizeof(vals) / sizeof(vals[0]); k++) {
        size_t n = varint_put(buf, vals[k]);
        for (size_t cut = 0; cut < n; cut++) {
            size_t off = 0;
            uint64_t v = 42;
            cr_assert_eq(varint_get(buf, cut, &off, &v), -EPROTO,
                         "varint of %#llx cut to %zu of %zu bytes: want -EPROTO",
                         (unsigned long long)vals[k], cut, n);
            cr_assert_eq(off, 0, "a failed varint_get leaves *off alone");
            cr_assert_eq(v, 42, "a failed varint_get leaves *v alone");
        }
    }
}

Test(order, varint_too_long)
{
    /* Eleven continuation bytes: no 64-bit value needs that many. */
    uint8_t buf[11];
    size_t off = 0;
    uint64_t v;

    memset(buf, 0x80, sizeof(buf));
    cr_assert_eq(varint_get(buf, sizeof(buf), &off, &v), -EPROTO,
                 "a varint longer than 10 bytes is refused");
    cr_assert_eq(off, 0);
}

static const uint8_t all_src[] = {
    ORDER_START, ORDER_CLIENT, ORDER_SERVER, ORDER_TIMER, ORDER_CLOSE_CLIENT, ORDER_CLOSE_SERVER,
};
#define NSRC (sizeof(all_src) / sizeof(all_src[0]))

Test(order, entry_roundtrip_every_source)
{
    static const uint64_t deltas[] = { 0, 1, 127, 128, 1000, 1ull << 40, UINT64_MAX };
    static const uint64_t timers[] = { 0, 1, 127, 128, 99999, UINT64_MAX };

    for (size_t s = 0; s < NSRC; s++) {
        for (size_t d = 0; d < sizeof(deltas) / sizeof(deltas[0]); d++) {
            for (size_t t = 0; t < sizeof(timers) / sizeof(timers[0]); t++) {
                uint8_t buf[ORDER_ENTRY_MAX + 8];
                uint64_t base = deltas[d] == UINT64_MAX ? 0 : 5000;
                struct order_entry in = {
                    .src = all_src[s],
                    .time_ms = base + deltas[d],
                    .timer_id = all_src[s] == ORDER_TIMER ? timers[t] : 0,
                }, out;
                uint64_t ptime = base, dtime = base;
                size_t off = 0;

                memset(buf, 0xee, sizeof(buf));
                size_t n = order_encode(buf, &in, &ptime);
                cr_assert(n >= 2 && n <= ORDER_ENTRY_MAX,
                          "src %u: encoded %zu bytes, want 2..%d", in.src, n, ORDER_ENTRY_MAX);
                cr_assert_eq(buf[n], 0xee, "order_encode wrote past its reported length");
                cr_assert_eq(buf[0], in.src, "the first byte is the source");
                cr_assert_eq(ptime, in.time_ms, "order_encode updates *prev_time");

                memset(&out, 0x55, sizeof(out));
                cr_assert_eq(order_decode(buf, n, &off, &out, &dtime), 0,
                             "decode src %u delta %llu", in.src, (unsigned long long)deltas[d]);
                cr_assert_eq(off, n, "src %u: decoded %zu bytes of %zu", in.src, off, n);
                cr_assert_eq(out.src, in.src);
                cr_assert_eq(out.time_ms, in.time_ms, "src %u: time %llu, want %llu", in.src,
                             (unsigned long long)out.time_ms, (unsigned long long)in.time_ms);
                cr_assert_eq(out.timer_id, in.timer_id, "src %u: timer id %llu, want %llu",
                             in.src, (unsigned long long)out.timer_id,
                             (unsigned long long)in.timer_id);
                cr_assert_eq(dtime, in.time_ms, "order_decode updates *prev_time");
                if (all_src[s] != ORDER_TIMER)
                    break; /* timer ids only matter for TIMER */
            }
        }
    }
}

Test(order, timer_id_not_encoded_for_other_sources)
{
    uint8_t buf[ORDER_ENTRY_MAX];
    uint64_t pt = 0;
    struct order_entry e = { .src = ORDER_CLIENT, .time_ms = 5, .timer_id = 77 };

    cr_assert_eq(order_encode(buf, &e, &pt), 2, "CLIENT entry: src + 1-byte delta only");
    pt = 0;
    e.src = ORDER_TIMER;
    cr_assert_eq(order_encode(buf, &e, &pt), 3, "TIMER entry: src + delta + timer id");
}

Test(order, entry_max_size)
{
    uint8_t buf[ORDER_ENTRY_MAX + 8];
    uint64_t pt = 0;
    struct order_entry e = { .src = ORDER_TIMER, .time_ms = UINT64_MAX, .timer_id = UINT64_MAX };

    cr_assert_eq(order_encode(buf, &e, &pt), ORDER_ENTRY_MAX,
                 "the largest entry is exactly ORDER_ENTRY_MAX bytes");
}

/* xorshift64*, fixed seed. */
static uint64_t order_rng(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

Test(order, sequence_in_one_buffer)
{
    enum { N = 2000 };
    static struct order_entry in[N], out;
    static uint8_t buf[N * ORDER_ENTRY_MAX];
    uint64_t seed = 0x5eed0de5ull, t = 1700000000000ull, pt = 0, dt = 0;
    size_t len = 0, off = 0;

    for (int i = 0; i < N; i++) {
        uint64_t r = order_rng(&seed);
        in[i].src = i == 0 ? ORDER_START : all_src[r % NSRC];
        switch ((r >> 8) % 4) { /* deltas of every varint width, and repeats */
        case 0: break;
        case 1: t += (r >> 16) % 128; break;
        case 2: t += (r >> 16) % 100000; break;
        case 3: t += (r >> 16) % (1ull << 40); break;
        }
        in[i].time_ms = t;
        in[i].timer_id = in[i].src == ORDER_TIMER ? order_rng(&seed) >> (r % 64) : 0;
        size_t n = order_encode(buf + len, &in[i], &pt);
        cr_assert(n <= ORDER_ENTRY_MAX, "entry %d: %zu bytes", i, n);
        len += n;
    }
    for (int i = 0; i < N; i++) {
        cr_assert_eq(order_decode(buf, len, &off, &out, &dt), 0, "entry %d of %d", i, N);
        cr_assert_eq(out.src, in[i].src, "entry %d: src %u, want %u", i, out.src, in[i].src);
        cr_assert_eq(out.time_ms, in[i].time_ms, "entry %d: absolute time %llu, want %llu", i,
                     (unsigned long long)out.time_ms, (unsigned long long)in[i].time_ms);
        cr_assert_eq(out.timer_id, in[i].timer_id, "entry %d: timer id", i);
    }
    cr_assert_eq(off, len, "every byte consumed");
    cr_assert_eq(order_decode(buf, len, &off, &out, &dt), -EPROTO, "past the end: -EPROTO");
}

Test(order, first_entry_delta_from_zero)
{
    uint8_t buf[ORDER_ENTRY_MAX];
    uint64_t pt = 0, dt = 0;
    size_t off = 0;
    struct order_entry e = { .src = ORDER_START, .time_ms = 300 }, out;

    size_t n = order_encode(buf, &e, &pt);
    cr_assert_eq(n, 4, "START: src, delta, app hash 0");
    cr_assert(buf[1] == 0xac && buf[2] == 0x02, "delta from 0 is 300 = ac 02");
    cr_assert_eq(order_decode(buf, n, &off, &out, &dt), 0);
    cr_assert_eq(out.time_ms, 300);
}

Test(order, bad_source)
{
    static const uint8_t bad[] = { 0, ORDER_CLOSE_SERVER + 1, 0x7f, 0x80, 0xff };

    for (size_t i = 0; i < sizeof(bad); i++) {
        uint8_t buf[4] = { bad[i], 0x05, 0x01, 0x00 };
        struct order_entry out;
        uint64_t dt = 10;
        size_t off = 0;

        cr_assert_eq(order_decode(buf, sizeof(buf), &off, &out, &dt), -EPROTO,
                     "source %u: want -EPROTO", bad[i]);
        cr_assert_eq(off, 0, "source %u: *off left alone", bad[i]);
        cr_assert_eq(dt, 10, "source %u: *prev_time left alone", bad[i]);
    }
}

Test(order, truncated_entries)
{
    uint8_t buf[ORDER_ENTRY_MAX];
    struct order_entry out;

    for (size_t s = 0; s < NSRC; s++) {
        struct order_entry e = { .src = all_src[s], .time_ms = 1ull << 50, .timer_id = 1ull << 60 };
        uint64_t pt = 0;
        size_t n = order_encode(buf, &e, &pt);

        for (size_t cut = 0; cut < n; cut++) {
            uint64_t dt = 0;
            size_t off = 0;
            cr_assert_eq(order_decode(buf, cut, &off, &out, &dt), -EPROTO,
                         "src %u cut to %zu of %zu bytes: want -EPROTO", e.src, cut, n);
            cr_assert_eq(off, 0, "src %u cut to %zu: *off left alone", e.src, cut);
            cr_assert_eq(dt, 0, "src %u cut to %zu: *prev_time left alone", e.src, cut);
        }
    }
}

/* A START entry carries the hash of the session's [app] values (appcfg.h) in timer_id. */
Test(order, start_entry_carries_the_app_hash)
{
    uint8_t buf[ORDER_ENTRY_MAX];
    uint64_t pt = 0, dt = 0;
    size_t off = 0;
    struct order_entry e = { .src = ORDER_START, .time_ms = 7, .timer_id = UINT64_MAX }, out;

    size_t n = order_encode(buf, &e, &pt);
    cr_assert_eq(n, 12, "src, 1-byte delta, 10-byte hash: %zu", n);
    cr_assert_eq(order_decode(buf, n, &off, &out, &dt), 0);
    cr_assert_eq(out.timer_id, UINT64_MAX, "the hash comes back");
    cr_assert_eq(off, n);
    off = 0;
    dt = 0;
    cr_assert_eq(order_decode(buf, n - 1, &off, &out, &dt), -EPROTO, "a cut hash is refused");
}
