/* wire.c - encode and decode CESSNA frames (layout in wire.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "wire.h"

static const char *const type_names[] = {
    [WIRE_HELLO] = "HELLO",           [WIRE_WELCOME] = "WELCOME",
    [WIRE_RESUME] = "RESUME",         [WIRE_RESUME_INFO] = "RESUME_INFO",
    [WIRE_DATA] = "DATA",             [WIRE_OUT] = "OUT",
    [WIRE_SNAP_DURABLE] = "SNAP_DURABLE", [WIRE_SNAP_PUT] = "SNAP_PUT",
    [WIRE_SNAP_ACK] = "SNAP_ACK",     [WIRE_CLOSE] = "CLOSE",
    [WIRE_ERROR] = "ERROR",           [WIRE_ORDER] = "ORDER",
    [WIRE_RESUME_END] = "RESUME_END", [WIRE_HEARTBEAT] = "HEARTBEAT",
    [WIRE_MOVE] = "MOVE",             [WIRE_RECEIPT] = "RECEIPT",
};

const char *wire_type_name(uint8_t type)
{
    if (type == 0 || type > WIRE_TYPE_MAX)
        return "UNKNOWN";
    return type_names[type];
}

int wire_parse_hdr(const void *buf, size_t avail, size_t max_body, struct wire_hdr *h)
{
    const uint8_t *p = buf;

    if (avail < WIRE_HDR_LEN)
        return -EAGAIN;
    if (wire_get16(p) != WIRE_MAGIC || p[2] != WIRE_VERSION)
        return -EPROTO;
    if (p[3] == 0 || p[3] > WIRE_TYPE_MAX || wire_get16(p + 6) != 0)
        return -EPROTO;
    h->type = p[3];
    h->flags = wire_get16(p + 4);
    h->len = wire_get32(p + 8);
    if (h->len > max_body)
        return -EMSGSIZE;
    return 0;
}

int wire_decode(const struct wire_hdr *h, const void *body, struct wire_frame *f)
{
    const uint8_t *p = body;
    size_t n = h->len;

    memset(f, 0, sizeof(*f));
    f->type = h->type;
    f->flags = h->flags;
    switch (h->type) {
    case WIRE_HELLO:
        if (n < 32)
            return -EPROTO;
        f->u.hello.role = p[0];
        f->u.hello.framing = p[1];
        f->u.hello.session_id = wire_get64(p + 8);
        memcpy(f->u.hello.token, p + 16, WIRE_TOKEN_LEN);
        if (f->u.hello.role == WIRE_ROLE_CLIENT)
            return n == 32 ? 0 : -EPROTO;
        if (f->u.hello.role != WIRE_ROLE_EDGE || n < 74)
            return -EPROTO;
        f->u.hello.epoch = wire_get64(p + 32);
        memcpy(f->u.hello.verifier, p + 40, WIRE_VERIFIER_LEN);
        f->u.hello.secret_len = wire_get16(p + 72);
        if (f->u.hello.secret_len > WIRE_SECRET_MAX || n != 74 + f->u.hello.secret_len)
            return -EPROTO;
        f->u.hello.secret = p + 74;
        return 0;
    case WIRE_WELCOME:
        if (n != 32)
            return -EPROTO;
        f->u.welcome.session_id = wire_get64(p);
        memcpy(f->u.welcome.token, p + 8, WIRE_TOKEN_LEN);
        f->u.welcome.epoch = wire_get64(p + 24);
        return 0;
    case WIRE_RESUME:
        if (n < 58)
            return -EPROTO;
        f->u.resume.session_id = wire_get64(p);
        memcpy(f->u.resume.token, p + 8, WIRE_TOKEN_LEN);
        f->u.resume.epoch = wire_get64(p + 24);
        f->u.resume.last_out = wire_get64(p + 32);
        f->u.resume.next_seq = wire_get64(p + 40);
        f->u.resume.order_base = wire_get64(p + 48);
        f->u.resume.secret_len = wire_get16(p + 56);
        if (f->u.resume.secret_len > WIRE_SECRET_MAX || n != 58 + f->u.resume.secret_len)
            return -EPROTO;
        f->u.resume.secret = p + 58;
        return 0;
    case WIRE_RESUME_INFO:
        if (n != 32)
            return -EPROTO;
        f->u.resume_info.epoch = wire_get64(p);
        f->u.resume_info.last_out = wire_get64(p + 8);
        f->u.resume_info.next_seq = wire_get64(p + 16);
        f->u.resume_info.order_base = wire_get64(p + 24);
        return 0;
    case WIRE_DATA:
        if (n < 8)
            return -EPROTO;
        f->u.data.seq = wire_get64(p);
        f->u.data.payload = p + 8;
        f->u.data.len = n - 8;
        return 0;
    case WIRE_OUT: {
        if (n < 12)
            return -EPROTO;
        uint32_t olen = wire_get32(p + 8);
        if (olen > n - 12)
            return -EPROTO;
        f->u.out.out_no = wire_get64(p);
        f->u.out.order = p + 12;
        f->u.out.order_len = olen;
        f->u.out.payload = p + 12 + olen;
        f->u.out.len = n - 12 - olen;
        return 0;
    }
    case WIRE_SNAP_DURABLE:
        if (n != 24)
            return -EPROTO;
        f->u.durable.position = wire_get64(p);
        f->u.durable.seq[0] = wire_get64(p + 8);
        f->u.durable.seq[1] = wire_get64(p + 16);
        return 0;
    case WIRE_SNAP_ACK:
    case WIRE_RECEIPT:
        if (n != 8)
            return -EPROTO;
        f->u.snap.position = wire_get64(p);
        return 0;
    case WIRE_SNAP_PUT: {
        if (n < 32 || n - 32 > WIRE_SNAP_PIECE)
            return -EPROTO;
        f->u.snap_put.position = wire_get64(p);
        f->u.snap_put.base = wire_get64(p + 8);
        f->u.snap_put.total = wire_get64(p + 16);
        f->u.snap_put.offset = wire_get64(p + 24);
        f->u.snap_put.bytes = p + 32;
        f->u.snap_put.len = n - 32;
        /* a piece lies inside its file; a base is older than the snapshot */
        if (f->u.snap_put.position == 0 || f->u.snap_put.base >= f->u.snap_put.position ||
            f->u.snap_put.offset > f->u.snap_put.total ||
            f->u.snap_put.len > f->u.snap_put.total - f->u.snap_put.offset)
            return -EPROTO;
        return 0;
    }
    case WIRE_RESUME_END:
    case WIRE_HEARTBEAT:
    case WIRE_MOVE:
    case WIRE_CLOSE:
        return n == 0 ? 0 : -EPROTO;
    case WIRE_ORDER:
        if (n == 0 || n > WIRE_ORDER_PIECE)
            return -EPROTO;
        f->u.out.order = p;
        f->u.out.order_len = (uint32_t)n;
        return 0;
    case WIRE_ERROR:
        if (n < 4 || n > 4 + WIRE_ERROR_MAX)
            return -EPROTO;
        f->u.error.code = wire_get32(p);
        f->u.error.text = (const char *)p + 4;
        f->u.error.text_len = n - 4;
        return 0;
    }
    return -EPROTO;
}

long wire_next(const void *buf, size_t avail, size_t max_body, struct wire_frame *f)
{
    struct wire_hdr h;
    int rc = wire_parse_hdr(buf, avail, max_body, &h);

    if (rc < 0)
        return rc;
    if (avail - WIRE_HDR_LEN < h.len)
        return -EAGAIN;
    rc = wire_decode(&h, (const uint8_t *)buf + WIRE_HDR_LEN, f);
    if (rc < 0)
        return rc;
    return (long)(WIRE_HDR_LEN + h.len);
}

size_t wire_put_hdr(void *buf, uint8_t type, uint32_t body_len)
{
    uint8_t *p = buf;

    wire_le16(p, WIRE_MAGIC);
    p[2] = WIRE_VERSION;
    p[3] = type;
    wire_le16(p + 4, 0);
    wire_le16(p + 6, 0);
    wire_le32(p + 8, body_len);
    return WIRE_HDR_LEN;
}

void wire_set_flags(void *buf, uint16_t flags)
{
    wire_le16((uint8_t *)buf + 4, flags);
}

size_t wire_put_hello(void *buf, uint8_t role, uint64_t session_id, const uint8_t *token)
{
    uint8_t *p = (uint8_t *)buf + wire_put_hdr(buf, WIRE_HELLO, 32);

    memset(p, 0, 8);
    p[0] = role;
    wire_le64(p + 8, session_id);
    if (token)
        memcpy(p + 16, token, WIRE_TOKEN_LEN);
    else
        memset(p + 16, 0, WIRE_TOKEN_LEN);
    return WIRE_HDR_LEN + 32;
}

void wire_set_hello_framing(void *buf, uint8_t framing)
{
    ((uint8_t *)buf)[WIRE_HDR_LEN + 1] = framing;
}

size_t wire_put_hello_edge(void *buf, uint64_t session_id, uint64_t epoch,
                           const uint8_t *verifier, const void *secret, size_t secret_len)
{
    uint8_t *p = (uint8_t *)buf + wire_put_hdr(buf, WIRE_HELLO, (uint32_t)(74 + secret_len));

    memset(p, 0, 32);
    p[0] = WIRE_ROLE_EDGE;
    wire_le64(p + 8, session_id);
    wire_le64(p + 32, epoch);
    memcpy(p + 40, verifier, WIRE_VERIFIER_LEN);
    wire_le16(p + 72, (uint16_t)secret_len);
    if (secret_len)
        memcpy(p + 74, secret, secret_len);
    return WIRE_HDR_LEN + 74 + secret_len;
}

size_t wire_put_welcome(void *buf, uint64_t session_id, const uint8_t *token, uint64_t epoch)
{
    uint8_t *p = (uint8_t *)buf + wire_put_hdr(buf, WIRE_WELCOME, 32);

    wire_le64(p, session_id);
    if (token)
        memcpy(p + 8, token, WIRE_TOKEN_LEN);
    else
        memset(p + 8, 0, WIRE_TOKEN_LEN);
    wire_le64(p + 24, epoch);
    return WIRE_HDR_LEN + 32;
}

size_t wire_put_resume(void *buf, uint64_t session_id, const uint8_t *token, uint64_t epoch,
                       uint64_t last_out, uint64_t next_seq, uint64_t order_base,
                       const void *secret, size_t secret_len)
{
    uint8_t *p = (uint8_t *)buf + wire_put_hdr(buf, WIRE_RESUME, (uint32_t)(58 + secret_len));

    wire_le64(p, session_id);
    memcpy(p + 8, token, WIRE_TOKEN_LEN);
    wire_le64(p + 24, epoch);
    wire_le64(p + 32, last_out);
    wire_le64(p + 40, next_seq);
    wire_le64(p + 48, order_base);
    wire_le16(p + 56, (uint16_t)secret_len);
    if (secret_len)
        memcpy(p + 58, secret, secret_len);
    return WIRE_HDR_LEN + 58 + secret_len;
}

size_t wire_put_resume_info(void *buf, uint64_t epoch, uint64_t last_out, uint64_t next_seq,
                            uint64_t order_base)
{
    uint8_t *p = (uint8_t *)buf + wire_put_hdr(buf, WIRE_RESUME_INFO, 32);

    wire_le64(p, epoch);
    wire_le64(p + 8, last_out);
    wire_le64(p + 16, next_seq);
    wire_le64(p + 24, order_base);
    return WIRE_HDR_LEN + 32;
}

size_t wire_put_snap_put_hdr(void *buf, uint64_t position, uint64_t base, uint64_t total,
                             uint64_t offset, size_t piece_len)
{
    uint8_t *p = (uint8_t *)buf + wire_put_hdr(buf, WIRE_SNAP_PUT, (uint32_t)(32 + piece_len));

    wire_le64(p, position);
    wire_le64(p + 8, base);
    wire_le64(p + 16, total);
    wire_le64(p + 24, offset);
    return WIRE_SNAP_PUT_HDR_LEN;
}

size_t wire_put_snap_durable(void *buf, uint64_t position, uint64_t seq_client,
                             uint64_t seq_server)
{
    uint8_t *p = (uint8_t *)buf + wire_put_hdr(buf, WIRE_SNAP_DURABLE, 24);

    wire_le64(p, position);
    wire_le64(p + 8, seq_client);
    wire_le64(p + 16, seq_server);
    return WIRE_HDR_LEN + 24;
}

size_t wire_put_empty(void *buf, uint8_t type)
{
    return wire_put_hdr(buf, type, 0);
}

size_t wire_put_data_hdr(void *buf, uint64_t seq, size_t payload_len)
{
    uint8_t *p = (uint8_t *)buf + wire_put_hdr(buf, WIRE_DATA, (uint32_t)(8 + payload_len));

    wire_le64(p, seq);
    return WIRE_DATA_HDR_LEN;
}

size_t wire_put_out_hdr(void *buf, uint64_t out_no, const void *order, uint32_t order_len,
                        size_t payload_len)
{
    uint8_t *p = (uint8_t *)buf +
        wire_put_hdr(buf, WIRE_OUT, (uint32_t)(12 + order_len + payload_len));

    wire_le64(p, out_no);
    wire_le32(p + 8, order_len);
    if (order_len)
        memcpy(p + 12, order, order_len);
    return WIRE_OUT_HDR_LEN + order_len;
}

size_t wire_put_close(void *buf)
{
    return wire_put_empty(buf, WIRE_CLOSE);
}

size_t wire_put_u64(void *buf, uint8_t type, uint64_t v)
{
    uint8_t *p = (uint8_t *)buf + wire_put_hdr(buf, type, 8);

    wire_le64(p, v);
    return WIRE_HDR_LEN + 8;
}

size_t wire_put_error(void *buf, size_t cap, uint32_t code, const char *fmt, ...)
{
    uint8_t *p = buf;
    char text[WIRE_ERROR_MAX + 1];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > WIRE_ERROR_MAX)
        n = WIRE_ERROR_MAX;
    if (cap < WIRE_HDR_LEN + 4)
        return 0;
    if ((size_t)n > cap - WIRE_HDR_LEN - 4)
        n = (int)(cap - WIRE_HDR_LEN - 4);
    wire_put_hdr(p, WIRE_ERROR, (uint32_t)(4 + n));
    wire_le32(p + WIRE_HDR_LEN, code);
    memcpy(p + WIRE_HDR_LEN + 4, text, (size_t)n);
    return WIRE_HDR_LEN + 4 + (size_t)n;
}
