/* test_wire.c - frame encoding and decoding (common/wire.c). */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "wire.h"

TestSuite(wire);

#define MAXB (1u << 20) /* max_body used by most tests */

static const uint8_t tok_a[WIRE_TOKEN_LEN] = {
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
};
static const uint8_t tok_a_ver[WIRE_VERIFIER_LEN] = { 1, 2, 3 };
static const uint8_t zero_tok[WIRE_TOKEN_LEN];

/* Decode exactly one frame that fills buf[0..n) and insist it is whole. */
static void next_whole(const void *buf, size_t n, struct wire_frame *f)
{
    long rc = wire_next(buf, n, MAXB, f);
    cr_assert_eq(rc, (long)n, "wire_next returned %ld, want the frame length %zu", rc, n);
}

/* ---- round trips ---------------------------------------------------------------------- */

Test(wire, hello_roundtrip)
{
    uint8_t buf[64];
    struct wire_frame f;

    size_t n = wire_put_hello(buf, WIRE_ROLE_CLIENT, 0, NULL);
    cr_assert_eq(n, WIRE_HDR_LEN + 32, "HELLO is 12 + 32 bytes");
    next_whole(buf, n, &f);
    cr_assert_eq(f.type, WIRE_HELLO);
    cr_assert_eq(f.flags, 0);
    cr_assert_eq(f.u.hello.role, WIRE_ROLE_CLIENT);
    cr_assert_eq(f.u.hello.session_id, 0);
    cr_assert_arr_eq(f.u.hello.token, zero_tok, WIRE_TOKEN_LEN, "NULL token encodes as zeros");

    uint8_t ver[WIRE_VERIFIER_LEN];
    for (unsigned i = 0; i < sizeof(ver); i++)
        ver[i] = (uint8_t)(i * 7 + 1);
    uint8_t big[WIRE_RESUME_MAX];
    n = wire_put_hello_edge(big, 0x1122334455667788ull, 9, ver, "sixteen-byte-key", 16);
    cr_assert_eq(n, WIRE_HDR_LEN + 74 + 16);
    next_whole(big, n, &f);
    cr_assert_eq(f.u.hello.role, WIRE_ROLE_EDGE);
    cr_assert_eq(f.u.hello.session_id, 0x1122334455667788ull);
    cr_assert_eq(f.u.hello.epoch, 9);
    cr_assert_arr_eq(f.u.hello.verifier, ver, WIRE_VERIFIER_LEN, "verifier survives");
    cr_assert_eq(f.u.hello.secret_len, 16);
    cr_assert_arr_eq(f.u.hello.secret, "sixteen-byte-key", 16);
    /* The layout in wire.h: u8 role, u8 pad[7], u64 session_id (LE), token. */
    cr_assert_eq(big[WIRE_HDR_LEN], WIRE_ROLE_EDGE);
    for (int i = 1; i < 8; i++)
        cr_assert_eq(big[WIRE_HDR_LEN + i], 0, "HELLO pad byte %d is zero", i);
    cr_assert_eq(big[WIRE_HDR_LEN + 8], 0x88, "session_id is little-endian");
    /* An edge HELLO without its extension, or a secret length that disagrees: refused. */
    cr_assert_eq(wire_next(big, WIRE_HDR_LEN + 32, MAXB, &f), -EAGAIN);
    big[WIRE_HDR_LEN + 72] = 17;
    cr_assert_eq(wire_next(big, n, MAXB, &f), -EPROTO, "secret_len past the body");
}

Test(wire, welcome_roundtrip)
{
    uint8_t buf[64];
    struct wire_frame f;

    size_t n = wire_put_welcome(buf, UINT64_MAX, tok_a, 3);
    cr_assert_eq(n, WIRE_HDR_LEN + 32);
    next_whole(buf, n, &f);
    cr_assert_eq(f.type, WIRE_WELCOME);
    cr_assert_eq(f.u.welcome.session_id, UINT64_MAX);
    cr_assert_arr_eq(f.u.welcome.token, tok_a, WIRE_TOKEN_LEN);
    cr_assert_eq(f.u.welcome.epoch, 3);
}

static size_t put_resume(uint8_t *buf, uint64_t sid, const uint8_t *tok, uint64_t last)
{
    return wire_put_resume(buf, sid, tok, 4, last, 11, 12, NULL, 0);
}

static size_t put_snap_put(uint8_t *buf, uint64_t pos, const void *bytes, uint32_t len)
{
    size_t n = wire_put_snap_put_hdr(buf, pos, 0, len, 0, len);
    if (len)
        memcpy(buf + n, bytes, len);
    return n + len;
}

Test(wire, resume_roundtrip)
{
    uint8_t buf[WIRE_RESUME_MAX];
    struct wire_frame f;

    size_t n = put_resume(buf, 42, tok_a, 0x0102030405060708ull);
    next_whole(buf, n, &f);
    cr_assert_eq(f.type, WIRE_RESUME);
    cr_assert_eq(f.u.resume.session_id, 42);
    cr_assert_arr_eq(f.u.resume.token, tok_a, WIRE_TOKEN_LEN);
    cr_assert_eq(f.u.resume.last_out, 0x0102030405060708ull);
    cr_assert_eq(f.u.resume.epoch, 4);
    cr_assert_eq(f.u.resume.next_seq, 11);
    cr_assert_eq(f.u.resume.order_base, 12);
    cr_assert_eq(f.u.resume.secret_len, 0);
    n = wire_put_resume(buf, 1, tok_a, 2, 3, 4, 5, "edge-secret-0123", 16);
    next_whole(buf, n, &f);
    cr_assert_eq(f.u.resume.secret_len, 16);
    cr_assert_arr_eq(f.u.resume.secret, "edge-secret-0123", 16);

    n = wire_put_resume_info(buf, 7, 8, 9, 10);
    next_whole(buf, n, &f);
    cr_assert_eq(f.type, WIRE_RESUME_INFO);
    cr_assert_eq(f.u.resume_info.epoch, 7);
    cr_assert_eq(f.u.resume_info.last_out, 8);
    cr_assert_eq(f.u.resume_info.next_seq, 9);
    cr_assert_eq(f.u.resume_info.order_base, 10);
}

Test(wire, snapshot_frames_roundtrip)
{
    static uint8_t buf[WIRE_SNAP_PUT_HDR_LEN + WIRE_SNAP_PIECE + 1];
    struct wire_frame f;

    size_t n = wire_put_snap_put_hdr(buf, 50, 40, 100000, 65536, 3);
    memcpy(buf + n, "abc", 3);
    next_whole(buf, n + 3, &f);
    cr_assert_eq(f.u.snap_put.position, 50);
    cr_assert_eq(f.u.snap_put.base, 40);
    cr_assert_eq(f.u.snap_put.total, 100000);
    cr_assert_eq(f.u.snap_put.offset, 65536);
    cr_assert_eq(f.u.snap_put.len, 3);
    cr_assert_arr_eq(f.u.snap_put.bytes, "abc", 3);
    /* a piece past its file's end, a base not older than the snapshot, a piece too big */
    n = wire_put_snap_put_hdr(buf, 50, 40, 10, 8, 3);
    cr_assert_eq(wire_next(buf, n + 3, MAXB, &f), -EPROTO, "piece past the end");
    n = wire_put_snap_put_hdr(buf, 50, 50, 10, 0, 3);
    cr_assert_eq(wire_next(buf, n + 3, MAXB, &f), -EPROTO, "base == position");
    n = wire_put_snap_put_hdr(buf, 50, 0, WIRE_SNAP_PIECE + 1, 0, WIRE_SNAP_PIECE + 1);
    cr_assert_eq(wire_next(buf, n + WIRE_SNAP_PIECE + 1, SIZE_MAX, &f), -EPROTO,
                 "piece over WIRE_SNAP_PIECE");

    n = wire_put_snap_durable(buf, 5, 6, 7);
    next_whole(buf, n, &f);
    cr_assert_eq(f.type, WIRE_SNAP_DURABLE);
    cr_assert_eq(f.u.durable.position, 5);
    cr_assert_eq(f.u.durable.seq[0], 6);
    cr_assert_eq(f.u.durable.seq[1], 7);
    for (uint8_t t = WIRE_RESUME_END; t <= WIRE_MOVE; t++) {
        n = wire_put_empty(buf, t);
        next_whole(buf, n, &f);
        cr_assert_eq(f.type, t);
    }
}

Test(wire, u64_frames_roundtrip)
{
    static const uint8_t types[] = { WIRE_SNAP_ACK };
    static const uint64_t vals[] = { 0, 1, 0x8000000000000000ull, UINT64_MAX };
    uint8_t buf[32];
    struct wire_frame f;

    for (size_t t = 0; t < sizeof(types); t++) {
        for (size_t v = 0; v < sizeof(vals) / sizeof(vals[0]); v++) {
            size_t n = wire_put_u64(buf, types[t], vals[v]);
            cr_assert_eq(n, WIRE_HDR_LEN + 8);
            next_whole(buf, n, &f);
            cr_assert_eq(f.type, types[t], "type %s", wire_type_name(types[t]));
            uint64_t got = f.u.snap.position;
            cr_assert_eq(got, vals[v], "%s value %llx, want %llx", wire_type_name(types[t]),
                         (unsigned long long)got, (unsigned long long)vals[v]);
        }
    }
}

Test(wire, data_roundtrip)
{
    static uint8_t buf[WIRE_DATA_HDR_LEN + 4096];
    static const size_t lens[] = { 0, 1, 7, 8, 100, 4096 };
    struct wire_frame f;

    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        size_t plen = lens[k];
        size_t h = wire_put_data_hdr(buf, 1000 + k, plen);
        cr_assert_eq(h, WIRE_DATA_HDR_LEN, "wire_put_data_hdr writes 20 bytes");
        for (size_t i = 0; i < plen; i++)
            buf[h + i] = (uint8_t)(i * 13 + k);
        next_whole(buf, h + plen, &f);
        cr_assert_eq(f.type, WIRE_DATA);
        cr_assert_eq(f.u.data.seq, 1000 + k);
        cr_assert_eq(f.u.data.len, plen, "payload length %zu, want %zu", f.u.data.len, plen);
        cr_assert_eq(f.u.data.payload, buf + WIRE_DATA_HDR_LEN, "payload points into the buffer");
        for (size_t i = 0; i < plen; i++)
            cr_assert_eq(f.u.data.payload[i], (uint8_t)(i * 13 + k), "payload byte %zu", i);
    }
}

Test(wire, out_roundtrip)
{
    static uint8_t buf[WIRE_OUT_HDR_LEN + 512 + 4096];
    static const uint32_t olens[] = { 0, 1, 21, 512 };
    static const size_t plens[] = { 0, 1, 100, 4096 };
    uint8_t order[512];
    struct wire_frame f;

    for (size_t i = 0; i < sizeof(order); i++)
        order[i] = (uint8_t)(0xa0 ^ i);
    for (size_t a = 0; a < 4; a++) {
        for (size_t b = 0; b < 4; b++) {
            uint32_t olen = olens[a];
            size_t plen = plens[b];
            size_t h = wire_put_out_hdr(buf, 77 + a * 4 + b, order, olen, plen);
            cr_assert_eq(h, WIRE_OUT_HDR_LEN + olen, "OUT header is 24 + order_len");
            for (size_t i = 0; i < plen; i++)
                buf[h + i] = (uint8_t)(i * 7 + b);
            next_whole(buf, h + plen, &f);
            cr_assert_eq(f.type, WIRE_OUT);
            cr_assert_eq(f.u.out.out_no, 77 + a * 4 + b);
            cr_assert_eq(f.u.out.order_len, olen);
            cr_assert_eq(f.u.out.order, buf + WIRE_OUT_HDR_LEN, "order points into the buffer");
            if (olen)
                cr_assert_arr_eq(f.u.out.order, order, olen, "order bytes survive");
            cr_assert_eq(f.u.out.len, plen, "order %u: payload %zu, want %zu", olen,
                         f.u.out.len, plen);
            cr_assert_eq(f.u.out.payload, buf + h, "payload follows the order");
            for (size_t i = 0; i < plen; i++)
                cr_assert_eq(f.u.out.payload[i], (uint8_t)(i * 7 + b), "payload byte %zu", i);
        }
    }
}

Test(wire, snap_put_roundtrip)
{
    uint8_t buf[WIRE_SNAP_PUT_HDR_LEN + 100], snap[100];
    struct wire_frame f;

    for (size_t i = 0; i < sizeof(snap); i++)
        snap[i] = (uint8_t)(255 - i);
    size_t n = put_snap_put(buf, 123456789, snap, sizeof(snap));
    next_whole(buf, n, &f);
    cr_assert_eq(f.type, WIRE_SNAP_PUT);
    cr_assert_eq(f.u.snap_put.position, 123456789);
    cr_assert_eq(f.u.snap_put.len, sizeof(snap));
    cr_assert_eq(f.u.snap_put.bytes, buf + WIRE_SNAP_PUT_HDR_LEN);
    cr_assert_arr_eq(f.u.snap_put.bytes, snap, sizeof(snap));

    n = put_snap_put(buf, 1, NULL, 0);
    next_whole(buf, n, &f);
    cr_assert_eq(f.u.snap_put.len, 0, "an empty piece is valid");
}

Test(wire, close_roundtrip)
{
    uint8_t buf[16];
    struct wire_frame f;

    size_t n = wire_put_close(buf);
    cr_assert_eq(n, WIRE_HDR_LEN, "CLOSE is a bare header");
    next_whole(buf, n, &f);
    cr_assert_eq(f.type, WIRE_CLOSE);
}

Test(wire, error_roundtrip)
{
    uint8_t buf[WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX];
    struct wire_frame f;

    size_t n = wire_put_error(buf, sizeof(buf), WIRE_ERR_AUTH, "bad token for session %d", 17);
    const char *want = "bad token for session 17";
    cr_assert_eq(n, WIRE_HDR_LEN + 4 + strlen(want));
    next_whole(buf, n, &f);
    cr_assert_eq(f.type, WIRE_ERROR);
    cr_assert_eq(f.u.error.code, WIRE_ERR_AUTH);
    cr_assert_eq(f.u.error.text_len, strlen(want));
    cr_assert(memcmp(f.u.error.text, want, strlen(want)) == 0, "text '%.*s'",
              (int)f.u.error.text_len, f.u.error.text);
    cr_assert_eq((const uint8_t *)f.u.error.text, buf + WIRE_HDR_LEN + 4);

    n = wire_put_error(buf, sizeof(buf), 0xdeadbeef, "%s", "");
    next_whole(buf, n, &f);
    cr_assert_eq(f.u.error.code, 0xdeadbeef);
    cr_assert_eq(f.u.error.text_len, 0, "empty text is valid");
}

Test(wire, header_layout)
{
    uint8_t buf[WIRE_HDR_LEN];

    cr_assert_eq(wire_put_hdr(buf, WIRE_DATA, 0x01020304), WIRE_HDR_LEN);
    static const uint8_t want[WIRE_HDR_LEN] = {
        0x5a, 0xc5, WIRE_VERSION, WIRE_DATA, 0, 0, 0, 0, 0x04, 0x03, 0x02, 0x01,
    };
    cr_assert_arr_eq(buf, want, WIRE_HDR_LEN, "header bytes as documented in wire.h");
}

Test(wire, flags_are_reported)
{
    uint8_t buf[16];
    struct wire_hdr h;
    struct wire_frame f;

    wire_put_close(buf);
    wire_le16(buf + 4, 0x8001);
    cr_assert_eq(wire_parse_hdr(buf, sizeof(buf), MAXB, &h), 0);
    cr_assert_eq(h.flags, 0x8001);
    next_whole(buf, WIRE_HDR_LEN, &f);
    cr_assert_eq(f.flags, 0x8001, "flags pass through to the frame");
}

Test(wire, type_names)
{
    cr_assert_str_eq(wire_type_name(WIRE_HELLO), "HELLO");
    cr_assert_str_eq(wire_type_name(WIRE_OUT), "OUT");
    cr_assert_str_eq(wire_type_name(WIRE_SNAP_DURABLE), "SNAP_DURABLE");
    cr_assert_str_eq(wire_type_name(WIRE_ERROR), "ERROR");
    cr_assert_str_eq(wire_type_name(0), "UNKNOWN");
    cr_assert_str_eq(wire_type_name(WIRE_TYPE_MAX + 1), "UNKNOWN");
    cr_assert_str_eq(wire_type_name(255), "UNKNOWN");
    for (unsigned t = 1; t <= WIRE_TYPE_MAX; t++)
        cr_assert(wire_type_name((uint8_t)t) && strcmp(wire_type_name((uint8_t)t), "UNKNOWN"),
                  "type %u has a name", t);
}

/* ---- a sample of valid frames, one or more per type ------------------------------------- */

#define NSAMPLES 20
#define SAMPLE_MAX 1024

/* Writes sample i into buf (SAMPLE_MAX bytes) and returns its length. */
static size_t sample_frame(int i, uint8_t *buf)
{
    static const uint8_t order[5] = { 1, 0, 2, 3, 4 };
    size_t n;

    switch (i) {
    case 0: return wire_put_hello(buf, WIRE_ROLE_CLIENT, 0, NULL);
    case 1: return wire_put_hello_edge(buf, 99, 1, tok_a_ver, "secret-of-16byte", 16);
    case 2: return wire_put_welcome(buf, 99, tok_a, 1);
    case 3: return put_resume(buf, 99, tok_a, 5);
    case 4: return wire_put_resume_info(buf, 2, 5, 6, 7);
    case 5:
        n = wire_put_data_hdr(buf, 1, 10);
        memcpy(buf + n, "0123456789", 10);
        return n + 10;
    case 6: return wire_put_data_hdr(buf, 2, 0);
    case 7:
        n = wire_put_out_hdr(buf, 1, order, sizeof(order), 3);
        memcpy(buf + n, "abc", 3);
        return n + 3;
    case 8: return wire_put_out_hdr(buf, 2, NULL, 0, 0);
    case 9: return wire_put_snap_durable(buf, 7, 1, 2);
    case 10: return put_snap_put(buf, 8, "snapshot", 8);
    case 11: return wire_put_u64(buf, WIRE_SNAP_ACK, 8);
    case 12: return wire_put_close(buf);
    case 13: return wire_put_error(buf, SAMPLE_MAX, WIRE_ERR_PROTO, "malformed %s", "frame");
    case 14:
        n = wire_put_data_hdr(buf, 3, 900);
        memset(buf + n, 'x', 900);
        return n + 900;
    case 15:
        n = wire_put_hdr(buf, WIRE_ORDER, sizeof(order));
        memcpy(buf + n, order, sizeof(order));
        return n + sizeof(order);
    case 16: return wire_put_empty(buf, WIRE_RESUME_END);
    case 17: return wire_put_empty(buf, WIRE_HEARTBEAT);
    case 18: return wire_put_empty(buf, WIRE_MOVE);
    case 19: return wire_put_u64(buf, WIRE_RECEIPT, 9);
    }
    cr_assert_fail("no sample %d", i);
    return 0;
}

Test(wire, every_type_sampled)
{
    uint8_t buf[SAMPLE_MAX];
    unsigned seen = 0;
    struct wire_frame f;

    for (int i = 0; i < NSAMPLES; i++) {
        size_t n = sample_frame(i, buf);
        next_whole(buf, n, &f);
        seen |= 1u << f.type;
    }
    for (unsigned t = 1; t <= WIRE_TYPE_MAX; t++)
        cr_assert(seen & (1u << t), "samples cover %s", wire_type_name((uint8_t)t));
}

Test(wire, stream_of_frames)
{
    static uint8_t stream[NSAMPLES * SAMPLE_MAX];
    size_t total = 0, lens[NSAMPLES], off = 0;
    uint8_t types[NSAMPLES];
    struct wire_frame f;

    for (int i = 0; i < NSAMPLES; i++) {
        lens[i] = sample_frame(i, stream + total);
        types[i] = stream[total + 3];
        total += lens[i];
    }
    for (int i = 0; i < NSAMPLES; i++) {
        long rc = wire_next(stream + off, total - off, MAXB, &f);
        cr_assert_eq(rc, (long)lens[i], "frame %d: wire_next %ld, want %zu", i, rc, lens[i]);
        cr_assert_eq(f.type, types[i], "frame %d: type %s", i, wire_type_name(f.type));
        off += (size_t)rc;
    }
    cr_assert_eq(off, total);
    cr_assert_eq(wire_next(stream + off, 0, MAXB, &f), -EAGAIN, "empty rest: -EAGAIN");
}

/* ---- bad headers ------------------------------------------------------------------------ */

static void expect_next(const uint8_t *buf, size_t n, size_t max, long want, const char *what)
{
    struct wire_frame f;
    long rc = wire_next(buf, n, max, &f);
    cr_assert_eq(rc, want, "%s: wire_next returned %ld, want %ld", what, rc, want);
}

static void expect_hdr(const uint8_t *buf, size_t n, size_t max, int want, const char *what)
{
    struct wire_hdr h;
    int rc = wire_parse_hdr(buf, n, max, &h);
    cr_assert_eq(rc, want, "%s: wire_parse_hdr returned %d, want %d", what, rc, want);
}

Test(wire, bad_magic)
{
    uint8_t buf[SAMPLE_MAX];

    for (int i = 0; i < NSAMPLES; i++) {
        size_t n = sample_frame(i, buf);
        for (int byte = 0; byte < 2; byte++) {
            for (int bit = 0; bit < 8; bit++) {
                buf[byte] ^= (uint8_t)(1u << bit);
                expect_hdr(buf, WIRE_HDR_LEN, MAXB, -EPROTO, "flipped magic bit");
                expect_next(buf, n, MAXB, -EPROTO, "flipped magic bit");
                buf[byte] ^= (uint8_t)(1u << bit);
            }
        }
    }
    /* Byte-swapped magic (a big-endian sender). */
    sample_frame(12, buf);
    buf[0] = 0xc5;
    buf[1] = 0x5a;
    expect_next(buf, WIRE_HDR_LEN, MAXB, -EPROTO, "big-endian magic");
}

Test(wire, bad_version)
{
    uint8_t buf[SAMPLE_MAX];
    static const uint8_t versions[] = { 0, WIRE_VERSION + 1, 0x80, 0xff };

    for (int i = 0; i < NSAMPLES; i++) {
        size_t n = sample_frame(i, buf);
        for (size_t v = 0; v < sizeof(versions); v++) {
            buf[2] = versions[v];
            expect_hdr(buf, WIRE_HDR_LEN, MAXB, -EPROTO, "bad version");
            expect_next(buf, n, MAXB, -EPROTO, "bad version");
        }
    }
}

Test(wire, bad_type)
{
    uint8_t buf[SAMPLE_MAX];

    for (int i = 0; i < NSAMPLES; i++) {
        size_t n = sample_frame(i, buf);
        for (unsigned t = 0; t < 256; t++) {
            if (t >= 1 && t <= WIRE_TYPE_MAX)
                continue;
            buf[3] = (uint8_t)t;
            expect_hdr(buf, WIRE_HDR_LEN, MAXB, -EPROTO, "bad type");
            expect_next(buf, n, MAXB, -EPROTO, "bad type");
        }
    }
}

Test(wire, nonzero_reserved)
{
    uint8_t buf[SAMPLE_MAX];
    static const uint16_t vals[] = { 1, 0x0100, 0x8000, 0xffff };

    for (int i = 0; i < NSAMPLES; i++) {
        size_t n = sample_frame(i, buf);
        for (size_t v = 0; v < 4; v++) {
            wire_le16(buf + 6, vals[v]);
            expect_hdr(buf, WIRE_HDR_LEN, MAXB, -EPROTO, "nonzero reserved");
            expect_next(buf, n, MAXB, -EPROTO, "nonzero reserved");
        }
    }
}

Test(wire, body_over_max)
{
    uint8_t buf[WIRE_HDR_LEN + 200];
    struct wire_hdr h;

    /* Exactly max is fine; one over is -EMSGSIZE. */
    size_t n = wire_put_data_hdr(buf, 1, 92); /* body 100 */
    memset(buf + n, 'p', 92);
    cr_assert_eq(wire_parse_hdr(buf, n + 92, 100, &h), 0, "body == max_body is accepted");
    cr_assert_eq(h.len, 100);
    expect_next(buf, n + 92, 100, (long)(n + 92), "body == max_body");
    expect_hdr(buf, n + 92, 99, -EMSGSIZE, "body == max_body + 1");
    expect_next(buf, n + 92, 99, -EMSGSIZE, "body == max_body + 1");

    /* Detected from the header alone, before any of the body arrived. */
    wire_put_hdr(buf, WIRE_DATA, UINT32_MAX);
    expect_hdr(buf, WIRE_HDR_LEN, MAXB, -EMSGSIZE, "4 GiB body, header only");
    expect_next(buf, WIRE_HDR_LEN, MAXB, -EMSGSIZE, "4 GiB body, header only");
    for (unsigned t = 1; t <= WIRE_TYPE_MAX; t++) {
        wire_put_hdr(buf, (uint8_t)t, MAXB + 1);
        expect_next(buf, WIRE_HDR_LEN, MAXB, -EMSGSIZE, wire_type_name((uint8_t)t));
        wire_put_hdr(buf, (uint8_t)t, MAXB);
        expect_next(buf, WIRE_HDR_LEN, MAXB, -EAGAIN, "body == max, not arrived yet");
    }
    /* max_body 0: only empty bodies pass. */
    n = wire_put_close(buf);
    expect_next(buf, n, 0, (long)n, "CLOSE with max_body 0");
    n = wire_put_u64(buf, WIRE_SNAP_ACK, 1);
    expect_next(buf, n, 0, -EMSGSIZE, "SNAP_ACK with max_body 0");
}

/* ---- incomplete frames ------------------------------------------------------------------ */

Test(wire, every_truncation_is_eagain)
{
    uint8_t buf[SAMPLE_MAX];
    struct wire_hdr h;

    for (int i = 0; i < NSAMPLES; i++) {
        size_t n = sample_frame(i, buf);
        for (size_t cut = 0; cut < n; cut++) {
            struct wire_frame f;
            long rc = wire_next(buf, cut, MAXB, &f);
            cr_assert_eq(rc, -EAGAIN, "sample %d (%s, %zu bytes) cut to %zu: %ld, want -EAGAIN",
                         i, wire_type_name(buf[3]), n, cut, rc);
            if (cut < WIRE_HDR_LEN)
                cr_assert_eq(wire_parse_hdr(buf, cut, MAXB, &h), -EAGAIN,
                             "header cut to %zu: -EAGAIN", cut);
        }
        expect_next(buf, n, MAXB, (long)n, "whole sample");
    }
}

Test(wire, short_header_even_if_garbage)
{
    /* Fewer than 12 bytes: -EAGAIN even before the magic can be judged. */
    uint8_t junk[WIRE_HDR_LEN];
    memset(junk, 0xff, sizeof(junk));
    for (size_t cut = 0; cut < WIRE_HDR_LEN; cut++)
        expect_hdr(junk, cut, MAXB, -EAGAIN, "short garbage header");
    expect_hdr(junk, WIRE_HDR_LEN, MAXB, -EPROTO, "full garbage header");
}

/* ---- malformed bodies ------------------------------------------------------------------- */

/* Frame of type t with the given body, decoded through wire_next and wire_decode. */
static long decode_body(uint8_t t, const void *body, uint32_t len, struct wire_frame *f)
{
    static uint8_t buf[WIRE_HDR_LEN + 8192];
    struct wire_hdr h;
    cr_assert(len <= 8192, "test body too big");
    size_t n = wire_put_hdr(buf, t, len);
    if (len)
        memcpy(buf + n, body, len);
    long rc = wire_next(buf, n + len, MAXB, f);
    cr_assert_eq(wire_parse_hdr(buf, n + len, MAXB, &h), 0, "the header itself is fine");
    int drc = wire_decode(&h, buf + n, f);
    cr_assert_eq(drc < 0 ? drc : 0, rc < 0 ? rc : 0, "wire_next and wire_decode agree");
    return rc;
}

static void expect_body(uint8_t t, const void *body, uint32_t len, long want)
{
    struct wire_frame f;
    long rc = decode_body(t, body, len, &f);
    if (want > 0)
        want = WIRE_HDR_LEN + len;
    cr_assert_eq(rc, want, "%s with a %u-byte body: %ld, want %ld", wire_type_name(t), len, rc,
                 want);
}

Test(wire, fixed_size_bodies)
{
    static const struct { uint8_t type; uint32_t size; } fixed[] = {
        { WIRE_HELLO, 32 }, { WIRE_WELCOME, 32 }, { WIRE_RESUME, 58 }, { WIRE_RESUME_INFO, 32 },
        { WIRE_SNAP_DURABLE, 24 }, { WIRE_SNAP_ACK, 8 }, { WIRE_RECEIPT, 8 }, { WIRE_CLOSE, 0 },
        { WIRE_RESUME_END, 0 }, { WIRE_HEARTBEAT, 0 }, { WIRE_MOVE, 0 },
    };
    uint8_t body[80] = { WIRE_ROLE_CLIENT };

    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        for (uint32_t len = 0; len <= 70; len++)
            expect_body(fixed[i].type, body, len, len == fixed[i].size ? 1 : -EPROTO);
    }
}

Test(wire, close_with_body)
{
    expect_body(WIRE_CLOSE, "x", 1, -EPROTO);
    expect_body(WIRE_CLOSE, "", 0, 1);
}

Test(wire, hello_bad_role)
{
    uint8_t body[32] = { 0 };

    for (unsigned role = 0; role < 256; role++) {
        body[0] = (uint8_t)role;
        int ok = role == WIRE_ROLE_CLIENT;   /* an edge's HELLO is longer */
        expect_body(WIRE_HELLO, body, 32, ok ? 1 : -EPROTO);
    }
}

Test(wire, data_short)
{
    uint8_t body[8] = { 0 };

    for (uint32_t len = 0; len < 8; len++)
        expect_body(WIRE_DATA, body, len, -EPROTO);
    expect_body(WIRE_DATA, body, 8, 1);
}

Test(wire, snap_put_short)
{
    uint8_t body[32] = { 1 };   /* position 1, base 0, total 0, offset 0 */

    for (uint32_t len = 0; len < 32; len++)
        expect_body(WIRE_SNAP_PUT, body, len, -EPROTO);
    expect_body(WIRE_SNAP_PUT, body, 32, 1);
    body[0] = 0;
    expect_body(WIRE_SNAP_PUT, body, 32, -EPROTO);   /* position 0 */
}

Test(wire, out_short_or_inconsistent)
{
    uint8_t body[64] = { 0 };
    struct wire_frame f;

    for (uint32_t len = 0; len < 12; len++)
        expect_body(WIRE_OUT, body, len, -EPROTO);
    /* Body of 12 + 10: order_len 0..10 fits, 11.. does not. */
    for (uint32_t olen = 0; olen <= 12; olen++) {
        wire_le32(body + 8, olen);
        expect_body(WIRE_OUT, body, 22, olen <= 10 ? 1 : -EPROTO);
    }
    /* order_len that would wrap a 32-bit sum. */
    static const uint32_t huge[] = { 0x80000000u, 0xfffffff4u, 0xfffffff5u, UINT32_MAX };
    for (size_t i = 0; i < 4; i++) {
        wire_le32(body + 8, huge[i]);
        expect_body(WIRE_OUT, body, 22, -EPROTO);
    }
    /* order_len exactly the rest: empty payload. */
    wire_le32(body + 8, 10);
    cr_assert_eq(decode_body(WIRE_OUT, body, 22, &f), WIRE_HDR_LEN + 22);
    cr_assert_eq(f.u.out.order_len, 10);
    cr_assert_eq(f.u.out.len, 0);
}

Test(wire, error_sizes)
{
    static uint8_t body[4 + WIRE_ERROR_MAX + 16];

    memset(body, 'e', sizeof(body));
    for (uint32_t len = 0; len < 4; len++)
        expect_body(WIRE_ERROR, body, len, -EPROTO);
    expect_body(WIRE_ERROR, body, 4, 1);
    expect_body(WIRE_ERROR, body, 4 + WIRE_ERROR_MAX, 1);
    expect_body(WIRE_ERROR, body, 4 + WIRE_ERROR_MAX + 1, -EPROTO);
    expect_body(WIRE_ERROR, body, 4 + WIRE_ERROR_MAX + 16, -EPROTO);
}

Test(wire, decode_unknown_type_directly)
{
    struct wire_hdr h = { .type = 0, .len = 0 };
    struct wire_frame f;
    uint8_t body[1] = { 0 };

    cr_assert_eq(wire_decode(&h, body, &f), -EPROTO, "type 0");
    h.type = WIRE_TYPE_MAX + 1;
    cr_assert_eq(wire_decode(&h, body, &f), -EPROTO, "type past the last");
}

/* ---- wire_put_error --------------------------------------------------------------------- */

Test(wire, put_error_truncates_to_cap)
{
    static uint8_t buf[4096];
    char longtext[2000];
    struct wire_frame f;

    memset(longtext, 'L', sizeof(longtext) - 1);
    longtext[sizeof(longtext) - 1] = 0;

    /* Caps from too small to plenty: the frame never exceeds cap, text is a prefix. */
    for (size_t cap = 0; cap <= WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX + 10; cap++) {
        memset(buf, 0xee, sizeof(buf));
        size_t n = wire_put_error(buf, cap, WIRE_ERR_TOO_BIG, "%s", longtext);
        if (cap < WIRE_HDR_LEN + 4) {
            cr_assert_eq(n, 0, "cap %zu below header + code: 0", cap);
            cr_assert_eq(buf[0], 0xee, "cap %zu: nothing written", cap);
            continue;
        }
        size_t want_text = cap - WIRE_HDR_LEN - 4;
        if (want_text > WIRE_ERROR_MAX)
            want_text = WIRE_ERROR_MAX;
        cr_assert_eq(n, WIRE_HDR_LEN + 4 + want_text, "cap %zu: frame %zu bytes", cap, n);
        cr_assert_eq(buf[n], 0xee, "cap %zu: nothing written past the frame", cap);
        next_whole(buf, n, &f);
        cr_assert_eq(f.u.error.code, WIRE_ERR_TOO_BIG);
        cr_assert_eq(f.u.error.text_len, want_text);
        for (size_t i = 0; i < want_text; i++)
            cr_assert_eq(f.u.error.text[i], 'L', "cap %zu: text byte %zu", cap, i);
    }
}

Test(wire, put_error_text_capped_at_error_max)
{
    static uint8_t buf[8192];
    struct wire_frame f;

    size_t n = wire_put_error(buf, sizeof(buf), 3, "%05000d", 7);
    cr_assert_eq(n, WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX, "text capped at WIRE_ERROR_MAX");
    next_whole(buf, n, &f);
    cr_assert_eq(f.u.error.text_len, WIRE_ERROR_MAX);
    cr_assert_eq(f.u.error.text[0], '0', "the prefix of the formatted text is kept");

    n = wire_put_error(buf, WIRE_HDR_LEN + 4 + 5, 3, "session %d failed", 12345);
    next_whole(buf, n, &f);
    cr_assert_eq(f.u.error.text_len, 5);
    cr_assert(memcmp(f.u.error.text, "sessi", 5) == 0, "text '%.*s', want 'sessi'",
              (int)f.u.error.text_len, f.u.error.text);
}

/* ---- fuzz ------------------------------------------------------------------------------- */

/* xorshift64*, fixed seed. */
static uint64_t wire_rng(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* A buffer whose end touches a PROT_NONE page: any read past `avail` faults. */
struct guarded {
    uint8_t *map;
    size_t pg;
};

static void guarded_init(struct guarded *g)
{
    g->pg = (size_t)sysconf(_SC_PAGESIZE);
    g->map = mmap(NULL, 2 * g->pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(g->map, MAP_FAILED, "mmap");
    cr_assert_eq(mprotect(g->map + g->pg, g->pg, PROT_NONE), 0, "mprotect guard page");
}

static uint8_t *guarded_place(struct guarded *g, const uint8_t *src, size_t n)
{
    cr_assert(n <= g->pg);
    uint8_t *p = g->map + g->pg - n;
    memcpy(p, src, n);
    return p;
}

static int inside(const void *p, size_t len, const uint8_t *lo, const uint8_t *hi)
{
    const uint8_t *q = p;
    return q >= lo && q <= hi && len <= (size_t)(hi - q);
}

/* Check whatever wire_next made of buf[0..n). */
static void check_decode(const uint8_t *buf, size_t n, size_t max, long iter)
{
    struct wire_frame f;
    long rc = wire_next(buf, n, max, &f);

    if (rc < 0) {
        cr_assert(rc == -EAGAIN || rc == -EPROTO || rc == -EMSGSIZE,
                  "iteration %ld: unexpected error %ld", iter, rc);
        return;
    }
    cr_assert(rc >= (long)WIRE_HDR_LEN && (size_t)rc <= n,
              "iteration %ld: frame length %ld outside 12..%zu", iter, rc, n);
    cr_assert((size_t)rc - WIRE_HDR_LEN <= max, "iteration %ld: body over max", iter);
    cr_assert(f.type >= 1 && f.type <= WIRE_TYPE_MAX, "iteration %ld: type %u", iter, f.type);
    const uint8_t *lo = buf + WIRE_HDR_LEN, *hi = buf + rc;
    switch (f.type) {
    case WIRE_DATA:
        cr_assert(inside(f.u.data.payload, f.u.data.len, lo, hi),
                  "iteration %ld: DATA payload outside the frame", iter);
        cr_assert_eq(f.u.data.payload + f.u.data.len, hi, "iteration %ld: DATA ends the frame", iter);
        break;
    case WIRE_OUT:
        cr_assert(inside(f.u.out.order, f.u.out.order_len, lo, hi),
                  "iteration %ld: OUT order outside the frame", iter);
        cr_assert(inside(f.u.out.payload, f.u.out.len, lo, hi),
                  "iteration %ld: OUT payload outside the frame", iter);
        cr_assert_eq(f.u.out.order + f.u.out.order_len, f.u.out.payload,
                     "iteration %ld: payload follows the order", iter);
        cr_assert_eq(f.u.out.payload + f.u.out.len, hi, "iteration %ld: OUT ends the frame", iter);
        break;
    case WIRE_SNAP_PUT:
        cr_assert(inside(f.u.snap_put.bytes, f.u.snap_put.len, lo, hi),
                  "iteration %ld: SNAP_PUT bytes outside the frame", iter);
        break;
    case WIRE_ERROR:
        cr_assert(inside(f.u.error.text, f.u.error.text_len, lo, hi),
                  "iteration %ld: ERROR text outside the frame", iter);
        cr_assert(f.u.error.text_len <= WIRE_ERROR_MAX, "iteration %ld: ERROR text too long",
                  iter);
        break;
    case WIRE_HELLO:
        cr_assert(f.u.hello.role == WIRE_ROLE_CLIENT || f.u.hello.role == WIRE_ROLE_EDGE,
                  "iteration %ld: HELLO role %u", iter, f.u.hello.role);
        break;
    }
}

Test(wire, fuzz_random_buffers, .timeout = 20)
{
    struct guarded g;
    uint64_t seed = 0xc55a0001c55a0001ull;
    uint8_t src[600];
    long decoded = 0;

    guarded_init(&g);
    for (long it = 0; it < 100000; it++) {
        size_t n = wire_rng(&seed) % sizeof(src);
        for (size_t i = 0; i < n; i++)
            src[i] = (uint8_t)wire_rng(&seed);
        /* Mostly give it a plausible header, or nothing would get past the magic. */
        uint64_t r = wire_rng(&seed);
        if (n >= WIRE_HDR_LEN && (r & 3) != 0) {
            uint32_t blen = (uint32_t)((r >> 8) % (n - WIRE_HDR_LEN + 8));
            wire_put_hdr(src, (uint8_t)((r >> 32) % (WIRE_TYPE_MAX + 2)), blen);
            if ((r >> 40) % 16 == 0)
                src[6] = 1;
            if ((r >> 44) % 4 == 0 && n >= WIRE_HDR_LEN + 12) /* OUT-ish order_len */
                wire_le32(src + WIRE_HDR_LEN + 8, (uint32_t)((r >> 48) % 64));
            if ((r >> 50) % 2 == 0 && n > WIRE_HDR_LEN) /* HELLO-ish role */
                src[WIRE_HDR_LEN] = (uint8_t)(1 + (r >> 51) % 2);
        }
        size_t max = (r >> 56) % 8 == 0 ? (r >> 20) % 64 : MAXB;
        uint8_t *p = guarded_place(&g, src, n);
        struct wire_frame f;
        if (wire_next(p, n, max, &f) > 0)
            decoded++;
        check_decode(p, n, max, it);
    }
    cr_assert_gt(decoded, 1000, "the fuzz should reach the body decoders (%ld decoded)", decoded);
    munmap(g.map, 2 * g.pg);
}

Test(wire, fuzz_mutated_frames, .timeout = 20)
{
    struct guarded g;
    uint64_t seed = 0x5eed5eed12345678ull;
    uint8_t frame[SAMPLE_MAX + 64], src[SAMPLE_MAX + 64];
    long decoded = 0;

    guarded_init(&g);
    for (long it = 0; it < 100000; it++) {
        uint64_t r = wire_rng(&seed);
        size_t n = sample_frame((int)(r % NSAMPLES), frame);
        memcpy(src, frame, n);
        int muts = 1 + (int)((r >> 8) % 4);
        for (int m = 0; m < muts; m++) {
            uint64_t q = wire_rng(&seed);
            size_t pos = (q >> 8) % n;
            switch (q % 6) {
            case 0: src[pos] ^= (uint8_t)(1u << ((q >> 32) % 8)); break;   /* bit flip */
            case 1: src[pos] = (uint8_t)(q >> 40); break;                  /* byte */
            case 2: if (n > 0) n = (q >> 16) % n; break;                   /* truncate */
            case 3:                                                        /* extend */
                if (n + 16 <= sizeof(src)) {
                    for (int k = 0; k < 16; k++)
                        src[n + k] = (uint8_t)(q >> (k % 8));
                    n += (q >> 24) % 17;
                }
                break;
            case 4: /* body length field */
                if (n >= WIRE_HDR_LEN)
                    wire_le32(src + 8, (uint32_t)((q >> 16) % (n + 16)));
                break;
            case 5: /* OUT order_len / ERROR code / DATA seq area */
                if (n >= WIRE_HDR_LEN + 12)
                    wire_le32(src + WIRE_HDR_LEN + 8, (uint32_t)(q >> 32));
                break;
            }
            if (n == 0)
                break;
        }
        uint8_t *p = guarded_place(&g, src, n);
        struct wire_frame f;
        if (wire_next(p, n, MAXB, &f) > 0)
            decoded++;
        check_decode(p, n, MAXB, it);
    }
    cr_assert_gt(decoded, 1000, "some mutations stay valid (%ld decoded)", decoded);
    munmap(g.map, 2 * g.pg);
}
