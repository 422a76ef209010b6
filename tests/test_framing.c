/* test_framing.c - endpoint/framing.c: where each framing cuts a byte stream. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../endpoint/framing.h"

/* Cut s (n bytes) with framing f and limit max: the return, *skip and *len. */
static int cut(int f, const char *s, size_t n, size_t max, size_t *skip, size_t *len, char *err)
{
    size_t scan = 0;
    return framing_cut(f, (const uint8_t *)s, n, max, &scan, skip, len, err, 200);
}

/* s is exactly one whole frame: every shorter prefix needs more bytes, and s with more
 * bytes after it still cuts at the same place. */
static void whole(int f, const char *s, size_t n, size_t skip_want)
{
    char buf[4096], err[200] = "";
    size_t skip, len;

    for (size_t i = 0; i < n; i++)
        cr_assert_eq(cut(f, s, i, 1024, &skip, &len, err), 0, "prefix %zu of %.*s: %s", i,
                     (int)n, s, err);
    memcpy(buf, s, n);
    memcpy(buf + n, "+NEXT\r\n", 7);
    cr_assert_eq(cut(f, buf, n + 7, 1024, &skip, &len, err), 1, "%.*s: %s", (int)n, s, err);
    cr_assert_eq(skip, skip_want);
    cr_assert_eq(skip + len, n, "%.*s cut at %zu", (int)n, s, skip + len);
}

#define WHOLE(f, lit) whole((f), (lit), sizeof(lit) - 1, 0)

Test(framing_unit, names)
{
    cr_assert_eq(framing_parse("raw"), FRAMING_RAW);
    cr_assert_eq(framing_parse("line"), FRAMING_LINE);
    cr_assert_eq(framing_parse("u32be"), FRAMING_U32BE);
    cr_assert_eq(framing_parse("resp"), FRAMING_RESP);
    cr_assert_eq(framing_parse("json"), -1);
    cr_assert_eq(framing_parse("unset"), -1);
    cr_assert_str_eq(framing_name(FRAMING_U32BE), "u32be");
    cr_assert_str_eq(framing_name(0), "unset");
    cr_assert_str_eq(framing_name(9), "unknown");
}

Test(framing_unit, lines_include_their_newline)
{
    WHOLE(FRAMING_LINE, "hello\n");
    WHOLE(FRAMING_LINE, "hello\r\n");
    WHOLE(FRAMING_LINE, "\n");
    WHOLE(FRAMING_LINE, "bytes \r inside\n");
}

Test(framing_unit, line_search_resumes_where_it_stopped)
{
    const char *s = "abcdefgh\n";
    size_t scan = 0, skip, len;
    char err[200];

    for (size_t i = 1; i < 9; i++) {
        cr_assert_eq(framing_cut(FRAMING_LINE, (const uint8_t *)s, i, 100, &scan, &skip, &len,
                                 err, sizeof(err)), 0);
        cr_assert_eq(scan, i);
    }
    cr_assert_eq(framing_cut(FRAMING_LINE, (const uint8_t *)s, 9, 100, &scan, &skip, &len, err,
                             sizeof(err)), 1);
    cr_assert_eq(len, 9);
    cr_assert_eq(scan, 0, "reset for the next frame");
}

Test(framing_unit, line_limits)
{
    char err[200] = "";
    size_t skip, len;

    cr_assert_eq(cut(FRAMING_LINE, "12345\n", 6, 6, &skip, &len, err), 1);
    cr_assert_eq(cut(FRAMING_LINE, "123456\n", 7, 6, &skip, &len, err), -EMSGSIZE);
    cr_assert(strstr(err, "a line message of 7 bytes, over the message limit of 6"), "%s", err);
    cr_assert_eq(cut(FRAMING_LINE, "123456", 6, 6, &skip, &len, err), -EMSGSIZE);
    cr_assert(strstr(err, "no whole line message within the message limit of 6 bytes"), "%s", err);
    cr_assert_eq(cut(FRAMING_LINE, "12345", 5, 6, &skip, &len, err), 0);
}

Test(framing_unit, u32be_strips_its_prefix)
{
    char err[200] = "";
    size_t skip, len;

    whole(FRAMING_U32BE, "\0\0\0\3abc", 7, 4);
    whole(FRAMING_U32BE, "\0\0\0\0", 4, 4);   /* an empty message */
    cr_assert_eq(cut(FRAMING_U32BE, "\0\0\4\1", 4, 1024, &skip, &len, err), -EMSGSIZE);
    cr_assert(strstr(err, "a length prefix of 1025, over the message limit of 1024"), "%s", err);
    cr_assert_eq(cut(FRAMING_U32BE, "\0\0\4\0", 4, 1024, &skip, &len, err), 0, "1024 fits");
}

Test(framing_unit, resp_values)
{
    WHOLE(FRAMING_RESP, "+OK\r\n");
    WHOLE(FRAMING_RESP, "-ERR wrong\r\n");
    WHOLE(FRAMING_RESP, ":-42\r\n");
    WHOLE(FRAMING_RESP, "$5\r\nhe\r\no\r\n");   /* bulk strings are binary */
    WHOLE(FRAMING_RESP, "$0\r\n\r\n");
    WHOLE(FRAMING_RESP, "$-1\r\n");
    WHOLE(FRAMING_RESP, "*-1\r\n");
    WHOLE(FRAMING_RESP, "*0\r\n");
    WHOLE(FRAMING_RESP, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    WHOLE(FRAMING_RESP, "*3\r\n:1\r\n*2\r\n+a\r\n*1\r\n$-1\r\n-E\r\n");
    WHOLE(FRAMING_RESP, "%2\r\n+a\r\n:1\r\n$1\r\nb\r\n_\r\n");    /* RESP3 */
    WHOLE(FRAMING_RESP, "~2\r\n,3.5\r\n#t\r\n");
    WHOLE(FRAMING_RESP, ">2\r\n=7\r\ntxt:abc\r\n(12345678901234567890\r\n");
    WHOLE(FRAMING_RESP, "!3\r\nERR\r\n");
    WHOLE(FRAMING_RESP, "|1\r\n+key\r\n+val\r\n*1\r\n:7\r\n");   /* attribute + value */
    WHOLE(FRAMING_RESP, "PING\r\n");          /* inline commands */
    WHOLE(FRAMING_RESP, "SET k v\n");
}

Test(framing_unit, resp_malformed)
{
    static const char *bad[] = {
        "$abc\r\n", "*x\r\n", "$-2\r\n", "*-5\r\n", "$\r\n", "+OK\n", "$3\r\nabcXY",
        "*1\r\n:1\n", "$123456789012345678901234567890", "*1\r\nPING\r\n",
    };
    char err[200];
    size_t skip, len;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = 0;
        cr_assert_eq(cut(FRAMING_RESP, bad[i], strlen(bad[i]), 1024, &skip, &len, err), -EPROTO,
                     "%s", bad[i]);
        cr_assert(strstr(err, "malformed RESP"), "%s: %s", bad[i], err);
    }
}

Test(framing_unit, resp_limits)
{
    char buf[512], err[200] = "";
    size_t skip, len, n = 0;

    cr_assert_eq(cut(FRAMING_RESP, "$2000\r\n", 7, 1024, &skip, &len, err), -EMSGSIZE);
    cr_assert(strstr(err, "bulk string of 2000 bytes"), "%s", err);
    cr_assert_eq(cut(FRAMING_RESP, "*400\r\n", 6, 1024, &skip, &len, err), -EMSGSIZE);
    cr_assert(strstr(err, "aggregate of 400 elements"), "%s", err);
    for (int i = 0; i <= FRAMING_RESP_DEPTH; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "*1\r\n");
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, ":1\r\n");
    cr_assert_eq(cut(FRAMING_RESP, buf, n, 1024, &skip, &len, err), -EPROTO);
    cr_assert(strstr(err, "nested deeper than 32"), "%s", err);
    cr_assert_eq(cut(FRAMING_RESP, buf + 4, n - 4, 1024, &skip, &len, err), 1, "32 deep is fine");
    cr_assert_eq(cut(FRAMING_RESP, "+0123456789\r\n", 13, 12, &skip, &len, err), -EMSGSIZE);
}
