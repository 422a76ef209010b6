/* framing.h - cutting a plain TCP byte stream into the messages an app sees (--framing).
 *
 *   raw    every read is one message: no framing (the default)
 *   line   a message ends with "\n", which is part of it (so is the "\r" of a "\r\n")
 *   u32be  a 4-byte big-endian length, then that many bytes; the message is the payload
 *          alone, and every message toward the plain peer gets the prefix added
 *   resp   one whole Redis protocol value: RESP2 (+ - : lines, $ bulk strings, * arrays,
 *          nested) and the RESP3 types a client gets after HELLO 3 (_ , # ( lines, ! = bulk,
 *          ~ > % | aggregates), or an inline command (a line that starts with none of those)
 *
 * The proxies hold a partial frame until its last byte arrives; a frame over the message
 * limit, or a malformed one, is an error for its session. Pure functions: no I/O. */
#ifndef CESSNA_FRAMING_H
#define CESSNA_FRAMING_H

#include <stddef.h>
#include <stdint.h>

/* On the wire (HELLO byte 1): 0 is "not said" (a native endpoint, an older proxy). */
enum framing {
    FRAMING_UNSET = 0,
    FRAMING_RAW,
    FRAMING_LINE,
    FRAMING_U32BE,
    FRAMING_RESP,
    FRAMING_MAX = FRAMING_RESP,
};

#define FRAMING_RESP_DEPTH 32   /* RESP aggregates nested deeper are refused */

/* FRAMING_RAW.. from a name, or -1. */
int         framing_parse(const char *name);
/* "raw", "line", ...; "unset" for 0, "unknown" for anything else. */
const char *framing_name(int f);

/* The most bytes one whole frame takes on the plain connection (a message of max bytes,
 * plus a u32be prefix). */
size_t      framing_frame_max(int f, size_t max);

/* The first whole frame of p[0, len) (f is not raw): 1 with *skip (bytes before the
 * message: the u32be prefix) and *msg_len, the frame being *skip + *msg_len bytes; 0 when
 * more bytes are needed; -EMSGSIZE when the message is over max bytes, or -EPROTO when it is
 * malformed, with the reason in err. *scan (0 for a new frame) remembers how far a line was
 * searched, so bytes arriving one by one are not searched again. */
int         framing_cut(int f, const uint8_t *p, size_t len, size_t max, size_t *scan,
                        size_t *skip, size_t *msg_len, char *err, size_t errlen);

#endif
