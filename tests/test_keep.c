/* test_keep.c - endpoint/keep.c: what an endpoint keeps for a new edge. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "../endpoint/keep.h"
#include "order.h"
#include "wire.h"

static void put_msg(struct keep *k, uint64_t seq, const char *payload)
{
    uint8_t frame[256];
    size_t n = wire_put_data_hdr(frame, seq, strlen(payload));

    memcpy(frame + n, payload, strlen(payload));
    cr_assert_eq(keep_put_data(k, frame, n + strlen(payload)), 0);
}

/* Encode entries (absolute times) as one OUT's order bytes, deltas from *prev. */
static size_t enc(uint8_t *buf, const struct order_entry *e, size_t n, uint64_t *prev)
{
    size_t len = 0;

    for (size_t i = 0; i < n; i++)
        len += order_encode(buf + len, &e[i], prev);
    return len;
}

static uint64_t seqs(const struct keep *k, uint64_t *out, size_t max)
{
    const uint8_t *f;
    size_t len, cur = 0, n = 0;

    while (keep_next_data(k, &cur, &f, &len) && n < max) {
        struct wire_frame fr;
        cr_assert_eq(wire_next(f, len, 1 << 20, &fr), (long)len);
        cr_assert_eq(fr.type, WIRE_DATA);
        out[n++] = fr.u.data.seq;
    }
    return n;
}

Test(keep, durable_frees_messages_up_to_this_sides_seq)
{
    struct keep k;
    uint64_t got[8];

    keep_init(&k, 0);
    for (uint64_t s = 1; s <= 5; s++)
        put_msg(&k, s, "hello");
    cr_assert_eq(seqs(&k, got, 8), 5);
    size_t before = keep_bytes(&k);
    keep_durable(&k, 0, 3);
    cr_assert_eq(seqs(&k, got, 8), 2);
    cr_expect_eq(got[0], 4);
    cr_expect_eq(got[1], 5);
    cr_expect_eq(keep_bytes(&k), before - 3 * (WIRE_DATA_HDR_LEN + 5));
    put_msg(&k, 6, "more");          /* appends after freed room is reused */
    keep_durable(&k, 0, 10);
    cr_expect_eq(seqs(&k, got, 8), 0);
    cr_expect_eq(keep_bytes(&k), 0);
    keep_free(&k);
}

struct frames { uint8_t buf[1 << 16]; size_t len; int n; size_t max_body; };

static int collect(void *arg, const uint8_t *frame, size_t len)
{
    struct frames *f = arg;
    struct wire_frame fr;

    cr_assert_eq(wire_next(frame, len, 1 << 20, &fr), (long)len);
    cr_assert_eq(fr.type, WIRE_ORDER);
    cr_assert_leq(fr.u.out.order_len, WIRE_ORDER_PIECE);
    memcpy(f->buf + f->len, fr.u.out.order, fr.u.out.order_len);
    f->len += fr.u.out.order_len;
    f->n++;
    return 0;
}

Test(keep, order_trimmed_at_durable_and_reencoded_from_time_zero)
{
    struct keep k;
    struct order_entry e[6] = {
        { ORDER_START, 1000, 0 }, { ORDER_CLIENT, 1005, 0 }, { ORDER_TIMER, 1010, 7 },
        { ORDER_SERVER, 1020, 0 }, { ORDER_CLIENT, 1030, 0 }, { ORDER_CLOSE_CLIENT, 1040, 0 },
    };
    uint8_t buf[256];
    uint64_t prev = 0;
    struct frames fr = { .len = 0 };

    keep_init(&k, 0);
    cr_assert_eq(keep_put_order(&k, buf, enc(buf, e, 2, &prev)), 0);      /* OUT 1 */
    cr_assert_eq(keep_put_order(&k, buf, enc(buf, e + 2, 3, &prev)), 0);  /* OUT 2 */
    cr_expect_eq(k.norder, 5);
    cr_expect_eq(k.order_base, 1);
    keep_durable(&k, 2, 0);          /* positions 1 and 2 are in the snapshot; 2 stays */
    cr_expect_eq(k.order_base, 2);
    cr_expect_eq(k.norder, 4);
    cr_assert_eq(keep_order_frames(&k, collect, &fr), 0);
    cr_expect_eq(fr.n, 1);
    /* Decoded from 0: the first delta is the absolute time. */
    size_t off = 0;
    uint64_t t = 0;
    struct order_entry d;
    for (int i = 1; i < 5; i++) {
        cr_assert_eq(order_decode(fr.buf, fr.len, &off, &d, &t), 0);
        cr_expect_eq(d.src, e[i].src);
        cr_expect_eq(d.time_ms, e[i].time_ms, "entry %d time %llu", i,
                     (unsigned long long)d.time_ms);
        cr_expect_eq(d.timer_id, e[i].timer_id);
    }
    cr_expect_eq(off, fr.len);

    /* A durable position ahead of what arrived: the entries before it are skipped when they
     * come, the one at it is kept. */
    keep_durable(&k, 7, 0);
    cr_expect_eq(k.norder, 0);
    cr_expect_eq(k.order_base, 7);
    cr_assert_eq(keep_put_order(&k, buf, enc(buf, e + 5, 1, &prev)), 0);  /* position 6 */
    cr_expect_eq(k.norder, 0);
    struct order_entry late = { ORDER_CLIENT, 1050, 0 };
    cr_assert_eq(keep_put_order(&k, buf, enc(buf, &late, 1, &prev)), 0); /* position 7 */
    cr_expect_eq(k.norder, 1);
    cr_expect_eq(k.order[0].time_ms, 1050);
    /* A bad order appends nothing. */
    buf[0] = 99;
    cr_expect_eq(keep_put_order(&k, buf, 2), -EPROTO);
    cr_expect_eq(k.norder, 1);
    keep_free(&k);
}

Test(keep, long_order_splits_into_whole_entry_frames)
{
    struct keep k;
    static struct frames fr;
    uint8_t buf[64];
    uint64_t prev = 0;

    keep_init(&k, 0);
    for (int i = 0; i < 2000; i++) {
        struct order_entry e = { ORDER_TIMER, 1000000ull * (uint64_t)i, 1ull << 40 };
        cr_assert_eq(keep_put_order(&k, buf, enc(buf, &e, 1, &prev)), 0);
    }
    cr_assert_eq(keep_order_frames(&k, collect, &fr), 0);
    cr_expect_gt(fr.n, 1, "several ORDER frames");
    size_t off = 0;
    uint64_t t = 0;
    struct order_entry d;
    for (int i = 0; i < 2000; i++) {   /* the pieces join into the whole order */
        cr_assert_eq(order_decode(fr.buf, fr.len, &off, &d, &t), 0);
        cr_assert_eq(d.time_ms, 1000000ull * (uint64_t)i);
    }
    cr_expect_eq(off, fr.len);
    keep_free(&k);
}

Test(keep, full_past_the_cap_until_durable_frees)
{
    struct keep k;
    char big[200];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    keep_init(&k, 1000);
    uint64_t s = 0;
    while (!keep_full(&k))
        put_msg(&k, ++s, big);
    cr_expect_eq(s, 5, "1000 bytes hold 5 frames of %zu", WIRE_DATA_HDR_LEN + 199);
    keep_durable(&k, 0, 1);
    cr_expect_not(keep_full(&k));
    keep_free(&k);
}
