/* relay.h - one session's relay state, shared by cessna-client-proxy and
 * cessna-server-proxy: a plain TCP peer on one side, an edge (CESSNA frames) on the other.
 *
 * This module does no I/O. The event loop (ploop.c) reads into the buffers here and calls
 * relay_edge_bytes() / relay_plain_chunk(); it sends what the two output queues hold. What is
 * read from the plain peer is cut into messages by the session's framing (framing.h; raw:
 * every chunk read), each one DATA frame; every new OUT payload (by output number:
 * duplicates are dropped) goes to the plain peer (u32be: after its length prefix). A side is not read while the queue
 * toward the other side holds RELAY_LIMIT bytes or more, so neither direction ever waits on
 * the other and memory stays bounded. */
#ifndef CESSNA_RELAY_H
#define CESSNA_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "keep.h"
#include "wire.h"

#define RELAY_LIMIT      (4u << 20)  /* stop reading a side past this much pending output */
#define RELAY_IN_MIN     (64u << 10) /* initial edge input buffer, and least read size */
#define RELAY_DRAIN_MS   5000        /* flushing what is left once the session ended: the
                                      * longest wait for the program to read more */
#define HANDSHAKE_MS     10000       /* default: connect + HELLO/WELCOME, per attempt */
#define CLOSE_WAIT_MS    5000        /* default wait for the edge's CLOSE after the plain EOF */
#define MAX_MESSAGE_MAX  (1u << 30)
#define HANDSHAKE_FRAME_MAX 1024u    /* HELLO, WELCOME, RESUME, ERROR are small */

/* A growable byte buffer; pending bytes are p[off, off + len). */
struct rbuf {
    uint8_t *p;
    size_t cap, off, len;
};

/* An output queue: bytes are appended to pend while send is in flight (its memory must not
 * move); when send is done the two swap. */
struct outq {
    struct rbuf pend, send;
    size_t sent;            /* bytes of send already written */
};

struct relay {
    uint64_t session_id;
    size_t max_msg, max_body;
    struct rbuf in;         /* read from the edge, not yet handled */
    uint8_t *chunk;         /* raw: plain reads land at chunk + WIRE_DATA_HDR_LEN */
    int framing;            /* of the plain side, FRAMING_* (framing.h); 0 or RAW: none */
    struct rbuf pin;        /* framed: plain bytes read, not yet a whole message */
    size_t pin_scan;        /* framed: how far the partial frame was searched */
    struct outq to_edge;    /* whole DATA, CLOSE and ERROR frames */
    struct outq to_plain;   /* OUT payloads */
    uint64_t seq;           /* last DATA sent */
    uint64_t last_out;      /* last OUT received */
    struct keep keep;       /* what a new edge needs (keep.h) */
    int side;               /* 0: a client endpoint, 1: a server endpoint (SNAP_DURABLE seq[]) */
    int64_t last_edge_ms;   /* when the edge's last bytes arrived (heartbeat) */
    /* Server endpoint: a SNAP_PUT piece arrived (NULL: the frame is unexpected). */
    void (*snap_put)(struct relay *r, const struct wire_frame *f);
    void *owner;            /* the session holding this relay */
    int close_wait_ms;      /* for the edge's CLOSE after the plain peer's EOF; -1: for ever */
    int64_t deadline;       /* 0, or when to give up (monotonic ms) */
    bool plain_eof;         /* nothing more to read from the plain peer */
    bool plain_dead;        /* nor to write to it */
    bool edge_dead;         /* nothing more to read from or write to the edge */
    bool edge_lost;         /* the edge went away without CLOSE or ERROR: reset the plain peer */
    bool moved;             /* the edge sent MOVE: it is fine, it asked us to go elsewhere */
    bool close_sent;
    bool done;              /* the session ended: only flushing is left */
    bool resumable;         /* an edge lost without CLOSE detaches the session, not ends it */
    bool detached;          /* no edge: waiting for a RESUME (server) or making one (client) */
};

extern size_t relay_keep_max;   /* --keep-max-bytes */

int64_t relay_now_ms(void);

/* 0, or -ENOMEM. */
int  relay_init(struct relay *r, size_t max_msg);
void relay_free(struct relay *r);

size_t outq_len(const struct outq *q);
/* Append; the queue grows as needed. 0 or -ENOMEM. */
int  outq_put(struct outq *q, const void *data, size_t len);
/* Make the pending bytes the ones to send, if nothing is being sent. The bytes to send next
 * (*p, *len), or 0 bytes. */
void outq_next(struct outq *q, const uint8_t **p, size_t *len);
/* n bytes of the last outq_next() were written. */
void outq_sent(struct outq *q, size_t n);
void outq_clear(struct outq *q);

/* Room at the end of r->in for the next read from the edge: grown to hold the frame being
 * read (at most max bytes in all when max != 0). 0 with (*p, *room), or -ENOMEM/-EMSGSIZE. */
int  relay_in_room(struct relay *r, size_t max, uint8_t **p, size_t *room);

/* A read from the edge completed with res (bytes appended to r->in, 0 at end of stream, or
 * -errno). Handles the frames while the plain side has room. */
void relay_edge_bytes(struct relay *r, long res);
/* Handle the frames buffered from the edge while the plain side has room for them. */
void relay_frames(struct relay *r);
/* Cut what the plain peer sends by framing (FRAMING_RAW..FRAMING_MAX). 0 or -ENOMEM. */
int  relay_set_framing(struct relay *r, int framing);
/* Where the next read from the plain peer goes, and how much it may read (> 0). */
void relay_plain_room(struct relay *r, uint8_t **p, size_t *room);
/* A read from the plain peer into relay_plain_room() completed with res. */
void relay_plain_chunk(struct relay *r, long res);

/* Queue a whole frame to the edge (dropped when the edge is gone). */
void relay_to_edge(struct relay *r, const void *frame, size_t len);
/* Queue what a new edge needs after RESUME or RESUME_INFO: ORDER frames of the kept order,
 * then the kept DATA frames with seq > after_seq. Straight into to_edge, even while the
 * session is detached. 0 or -ENOMEM. */
int  relay_put_kept(struct relay *r, bool order, uint64_t after_seq);

/* The edge sent something wrong: queue ERROR to it and end the session. */
void relay_fail(struct relay *r, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The edge connection failed (no CLOSE): a resumable session detaches, any other ends and
 * its plain peer will be reset. */
void relay_edge_gone(struct relay *r, const char *why);
/* The plain connection failed: tell the edge CLOSE and wait a while for its answer. */
void relay_plain_gone(struct relay *r);

/* An ERROR frame's text, escaped for a quoted log value (it may quote a peer's bytes). */
const char *relay_error_text(const struct wire_frame *f, char *buf, size_t len);

#endif
