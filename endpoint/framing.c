/* framing.c - see framing.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "framing.h"

static const char *const names[] = { "unset", "raw", "line", "u32be", "resp" };

int framing_parse(const char *name)
{
    for (int f = FRAMING_RAW; f <= FRAMING_MAX; f++)
        if (strcmp(name, names[f]) == 0)
            return f;
    return -1;
}

const char *framing_name(int f)
{
    return f >= 0 && f <= FRAMING_MAX ? names[f] : "unknown";
}

size_t framing_frame_max(int f, size_t max)
{
    return f == FRAMING_U32BE ? max + 4 : max;
}

/* ---- RESP (RESP2, and the RESP3 types a client gets after HELLO 3) ---- */

#define RESP_LEN_LINE 24   /* a type byte, a 64-bit number, "\r\n" fit in this */
#define RESP_LINES  "+-:_,#("   /* a line: simple string, error, integer, null, double, ... */
#define RESP_BULKS  "$!="       /* a length, then bytes: bulk string, blob error, verbatim */
#define RESP_AGGR   "*~>"       /* n values: array, set, push */
#define RESP_PAIRS  "%|"        /* 2n values: map, attribute (a value follows it) */
#define RESP_TYPES  RESP_LINES RESP_BULKS RESP_AGGR RESP_PAIRS

static int is_type(uint8_t c)
{
    return c && strchr(RESP_TYPES, c) != NULL;
}

/* The end (after "\n") of the line starting at pos; 0 when it is not complete; -EPROTO
 * when it ends in a "\n" without "\r". */
static long resp_line(const uint8_t *p, size_t len, size_t pos, char *err, size_t errlen)
{
    const uint8_t *nl = memchr(p + pos, '\n', len - pos);

    if (!nl)
        return 0;
    if (nl == p + pos || nl[-1] != '\r') {
        snprintf(err, errlen, "malformed RESP: a line ends in \\n without \\r");
        return -EPROTO;
    }
    return nl + 1 - p;
}

/* The decimal number of a length line (between the type byte and "\r\n"). */
static int resp_num(const uint8_t *s, size_t n, long long *v)
{
    size_t i = s[0] == '-';

    if (n == i || n - i > 18)
        return -1;
    *v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        *v = *v * 10 + (s[i] - '0');
    }
    if (s[0] == '-')
        *v = -*v;
    return 0;
}

/* The end of the RESP value at p[pos]: > pos, 0 when incomplete, -EPROTO or -EMSGSIZE. */
static long resp_value(const uint8_t *p, size_t len, size_t pos, size_t max, int depth,
                       char *err, size_t errlen)
{
    if (pos >= len)
        return 0;
    uint8_t type = p[pos];
    if (!is_type(type)) {
        snprintf(err, errlen, "malformed RESP: type byte 0x%02x in an aggregate", type);
        return -EPROTO;
    }
    long end = resp_line(p, len, pos, err, errlen);
    long long n;

    if (strchr(RESP_LINES, type) || end < 0)
        return end;
    if (end == 0 && len - pos <= RESP_LEN_LINE)
        return 0;
    if (end == 0 || resp_num(p + pos + 1, (size_t)end - 2 - pos - 1, &n) < 0 || n < -1) {
        snprintf(err, errlen, "malformed RESP: bad %c length '%.*s'", type,
                 end ? (int)((size_t)end - 2 - pos - 1) : RESP_LEN_LINE,
                 (const char *)p + pos + 1);
        return -EPROTO;
    }
    if (n == -1)
        return end;   /* a RESP2 null bulk string or array */
    if (strchr(RESP_BULKS, type)) {
        if ((unsigned long long)n > max) {
            snprintf(err, errlen, "a RESP bulk string of %lld bytes, over the message "
                     "limit of %zu", n, max);
            return -EMSGSIZE;
        }
        size_t need = (size_t)end + (size_t)n + 2;
        if (len < need)
            return 0;
        if (p[need - 2] != '\r' || p[need - 1] != '\n') {
            snprintf(err, errlen, "malformed RESP: a bulk string of %lld bytes is not "
                     "followed by \\r\\n", n);
            return -EPROTO;
        }
        return (long)need;
    }
    if (depth >= FRAMING_RESP_DEPTH) {
        snprintf(err, errlen, "malformed RESP: aggregates nested deeper than %d",
                 FRAMING_RESP_DEPTH);
        return -EPROTO;
    }
    if (strchr(RESP_PAIRS, type))
        n *= 2;
    if ((unsigned long long)n > max / 3) {   /* each element takes 3 bytes at least */
        snprintf(err, errlen, "a RESP aggregate of %lld elements, over the message limit "
                 "of %zu", n, max);
        return -EMSGSIZE;
    }
    for (long long i = 0; i < n && end > 0; i++)
        end = resp_value(p, len, (size_t)end, max, depth + 1, err, errlen);
    if (type == '|' && end > 0)   /* attributes describe the value that follows */
        end = resp_value(p, len, (size_t)end, max, depth, err, errlen);
    return end;
}

/* ---- cutting ---- */

int framing_cut(int f, const uint8_t *p, size_t len, size_t max, size_t *scan,
                size_t *skip, size_t *msg_len, char *err, size_t errlen)
{
    long end = 0;

    *skip = 0;
    if (f == FRAMING_U32BE) {
        if (len < 4)
            return 0;
        uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (n > max) {
            snprintf(err, errlen, "a length prefix of %u, over the message limit of %zu", n, max);
            return -EMSGSIZE;
        }
        if (len - 4 < n)
            return 0;
        *skip = 4;
        *msg_len = n;
        return 1;
    }
    if (f == FRAMING_LINE || (f == FRAMING_RESP && len && !is_type(p[0]))) {
        /* A line, or RESP's inline command: up to the first "\n". */
        const uint8_t *nl = memchr(p + *scan, '\n', len - *scan);
        if (nl)
            end = nl + 1 - p;
        else
            *scan = len;
    } else if (f == FRAMING_RESP) {
        end = resp_value(p, len, 0, max, 0, err, errlen);
        if (end < 0)
            return (int)end;
    } else {
        snprintf(err, errlen, "framing %s cannot cut messages", framing_name(f));
        return -EPROTO;
    }
    if (end > 0 && (size_t)end > max) {
        snprintf(err, errlen, "a %s message of %ld bytes, over the message limit of %zu",
                 framing_name(f), end, max);
        return -EMSGSIZE;
    }
    if (end == 0 && len >= max) {
        snprintf(err, errlen, "no whole %s message within the message limit of %zu bytes",
                 framing_name(f), max);
        return -EMSGSIZE;
    }
    if (end == 0)
        return 0;
    *scan = 0;
    *msg_len = (size_t)end;
    return 1;
}
