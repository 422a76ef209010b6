/* wire.h - the CESSNA wire protocol between endpoints and an edge.
 *
 * Every frame: a 12-byte little-endian header, then `len` bytes of body.
 *
 *   offset 0  u16 magic   0xC55A
 *          2  u8  version WIRE_VERSION
 *          3  u8  type    enum wire_type
 *          4  u16 flags   WIRE_F_* (0 unless said)
 *          6  u16 reserved, 0
 *          8  u32 len     body length
 *
 * Bodies (all integers little-endian). Version 2 adds remote recovery (docs/protocol.md):
 *   HELLO         u8 role, u8 pad[7], u64 session_id, u8 token[16]                (32 bytes)
 *                 client endpoint -> edge: role CLIENT, id 0, token 0 (a new session)
 *                 edge -> server endpoint: role EDGE, the session's id, token 0, then
 *                 u64 epoch, u8 verifier[32] (BLAKE2b of the client's credential: the
 *                 server endpoint can check a RESUME but cannot resume as the client),
 *                 u16 secret_len, secret[secret_len] (the edge secret; 0 when none)
 *   WELCOME       u64 session_id, u8 token[16], u64 epoch                         (40 bytes)
 *                 edge -> client: the client's credential and the epoch now live
 *                 server endpoint -> edge: token 0, the epoch it accepted
 *   RESUME        u64 session_id, u8 token[16] (the client's credential), u64 epoch,
 *                 u64 last_out, u64 next_seq, u64 order_base, u16 secret_len, secret
 *                 client -> edge: the epoch it knows, the last OUT it received, the seq its
 *                 next new DATA will carry, the position of its first order entry; secret 0.
 *                 Then ORDER frames (its order from order_base on), DATA frames (every
 *                 message it keeps, ascending seq), RESUME_END.
 *                 edge -> server endpoint: the epoch it proposes, last_out/next_seq/
 *                 order_base 0, the edge secret.
 *   RESUME_INFO   u64 epoch, u64 last_out, u64 next_seq, u64 order_base          (32 bytes)
 *                 server endpoint -> edge, answering RESUME: the epoch granted (greater
 *                 than any before), then SNAP_PUT frames of the stored chain (full first),
 *                 ORDER frames, DATA frames of the messages it keeps, RESUME_END.
 *   RESUME_END    empty: the end of a RESUME's or RESUME_INFO's material
 *   DATA          u64 seq, payload                   endpoint -> edge, seq 1, 2, 3, ...
 *   OUT           u64 out_no, u32 order_len, order[order_len], payload
 *                 edge -> endpoint, out_no 1, 2, 3, ... per destination; order is the
 *                 delta of the session's event order (order.h) since the previous OUT
 *   ORDER         order bytes only: a long order delta goes ahead of its OUT in pieces of
 *                 whole entries, so no frame grows past the limit (decoded into u.out,
 *                 with out_no 0 and no payload)
 *   SNAP_PUT      u64 position, u64 base (0: full; else the snapshot it is a delta of),
 *                 u64 total (file bytes), u64 offset, bytes: one piece of a snapshot file
 *                 (at most WIRE_SNAP_PIECE bytes), edge -> server endpoint, and server
 *                 endpoint -> edge after RESUME_INFO
 *   SNAP_ACK      u64 position: the server endpoint stored the file durably
 *   SNAP_DURABLE  u64 position, u64 seq_client, u64 seq_server: the snapshot at position
 *                 is stored off the node; an endpoint frees its messages up to its seq and
 *                 its order up to position
 *   HEARTBEAT     empty, edge -> endpoint when the connection was quiet for a while
 *   MOVE          empty, edge -> client endpoint: this edge is leaving; resume at another
 *   RECEIPT       u64 position: edge -> client endpoint asks, and the client endpoint answers
 *                 with the same frame, once it has handled every frame before it (so it has
 *                 every output of the events up to position) -- before a snapshot at that
 *                 position is shipped
 *   CLOSE         empty: the session ends
 *   ERROR         u32 code, text (not NUL-terminated); the sender closes after it
 */
#ifndef CESSNA_WIRE_H
#define CESSNA_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_MAGIC    0xC55Au
#define WIRE_VERSION  3u   /* 2: remote recovery (RESUME, SNAP_PUT, epochs); 3: the START
                            * order entry carries the [app] hash, ERROR APP */
#define WIRE_HDR_LEN  12u
#define WIRE_TOKEN_LEN 16u
#define WIRE_VERIFIER_LEN 32u
#define WIRE_SECRET_MAX 256u

/* Header flags. WELCOME from a server endpoint: it stores shipped snapshots (SNAP_PUT) and
 * answers RESUME; without it the edge ships nothing and the session cannot move. */
#define WIRE_F_STORES 1u
/* HELLO or RESUME from a client endpoint: its list has other edges to resume at, so a
 * draining edge moves the session (MOVE) instead of closing it (CLOSE). */
#define WIRE_F_ROAMS  2u

/* Bodies beyond max payload + this much are refused before they are read. */
#define WIRE_MAX_OVERHEAD 4096u

enum wire_type {
    WIRE_HELLO = 1,
    WIRE_WELCOME,
    WIRE_RESUME,
    WIRE_RESUME_INFO,
    WIRE_DATA,
    WIRE_OUT,
    WIRE_SNAP_DURABLE,
    WIRE_SNAP_PUT,
    WIRE_SNAP_ACK,
    WIRE_CLOSE,
    WIRE_ERROR,
    WIRE_ORDER,
    WIRE_RESUME_END,
    WIRE_HEARTBEAT,
    WIRE_MOVE,
    WIRE_RECEIPT,
    WIRE_TYPE_MAX = WIRE_RECEIPT,
};

enum wire_role { WIRE_ROLE_CLIENT = 1, WIRE_ROLE_EDGE = 2 };

/* ERROR codes. */
enum wire_err {
    WIRE_ERR_PROTO = 1,      /* malformed frame */
    WIRE_ERR_TOO_BIG = 2,    /* frame or message over the limit */
    WIRE_ERR_UNEXPECTED = 3, /* valid frame at the wrong moment */
    WIRE_ERR_SESSION = 4,    /* session failed (worker died, app init failed, ...) */
    WIRE_ERR_UNAVAILABLE = 5,/* server endpoint unreachable, edge full, ... */
    WIRE_ERR_AUTH = 6,       /* bad session id or token */
    WIRE_ERR_UNSUPPORTED = 7,/* frame type this build does not implement yet */
    WIRE_ERR_FENCED = 8,     /* a newer epoch's edge holds the session */
    WIRE_ERR_INCOMPATIBLE = 9,/* the snapshot's layout fingerprint differs from this edge's */
    WIRE_ERR_APP = 10,       /* the app ended the session (cessna_close_session with a code
                              * other than 0): the text is "app error CODE: TEXT" */
};

struct wire_hdr {
    uint8_t  type;
    uint16_t flags;
    uint32_t len;
};

/* A decoded frame. Pointers point into the buffer that was decoded. */
struct wire_frame {
    uint8_t  type;
    uint16_t flags;
    union {
        struct {
            uint8_t role; uint64_t session_id; uint8_t token[WIRE_TOKEN_LEN];
            uint64_t epoch;                         /* role EDGE */
            uint8_t verifier[WIRE_VERIFIER_LEN];    /* role EDGE */
            const uint8_t *secret; size_t secret_len;
        } hello;
        struct { uint64_t session_id; uint8_t token[WIRE_TOKEN_LEN]; uint64_t epoch; } welcome;
        struct {
            uint64_t session_id; uint8_t token[WIRE_TOKEN_LEN];
            uint64_t epoch, last_out, next_seq, order_base;
            const uint8_t *secret; size_t secret_len;
        } resume;
        struct { uint64_t epoch, last_out, next_seq, order_base; } resume_info;
        struct {
            uint64_t position, base, total, offset;
            const uint8_t *bytes; size_t len;
        } snap_put;
        struct { uint64_t position; uint64_t seq[2]; } durable;
        struct { uint64_t seq; const uint8_t *payload; size_t len; } data;
        struct {
            uint64_t out_no;
            const uint8_t *order; uint32_t order_len;
            const uint8_t *payload; size_t len;
        } out;
        struct { uint64_t position; } snap;   /* SNAP_ACK, RECEIPT */
        struct { uint32_t code; const char *text; size_t text_len; } error;
    } u;
};

/* Parse a header from buf (avail bytes). 0 and *h filled; -EAGAIN when fewer than
 * WIRE_HDR_LEN bytes; -EPROTO for bad magic, version or type; -EMSGSIZE when the body
 * is longer than max_body. */
int wire_parse_hdr(const void *buf, size_t avail, size_t max_body, struct wire_hdr *h);

/* Decode a whole frame whose header was parsed: body is h->len bytes. 0, or -EPROTO when
 * the body is too short or inconsistent for its type. */
int wire_decode(const struct wire_hdr *h, const void *body, struct wire_frame *f);

/* Convenience: parse and decode one frame from buf. Returns the frame's total length (> 0),
 * -EAGAIN when incomplete, or -EPROTO / -EMSGSIZE. */
long wire_next(const void *buf, size_t avail, size_t max_body, struct wire_frame *f);

/* Encoders write into buf (which must be large enough: WIRE_HDR_LEN + body) and return the
 * total frame length. For DATA and OUT, wire_put_*_hdr writes everything except the payload,
 * so a sender can writev() the header and the payload without copying. */
size_t wire_put_hdr(void *buf, uint8_t type, uint32_t body_len);
/* Set the flags of an encoded frame. */
void   wire_set_flags(void *buf, uint16_t flags);
/* A client's HELLO (role CLIENT, id 0). */
size_t wire_put_hello(void *buf, uint8_t role, uint64_t session_id, const uint8_t *token);
/* An edge's HELLO to the server endpoint (WIRE_HDR_LEN + 74 + secret_len bytes). */
size_t wire_put_hello_edge(void *buf, uint64_t session_id, uint64_t epoch,
                           const uint8_t *verifier, const void *secret, size_t secret_len);
size_t wire_put_welcome(void *buf, uint64_t session_id, const uint8_t *token, uint64_t epoch);
/* RESUME (WIRE_HDR_LEN + 58 + secret_len bytes). */
size_t wire_put_resume(void *buf, uint64_t session_id, const uint8_t *token, uint64_t epoch,
                       uint64_t last_out, uint64_t next_seq, uint64_t order_base,
                       const void *secret, size_t secret_len);
size_t wire_put_resume_info(void *buf, uint64_t epoch, uint64_t last_out, uint64_t next_seq,
                            uint64_t order_base);
/* SNAP_PUT header (WIRE_SNAP_PUT_HDR_LEN bytes); the piece's bytes follow. */
size_t wire_put_snap_put_hdr(void *buf, uint64_t position, uint64_t base, uint64_t total,
                             uint64_t offset, size_t piece_len);
size_t wire_put_snap_durable(void *buf, uint64_t position, uint64_t seq_client,
                             uint64_t seq_server);
/* An empty frame: CLOSE, RESUME_END, HEARTBEAT, MOVE. */
size_t wire_put_empty(void *buf, uint8_t type);
size_t wire_put_data_hdr(void *buf, uint64_t seq, size_t payload_len);      /* 20 bytes */
size_t wire_put_out_hdr(void *buf, uint64_t out_no, const void *order, uint32_t order_len,
                        size_t payload_len);                               /* 24 + order_len */
size_t wire_put_close(void *buf);
size_t wire_put_u64(void *buf, uint8_t type, uint64_t v);   /* SNAP_ACK, RECEIPT */
/* ERROR with a printf-style text, truncated to fit cap bytes in all. */
size_t wire_put_error(void *buf, size_t cap, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define WIRE_DATA_HDR_LEN (WIRE_HDR_LEN + 8u)
#define WIRE_OUT_HDR_LEN  (WIRE_HDR_LEN + 12u)
#define WIRE_ERROR_MAX    512u
#define WIRE_ORDER_PIECE  2048u   /* order bytes an OUT or ORDER frame carries at most */
#define WIRE_SNAP_PIECE   (32u << 10)  /* snapshot bytes a SNAP_PUT carries at most */
#define WIRE_SNAP_PUT_HDR_LEN (WIRE_HDR_LEN + 32u)
#define WIRE_RESUME_MAX   (WIRE_HDR_LEN + 58u + WIRE_SECRET_MAX)

/* The largest frame body a peer with this max_message_bytes must accept. */
static inline size_t wire_max_body(size_t max_message)
{
    return (max_message > WIRE_SNAP_PIECE ? max_message : WIRE_SNAP_PIECE) + WIRE_MAX_OVERHEAD;
}

const char *wire_type_name(uint8_t type);

/* Little-endian helpers shared by the codecs. */
static inline void wire_le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void wire_le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline void wire_le64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline uint16_t wire_get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t wire_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t wire_get64(const uint8_t *p)
{
    return (uint64_t)wire_get32(p) | ((uint64_t)wire_get32(p + 4) << 32);
}

#endif
