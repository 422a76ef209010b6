/* test_evlog.c - the ordering log file format (common/evlog.c): names, header, and the reader
 * over files written here exactly as supervisor/olog.c writes them (header, then records
 * encoded by evrec_put). */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "evlog.h"
#include "shm.h"
#include "t_helpers.h"
#include "wire.h"
#include "../supervisor/evstore.h"

TestSuite(evlog);

#define SID 4242u

/* Payload of event pos: a few bytes derived from it, length 0..50. */
static size_t t_plen(uint64_t pos) { return (size_t)(pos * 7 % 51); }

/* Encode events [from, to] into buf (NULL: just count); returns the bytes. */
static size_t t_records(uint8_t *buf, uint64_t from, uint64_t to)
{
    size_t off = 0;
    for (uint64_t pos = from; pos <= to; pos++) {
        uint8_t data[64];
        size_t len = t_plen(pos);
        for (size_t i = 0; i < len; i++)
            data[i] = (uint8_t)(pos + i);
        struct shm_rec rec = { .pos = pos, .time = 100 * pos, .a = pos, .b = ~pos };
        if (buf)
            evrec_put(buf + off, (uint16_t)(pos % 2 ? EV_CLIENT : EV_SERVER), &rec, data, len);
        off += evrec_space(len);
    }
    return off;
}

/* Write dir/events-FIRST.log holding events [first, last] (none when last < first), with
 * header fields as given; cut the file to `cut` bytes less. Returns the records' bytes. */
static size_t t_write_log(const char *dir, uint64_t sid, uint64_t first, uint64_t hdr_first,
                          uint64_t last, size_t cut)
{
    char name[64], path[512];
    uint8_t hdr[EVLOG_HDR_LEN];
    size_t len = last >= first ? t_records(NULL, first, last) : 0;
    uint8_t *buf = malloc(EVLOG_HDR_LEN + len);

    cr_assert(buf);
    evlog_header(hdr, sid, hdr_first);
    memcpy(buf, hdr, sizeof(hdr));
    if (len)
        t_records(buf + EVLOG_HDR_LEN, first, last);
    evlog_name(name, sizeof(name), first);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
    size_t total = EVLOG_HDR_LEN + len - cut;
    cr_assert_eq(write(fd, buf, total), (ssize_t)total);
    close(fd);
    free(buf);
    return len;
}

/* The reader holds events [first, last], byte for byte as encoded. */
static void t_check(const struct evlog_reader *r, uint64_t first, uint64_t last)
{
    cr_assert_eq(r->count, last - first + 1, "count %llu, want events %llu..%llu",
                 (unsigned long long)r->count, (unsigned long long)first,
                 (unsigned long long)last);
    cr_assert_eq(r->first, first);
    size_t len = t_records(NULL, first, last);
    uint8_t *want = malloc(len);
    t_records(want, first, last);
    cr_assert_eq(r->len, len);
    cr_assert(memcmp(r->buf, want, len) == 0, "records differ from what was written");
    free(want);
}

Test(evlog, name_is_zero_padded_so_names_sort_by_position)
{
    char a[64], b[64];

    evlog_name(a, sizeof(a), 1);
    cr_assert_str_eq(a, "events-00000000000000000001.log");
    evlog_name(a, sizeof(a), 9);
    evlog_name(b, sizeof(b), 10);
    cr_assert_lt(strcmp(a, b), 0);
    evlog_name(a, sizeof(a), UINT64_MAX);
    cr_assert_str_eq(a, "events-18446744073709551615.log");
}

Test(evlog, header_layout)
{
    uint8_t h[EVLOG_HDR_LEN];

    memset(h, 0xff, sizeof(h));
    evlog_header(h, 0x0102030405060708ull, 77);
    cr_assert_eq(memcmp(h, "CSNEVLOG", 8), 0);
    cr_assert_eq(wire_get32(h + 8), EVLOG_VERSION);
    cr_assert_eq(wire_get32(h + 12), 0);
    cr_assert_eq(wire_get64(h + 16), 0x0102030405060708ull);
    cr_assert_eq(wire_get64(h + 24), 77);
}

Test(evlog, round_trip_of_one_file)
{
    const char *dir = t_tmpdir();
    struct evlog_reader r;
    char err[256] = "";

    t_write_log(dir, SID, 1, 1, 40, 0);
    cr_assert_eq(evlog_read_dir(dir, SID, 0, &r, err, sizeof(err)), 0, "%s", err);
    t_check(&r, 1, 40);
    evlog_reader_free(&r);
    cr_assert_null(r.buf);

    /* Only the events after a position (a snapshot's). */
    cr_assert_eq(evlog_read_dir(dir, SID, 17, &r, err, sizeof(err)), 0, "%s", err);
    t_check(&r, 18, 40);
    evlog_reader_free(&r);
    cr_assert_eq(evlog_read_dir(dir, SID, 40, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(r.count, 0, "nothing after the last event");
    evlog_reader_free(&r);
}

Test(evlog, files_are_read_in_position_order)
{
    const char *dir = t_tmpdir();
    struct evlog_reader r;
    char err[256] = "";

    /* Written newest first: the directory order must not matter. */
    t_write_log(dir, SID, 101, 101, 150, 0);
    t_write_log(dir, SID, 11, 11, 100, 0);
    t_write_log(dir, SID, 1, 1, 10, 0);
    cr_assert_eq(evlog_read_dir(dir, SID, 0, &r, err, sizeof(err)), 0, "%s", err);
    t_check(&r, 1, 150);
    evlog_reader_free(&r);
    cr_assert_eq(evlog_read_dir(dir, SID, 50, &r, err, sizeof(err)), 0, "%s", err);
    t_check(&r, 51, 150);
    evlog_reader_free(&r);
}

Test(evlog, a_new_file_with_no_records_yet)
{
    const char *dir = t_tmpdir();
    struct evlog_reader r;
    char err[256] = "";

    t_write_log(dir, SID, 1, 1, 20, 0);
    t_write_log(dir, SID, 21, 21, 0, 0);   /* just rotated: header only */
    cr_assert_eq(evlog_read_dir(dir, SID, 0, &r, err, sizeof(err)), 0, "%s", err);
    t_check(&r, 1, 20);
    evlog_reader_free(&r);
}

Test(evlog, a_torn_last_record_ends_the_log)
{
    const char *dir = t_tmpdir();
    struct evlog_reader r;
    char err[256] = "";

    for (size_t cut = 1; cut < evrec_space(t_plen(30)); cut++) {
        t_write_log(dir, SID, 1, 1, 30, cut);
        cr_assert_eq(evlog_read_dir(dir, SID, 0, &r, err, sizeof(err)), 0, "cut %zu: %s", cut,
                     err);
        t_check(&r, 1, 29);
        evlog_reader_free(&r);
    }
}

Test(evlog, a_gap_between_files_is_an_error)
{
    const char *dir = t_tmpdir();
    struct evlog_reader r;
    char err[256] = "";

    t_write_log(dir, SID, 1, 1, 10, 0);
    t_write_log(dir, SID, 12, 12, 20, 0);
    cr_assert_eq(evlog_read_dir(dir, SID, 0, &r, err, sizeof(err)), -EBADMSG);
    cr_assert(strstr(err, "events 11..11 are missing"), "%s", err);
    cr_assert_null(r.buf, "nothing is kept on error");
}

Test(evlog, a_log_starting_after_the_needed_event_is_enoent)
{
    const char *dir = t_tmpdir();
    struct evlog_reader r;
    char err[256] = "";

    t_write_log(dir, SID, 11, 11, 20, 0);   /* events 1..10 were removed */
    cr_assert_eq(evlog_read_dir(dir, SID, 5, &r, err, sizeof(err)), -ENOENT);
    cr_assert(strstr(err, "starts at event 11"), "%s", err);
    cr_assert_eq(evlog_read_dir(dir, SID, 10, &r, err, sizeof(err)), 0, "%s", err);
    t_check(&r, 11, 20);
    evlog_reader_free(&r);
}

Test(evlog, no_files_is_enoent)
{
    const char *dir = t_tmpdir();
    struct evlog_reader r;
    char err[256] = "", missing[512];

    cr_assert_eq(evlog_read_dir(dir, SID, 0, &r, err, sizeof(err)), -ENOENT);
    cr_assert(strstr(err, "no event log files"), "%s", err);
    snprintf(missing, sizeof(missing), "%s/nope", dir);
    cr_assert_eq(evlog_read_dir(missing, SID, 0, &r, err, sizeof(err)), -ENOENT);
}

Test(evlog, headers_that_do_not_match_are_refused)
{
    struct evlog_reader r;
    char err[256] = "";
    const char *dir;

    dir = t_tmpdir();
    t_write_log(dir, SID + 1, 1, 1, 10, 0);
    cr_assert_eq(evlog_read_dir(dir, SID, 0, &r, err, sizeof(err)), -EBADMSG, "other session");
    cr_assert(strstr(err, "not an event log of session"), "%s", err);

    dir = t_tmpdir();
    t_write_log(dir, SID, 1, 2, 10, 0);
    cr_assert_eq(evlog_read_dir(dir, SID, 0, &r, err, sizeof(err)), -EBADMSG,
                 "header's first differs from the name's");

    /* A bad magic, a bad version, and a file shorter than the header. */
    for (int k = 0; k < 3; k++) {
        char path[512], name[64];
        dir = t_tmpdir();
        t_write_log(dir, SID, 1, 1, 10, 0);
        evlog_name(name, sizeof(name), 1);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        int fd = open(path, O_WRONLY);
        cr_assert(fd >= 0);
        if (k == 0)
            cr_assert_eq(pwrite(fd, "X", 1, 0), 1);
        else if (k == 1)
            cr_assert_eq(pwrite(fd, "\x02", 1, 8), 1);
        else
            cr_assert_eq(ftruncate(fd, EVLOG_HDR_LEN - 1), 0);
        close(fd);
        cr_assert_eq(evlog_read_dir(dir, SID, 0, &r, err, sizeof(err)), -EBADMSG, "case %d", k);
    }
}

Test(evlog, a_record_out_of_position_is_an_error)
{
    const char *dir = t_tmpdir();
    struct evlog_reader r;
    char err[256] = "", path[512], name[64];

    t_write_log(dir, SID, 1, 1, 10, 0);
    /* Event 5's shm_rec.pos says 6. */
    size_t off = EVLOG_HDR_LEN + t_records(NULL, 1, 4) + EVREC_HDR;
    uint64_t wrong = 6;
    evlog_name(name, sizeof(name), 1);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY);
    cr_assert(fd >= 0);
    cr_assert_eq(pwrite(fd, &wrong, 8, (off_t)off), 8);
    close(fd);
    cr_assert_eq(evlog_read_dir(dir, SID, 0, &r, err, sizeof(err)), -EBADMSG);
    cr_assert(strstr(err, "has position 6, expected 5"), "%s", err);
}
