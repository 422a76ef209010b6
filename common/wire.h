/* wire.h - the CESSNA wire protocol between endpoints and an edge.
 *
 * Every frame: a 12-byte little-endian header, then `len` bytes of body.
 *
 *   offset 0  u16 magic   0xC55A
 *          2  u8  version WIRE_VERSION
 *          3  u8  type    enum wire_type
 *          4  u16 flags   0 for now
 *          6  u16 reserved, 0
 *          8  u32 len     body length
 *
 * Bodies (all integers little-endian):
 *   HELLO         u8 role, u8 pad[7], u64 session_id, u8 token[16]
 *                 client endpoint -> edge: role CLIENT, id 0 (new session)
 *                 edge -> server endpoint: role EDGE, the session's id and token
 *   WELCOME       u64 session_id, u8 token[16]      (answer to HELLO)
 *   RESUME        u64 session_id, u8 token[16], u64 last_out_received   (issue 4)
 *   RESUME_INFO   u64 last_out_received                                 (issue 4)
 *   DATA          u64 seq, payload                   endpoint -> edge, seq 1, 2, 3, ...
 *   OUT           u64 out_no, u32 order_len, order[order_len], payload
 *                 edge -> endpoint, out_no 1, 2, 3, ... per destination; order is the
 *                 delta of the session's event order (order.h) since the previous OUT
 *   SNAP_DURABLE  u64 position
 *   SNAP_PUT      u64 position, snapshot bytes                          (issue 3/4)
 *   SNAP_ACK      u64 position
 *   CLOSE         empty: the session ends
 *   ERROR         u32 code, text (not NUL-terminated); the sender closes after it
 *   ORDER         order bytes only: a long order delta goes ahead of its OUT in pieces of
 *                 whole entries, so no frame grows past the limit (decoded into u.out,
 *                 with out_no 0 and no payload)
 */
#ifndef CESSNA_WIRE_H
#define CESSNA_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_MAGIC    0xC55Au
#define WIRE_VERSION  1u
#define WIRE_HDR_LEN  12u
#define WIRE_TOKEN_LEN 16u

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
    WIRE_TYPE_MAX = WIRE_ORDER,
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
        struct { uint8_t role; uint64_t session_id; uint8_t token[WIRE_TOKEN_LEN]; } hello;
        struct { uint64_t session_id; uint8_t token[WIRE_TOKEN_LEN]; } welcome;
        struct { uint64_t session_id; uint8_t token[WIRE_TOKEN_LEN]; uint64_t last_out; } resume;
        struct { uint64_t last_out; } resume_info;
        struct { uint64_t seq; const uint8_t *payload; size_t len; } data;
        struct {
            uint64_t out_no;
            const uint8_t *order; uint32_t order_len;
            const uint8_t *payload; size_t len;
        } out;
        struct { uint64_t position; const uint8_t *bytes; size_t len; } snap;
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
size_t wire_put_hello(void *buf, uint8_t role, uint64_t session_id, const uint8_t *token);
size_t wire_put_welcome(void *buf, uint64_t session_id, const uint8_t *token);
size_t wire_put_data_hdr(void *buf, uint64_t seq, size_t payload_len);      /* 20 bytes */
size_t wire_put_out_hdr(void *buf, uint64_t out_no, const void *order, uint32_t order_len,
                        size_t payload_len);                               /* 24 + order_len */
size_t wire_put_close(void *buf);
size_t wire_put_u64(void *buf, uint8_t type, uint64_t v);   /* SNAP_DURABLE, SNAP_ACK, RESUME_INFO */
/* ERROR with a printf-style text, truncated to fit cap bytes in all. */
size_t wire_put_error(void *buf, size_t cap, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define WIRE_DATA_HDR_LEN (WIRE_HDR_LEN + 8u)
#define WIRE_OUT_HDR_LEN  (WIRE_HDR_LEN + 12u)
#define WIRE_ERROR_MAX    512u
#define WIRE_ORDER_PIECE  2048u   /* order bytes an OUT or ORDER frame carries at most */

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
