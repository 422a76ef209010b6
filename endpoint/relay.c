/* relay.c - see relay.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "framing.h"
#include "log.h"
#include "order.h"
#include "relay.h"

size_t relay_keep_max = KEEP_MAX_DEFAULT;

int64_t relay_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- buffers ---- */

/* Room for need more bytes after the pending ones: shift, then grow. 0 or -ENOMEM. */
static int rbuf_reserve(struct rbuf *b, size_t need)
{
    if (b->len == 0)
        b->off = 0;
    if (b->cap - b->off - b->len >= need)
        return 0;
    if (b->off) {
        memmove(b->p, b->p + b->off, b->len);
        b->off = 0;
    }
    if (b->cap - b->len >= need)
        return 0;
    size_t cap = b->cap ? b->cap : RELAY_IN_MIN;
    while (cap - b->len < need)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

size_t outq_len(const struct outq *q)
{
    return q->pend.len + (q->send.len - q->sent);
}

int outq_put(struct outq *q, const void *data, size_t len)
{
    if (len == 0)
        return 0;   /* an empty OUT: nothing to write (and pend.p may still be NULL) */
    if (rbuf_reserve(&q->pend, len) < 0)
        return -ENOMEM;
    memcpy(q->pend.p + q->pend.off + q->pend.len, data, len);
    q->pend.len += len;
    return 0;
}

void outq_next(struct outq *q, const uint8_t **p, size_t *len)
{
    if (q->sent == q->send.len && q->pend.len) {
        struct rbuf t = q->send;
        q->send = q->pend;
        q->pend = t;
        q->pend.off = q->pend.len = 0;
        q->sent = 0;
    }
    *p = q->send.p ? q->send.p + q->send.off + q->sent : NULL;
    *len = q->send.len - q->sent;
}

void outq_sent(struct outq *q, size_t n)
{
    q->sent += n;
    if (q->sent >= q->send.len)
        q->sent = q->send.len = q->send.off = 0;
}

void outq_clear(struct outq *q)
{
    q->pend.len = q->pend.off = 0;
    q->send.len = q->send.off = q->sent = 0;
}

int relay_init(struct relay *r, size_t max_msg)
{
    memset(r, 0, sizeof(*r));
    r->max_msg = max_msg;
    r->max_body = wire_max_body(max_msg);   /* SNAP_PUT pieces are 32 KiB whatever max_msg */
    keep_init(&r->keep, relay_keep_max);
    r->close_wait_ms = -1;
    r->chunk = malloc(WIRE_DATA_HDR_LEN + max_msg);
    if (!r->chunk || rbuf_reserve(&r->in, RELAY_IN_MIN) < 0)
        return -ENOMEM;
    return 0;
}

int relay_set_framing(struct relay *r, int framing)
{
    r->framing = framing;
    if (framing <= FRAMING_RAW)
        return 0;
    r->pin.off = r->pin.len = 0;
    return rbuf_reserve(&r->pin, framing_frame_max(framing, r->max_msg));
}

void relay_free(struct relay *r)
{
    free(r->pin.p);
    free(r->in.p);
    free(r->chunk);
    free(r->to_edge.pend.p);
    free(r->to_edge.send.p);
    free(r->to_plain.pend.p);
    free(r->to_plain.send.p);
    keep_free(&r->keep);
    memset(r, 0, sizeof(*r));
}

/* ---- session events ---- */

void relay_to_edge(struct relay *r, const void *frame, size_t len)
{
    if (r->edge_dead)
        return;
    if (outq_put(&r->to_edge, frame, len) < 0) {
        LOG(LOG_ERROR, "session=%llu msg=\"out of memory for the edge queue\"",
            (unsigned long long)r->session_id);
        r->edge_dead = r->edge_lost = true;
        r->done = true;
    }
}

static void relay_send_close(struct relay *r)
{
    uint8_t frame[WIRE_HDR_LEN];

    if (r->close_sent || r->edge_dead)
        return;
    relay_to_edge(r, frame, wire_put_close(frame));
    r->close_sent = true;
}

void relay_fail(struct relay *r, uint32_t code, const char *fmt, ...)
{
    uint8_t frame[WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX];
    char text[WIRE_ERROR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    char quoted[4 * WIRE_ERROR_MAX + 1];   /* the text may quote a peer's bytes */
    log_escape(quoted, sizeof(quoted), text, strlen(text));
    LOG(LOG_WARN, "session=%llu msg=\"%s\"", (unsigned long long)r->session_id, quoted);
    relay_to_edge(r, frame, wire_put_error(frame, sizeof(frame), code, "%s", text));
    r->done = true;
}

void relay_edge_gone(struct relay *r, const char *why)
{
    if (r->edge_dead)
        return;
    LOG(LOG_WARN, "session=%llu msg=\"edge connection lost\" why=\"%s\"%s",
        (unsigned long long)r->session_id, why,
        r->resumable && !r->done ? " next=resume" : "");
    /* After the session's end (its CLOSE or ERROR came, or ours went) the edge going away
     * loses nothing: the program still gets what is left, then a FIN, not a reset. */
    r->edge_dead = true;
    r->edge_lost = r->edge_lost || !r->done;
    outq_clear(&r->to_edge);
    if (r->resumable && !r->done)
        r->detached = true;
    else
        r->done = true;
}

struct kept_arg { struct relay *r; int rc; };

static int put_kept_frame(void *arg, const uint8_t *frame, size_t len)
{
    struct kept_arg *a = arg;

    return a->rc = outq_put(&a->r->to_edge, frame, len);
}

int relay_put_kept(struct relay *r, bool order, uint64_t after_seq)
{
    struct kept_arg a = { r, 0 };
    const uint8_t *frame;
    size_t len, cursor = 0;

    if (order && keep_order_frames(&r->keep, put_kept_frame, &a) < 0)
        return -ENOMEM;
    while (keep_next_data(&r->keep, &cursor, &frame, &len))
        if (wire_get64(frame + WIRE_HDR_LEN) > after_seq && outq_put(&r->to_edge, frame, len) < 0)
            return -ENOMEM;
    return 0;
}

void relay_plain_gone(struct relay *r)
{
    r->plain_eof = r->plain_dead = true;
    outq_clear(&r->to_plain);
    relay_send_close(r);
    if (r->deadline == 0)
        r->deadline = relay_now_ms() + (r->close_wait_ms >= 0 ? r->close_wait_ms : CLOSE_WAIT_MS);
}

/* Keep an OUT's or ORDER's order entries and queue the OUT's payload unless it is a
 * duplicate (its number at or below the last one: its order was kept already). */
static void relay_out(struct relay *r, const struct wire_frame *f)
{
    if (f->type == WIRE_OUT && f->u.out.out_no <= r->last_out)
        return;
    int rc = keep_put_order(&r->keep, f->u.out.order, f->u.out.order_len);
    if (rc == -EPROTO) {
        relay_fail(r, WIRE_ERR_PROTO, "bad frame: bad event order in %s",
                   wire_type_name(f->type));
        return;
    }
    if (rc < 0) {
        relay_fail(r, WIRE_ERR_SESSION, "proxy out of memory");
        return;
    }
    if (f->type == WIRE_ORDER)
        return;
    r->last_out = f->u.out.out_no;
    if (r->plain_dead)
        return;
    uint8_t prefix[4] = { (uint8_t)(f->u.out.len >> 24), (uint8_t)(f->u.out.len >> 16),
                          (uint8_t)(f->u.out.len >> 8), (uint8_t)f->u.out.len };
    if ((r->framing == FRAMING_U32BE && outq_put(&r->to_plain, prefix, 4) < 0) ||
        outq_put(&r->to_plain, f->u.out.payload, f->u.out.len) < 0)
        relay_fail(r, WIRE_ERR_SESSION, "proxy out of memory");
}

void relay_frames(struct relay *r)
{
    while (!r->done && !r->detached && outq_len(&r->to_plain) < RELAY_LIMIT) {
        const uint8_t *p = r->in.p + r->in.off;
        struct wire_hdr h;
        struct wire_frame f;
        int rc = wire_parse_hdr(p, r->in.len, r->max_body, &h);

        if (rc == -EAGAIN || (rc == 0 && r->in.len < WIRE_HDR_LEN + h.len))
            break;
        if (rc == -EPROTO) {
            relay_fail(r, WIRE_ERR_PROTO, "bad frame: bad magic, version or type in header");
            return;
        }
        if (rc == -EMSGSIZE) {
            relay_fail(r, WIRE_ERR_TOO_BIG, "frame of %zu bytes exceeds limit %zu",
                       WIRE_HDR_LEN + (size_t)h.len, WIRE_HDR_LEN + r->max_body);
            return;
        }
        if (wire_decode(&h, p + WIRE_HDR_LEN, &f) < 0) {
            relay_fail(r, WIRE_ERR_PROTO, "bad frame: malformed %s body of %u bytes",
                       wire_type_name(h.type), h.len);
            return;
        }
        r->in.off += WIRE_HDR_LEN + h.len;
        r->in.len -= WIRE_HDR_LEN + h.len;
        switch (f.type) {
        case WIRE_OUT:
        case WIRE_ORDER:
            relay_out(r, &f);
            break;
        case WIRE_CLOSE:
            LOG(LOG_DEBUG, "session=%llu msg=\"edge closed the session\"",
                (unsigned long long)r->session_id);
            relay_send_close(r);
            r->done = true;
            break;
        case WIRE_ERROR: {
            char text[4 * WIRE_ERROR_MAX + 1];
            LOG(LOG_WARN, "session=%llu msg=\"edge error\" code=%u text=\"%s\"",
                (unsigned long long)r->session_id, f.u.error.code,
                relay_error_text(&f, text, sizeof(text)));
            outq_clear(&r->to_edge); /* the edge closes after ERROR */
            r->edge_dead = true;
            r->done = true;
            break;
        }
        case WIRE_SNAP_DURABLE:
            keep_durable(&r->keep, f.u.durable.position, f.u.durable.seq[r->side]);
            LOG(LOG_DEBUG, "session=%llu msg=\"snapshot durable\" position=%llu seq=%llu "
                "kept_bytes=%zu", (unsigned long long)r->session_id,
                (unsigned long long)f.u.durable.position,
                (unsigned long long)f.u.durable.seq[r->side], keep_bytes(&r->keep));
            break;
        case WIRE_HEARTBEAT:
            break;   /* only resets the heartbeat timer (every byte does) */
        case WIRE_RECEIPT:
            if (r->side != 0) {
                relay_fail(r, WIRE_ERR_UNEXPECTED, "unexpected RECEIPT frame in session");
                break;
            }
            /* Every frame before it was handled: say so, so the edge may ship its snapshot. */
            uint8_t receipt[WIRE_HDR_LEN + 8];
            relay_to_edge(r, receipt, wire_put_u64(receipt, WIRE_RECEIPT, f.u.snap.position));
            break;
        case WIRE_MOVE:
            if (r->side != 0 || !r->resumable) {
                relay_fail(r, WIRE_ERR_UNEXPECTED, "unexpected MOVE frame in session");
                break;
            }
            r->moved = true;
            relay_edge_gone(r, "MOVE: the edge is leaving");
            break;
        case WIRE_SNAP_PUT:
            if (r->snap_put) {
                r->snap_put(r, &f);
                break;
            }
            relay_fail(r, WIRE_ERR_UNEXPECTED, "unexpected SNAP_PUT frame in session");
            break;
        default:
            relay_fail(r, WIRE_ERR_UNEXPECTED, "unexpected %s frame in session",
                       wire_type_name(f.type));
            break;
        }
    }
    if (r->in.len == 0)
        r->in.off = 0;
}

int relay_in_room(struct relay *r, size_t max, uint8_t **p, size_t *room)
{
    struct rbuf *b = &r->in;
    struct wire_hdr h;
    size_t need = RELAY_IN_MIN;

    if (wire_parse_hdr(b->p + b->off, b->len, r->max_body, &h) == 0 &&
        WIRE_HDR_LEN + h.len > b->len + need)
        need = WIRE_HDR_LEN + h.len - b->len;
    if (max) {
        if (b->len >= max)
            return -EMSGSIZE;
        need = max - b->len;
    }
    if (rbuf_reserve(b, need) < 0)
        return -ENOMEM;
    *p = b->p + b->off + b->len;
    *room = max ? need : b->cap - b->off - b->len;
    return 0;
}

void relay_edge_bytes(struct relay *r, long res)
{
    if (res > 0) {
        r->in.len += (size_t)res;
        relay_frames(r);
    } else if (res == 0 && r->in.len && r->resumable && !r->done) {
        /* An edge killed while it sent a frame: lost like any other; the partial frame goes
         * (the new edge sends what we lack again). */
        r->in.len = 0;
        r->in.off = 0;
        relay_edge_gone(r, "closed mid-frame");
    } else if (res == 0 && r->in.len) {
        relay_fail(r, WIRE_ERR_PROTO, "bad frame: connection closed mid-frame (%zu bytes)",
                   r->in.len);
        r->edge_lost = true;
    } else if (res == 0) {
        relay_edge_gone(r, "closed without CLOSE");
    } else {
        relay_edge_gone(r, strerror((int)-res));
    }
}

void relay_plain_room(struct relay *r, uint8_t **p, size_t *room)
{
    if (r->framing <= FRAMING_RAW) {
        *p = r->chunk + WIRE_DATA_HDR_LEN;
        *room = r->max_msg;
        return;
    }
    /* plain_frames() left a partial frame at the start, shorter than a whole one: read no
     * more than makes a whole one, so a frame over the limit is found the same way
     * whatever the reads. */
    *p = r->pin.p + r->pin.len;
    *room = framing_frame_max(r->framing, r->max_msg) - r->pin.len;
}

/* One message (len bytes at r->chunk + WIRE_DATA_HDR_LEN) becomes the next DATA frame. */
static void plain_message(struct relay *r, size_t len)
{
    wire_put_data_hdr(r->chunk, ++r->seq, len);
    if (keep_put_data(&r->keep, r->chunk, WIRE_DATA_HDR_LEN + len) < 0) {
        relay_fail(r, WIRE_ERR_SESSION, "proxy out of memory for kept messages");
        return;
    }
    relay_to_edge(r, r->chunk, WIRE_DATA_HDR_LEN + len);
}

/* Every whole frame in r->pin becomes a message; the partial one moves to the start. A
 * frame over the limit or malformed ends the session (the plain peer is not read again). */
static void plain_frames(struct relay *r)
{
    struct rbuf *b = &r->pin;
    size_t skip, len;
    char err[200];

    while (!r->done) {
        int rc = framing_cut(r->framing, b->p + b->off, b->len, r->max_msg, &r->pin_scan,
                             &skip, &len, err, sizeof(err));
        if (rc == 0)
            break;
        if (rc < 0) {
            relay_fail(r, rc == -EMSGSIZE ? WIRE_ERR_TOO_BIG : WIRE_ERR_PROTO,
                       "framing %s: the %s sent %s", framing_name(r->framing),
                       r->side ? "server" : "client", err);
            r->plain_eof = true;
            return;
        }
        memcpy(r->chunk + WIRE_DATA_HDR_LEN, b->p + b->off + skip, len);
        plain_message(r, len);
        b->off += skip + len;
        b->len -= skip + len;
    }
    if (b->off && b->len)
        memmove(b->p, b->p + b->off, b->len);
    b->off = 0;
}

/* The plain peer ended its stream: a last line without its "\n" is still a message; a
 * partial frame of any other framing cannot be one. */
static void plain_tail(struct relay *r)
{
    if (r->framing <= FRAMING_RAW || r->pin.len == 0 || r->done)
        return;
    if (r->framing == FRAMING_LINE) {
        memcpy(r->chunk + WIRE_DATA_HDR_LEN, r->pin.p, r->pin.len);
        plain_message(r, r->pin.len);
    } else {
        LOG(LOG_WARN, "session=%llu msg=\"the %s closed in the middle of a frame\" framing=%s "
            "dropped_bytes=%zu", (unsigned long long)r->session_id, r->side ? "server" : "client",
            framing_name(r->framing), r->pin.len);
    }
    r->pin.len = 0;
}

void relay_plain_chunk(struct relay *r, long res)
{
    if (res > 0 && r->framing > FRAMING_RAW) {
        r->pin.len += (size_t)res;
        plain_frames(r);
    } else if (res > 0) {
        plain_message(r, (size_t)res);
    } else if (res == 0) {
        plain_tail(r);
        r->plain_eof = true;
        relay_send_close(r);
        if (r->close_wait_ms >= 0)
            r->deadline = relay_now_ms() + r->close_wait_ms;
    } else {
        relay_plain_gone(r);
    }
}

const char *relay_error_text(const struct wire_frame *f, char *buf, size_t len)
{
    log_escape(buf, len, (const char *)f->u.error.text, f->u.error.text_len);
    return buf;
}
