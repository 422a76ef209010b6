/* test_store.c - endpoint/store.c: the server endpoint's copy of a session's snapshots. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../endpoint/store.h"
#include "t_helpers.h"
#include "wire.h"

static int put(struct store *st, uint64_t pos, uint64_t base, uint64_t total, uint64_t offset,
               const char *bytes, size_t len, char *err, size_t errlen)
{
    struct wire_frame f = { .type = WIRE_SNAP_PUT };

    f.u.snap_put.position = pos;
    f.u.snap_put.base = base;
    f.u.snap_put.total = total;
    f.u.snap_put.offset = offset;
    f.u.snap_put.bytes = (const uint8_t *)bytes;
    f.u.snap_put.len = len;
    return store_put(st, &f, err, errlen);
}

/* An edge lost halfway through shipping snapshot 16; the edge that resumed the session
 * ships its own 21 from the start: taken (it was refused as out of order, which ended the
 * session at the new edge), and the half file is gone. */
Test(store, a_half_shipped_file_gives_way_to_a_new_first_piece)
{
    struct store st;
    char err[256] = "";

    store_init(&st, NULL, 7);
    cr_assert_eq(put(&st, 10, 0, 4, 0, "full", 4, err, sizeof(err)), 1, "%s", err);
    cr_assert_eq(put(&st, 16, 0, 8, 0, "half", 4, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(put(&st, 21, 0, 6, 0, "new-", 4, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(put(&st, 21, 0, 6, 4, "21", 2, err, sizeof(err)), 1, "%s", err);
    cr_assert_eq(store_last(&st), 21);
    cr_assert_eq(st.n, 1);
    cr_assert(st.chain[0].len == 6 && memcmp(st.chain[0].bytes, "new-21", 6) == 0);
    /* A piece in the middle of nothing, or out of its order, is still refused. */
    cr_assert_eq(put(&st, 30, 0, 8, 4, "mid-", 4, err, sizeof(err)), -EPROTO);
    cr_assert(strstr(err, "not 0"), "%s", err);
    cr_assert_eq(put(&st, 30, 0, 8, 0, "head", 4, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(put(&st, 30, 0, 8, 2, "ad", 2, err, sizeof(err)), -EPROTO);
    cr_assert(strstr(err, "out of order"), "%s", err);
    store_remove(&st);
}

/* On disk: the half file's temp file is removed when the new one starts. */
Test(store, a_half_shipped_file_on_disk_is_removed)
{
    struct store st;
    char err[256] = "", tmp16[600], tmp21[600];
    struct stat sb;
    const char *root = t_tmpdir();

    store_init(&st, root, 9);
    cr_assert_eq(put(&st, 16, 0, 8, 0, "half", 4, err, sizeof(err)), 0, "%s", err);
    snprintf(tmp16, sizeof(tmp16), "%s", st.tmp);
    cr_assert_eq(stat(tmp16, &sb), 0, "%s: the half file is not there", tmp16);
    cr_assert_eq(put(&st, 21, 0, 8, 0, "next", 4, err, sizeof(err)), 0, "%s", err);
    snprintf(tmp21, sizeof(tmp21), "%s", st.tmp);
    cr_assert_neq(stat(tmp16, &sb), 0, "%s outlived its sender", tmp16);
    cr_assert_eq(stat(tmp21, &sb), 0, "%s: the new file is not there", tmp21);
    store_remove(&st);
    cr_assert_neq(stat(tmp21, &sb), 0, "%s outlived store_remove", tmp21);
}
