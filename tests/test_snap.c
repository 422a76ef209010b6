/* test_snap.c - the snapshot file format (common/snap.c): round trips, delta chains,
 * corruption of every byte, truncation, trailing garbage, fingerprints, chain finding,
 * failed writes, pruning. Memory regions are mmap'd pages of the test process. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "snap.h"

TestSuite(snap);

#define PG SNAP_PAGE

/* ---- helpers (static: all test files link into one binary) ---- */

static char *tmp_dir(void)
{
    char tmpl[] = "/tmp/cessna-snap-XXXXXX";

    cr_assert_not_null(mkdtemp(tmpl), "mkdtemp: %s", strerror(errno));
    return strdup(tmpl);
}

/* Remove dir and the plain files in it. */
static void rm_dir(char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    if (d) {
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
    }
    rmdir(dir);
    free(dir);
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    cr_assert_not_null(d, "opendir %s", dir);
    while ((de = readdir(d)))
        n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    return n;
}

/* Names in dir that hold `part`. */
static int count_named_like(const char *dir, const char *part)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    cr_assert_not_null(d, "opendir %s", dir);
    while ((de = readdir(d)))
        n += strstr(de->d_name, part) != NULL;
    closedir(d);
    return n;
}

static int file_exists(const char *dir, const char *name)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static void snap_path(char *buf, size_t len, const char *dir, uint64_t pos, uint32_t kind)
{
    char name[64];

    snap_name(name, sizeof(name), pos, kind);
    snprintf(buf, len, "%s/%s", dir, name);
}

static uint8_t *load(const char *path, size_t *len)
{
    struct stat st;
    uint8_t *buf;
    int fd = open(path, O_RDONLY);

    cr_assert_neq(fd, -1, "open %s: %s", path, strerror(errno));
    cr_assert_neq(fstat(fd, &st), -1);
    buf = malloc((size_t)st.st_size + 1);
    cr_assert_eq(read(fd, buf, (size_t)st.st_size), st.st_size, "read %s", path);
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

static void store(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    cr_assert_neq(fd, -1, "open %s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, buf, len), (ssize_t)len, "write %s", path);
    close(fd);
}

static uint8_t *map_pages(size_t n)
{
    void *p = mmap(NULL, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    cr_assert_neq(p, MAP_FAILED, "mmap %zu pages: %s", n, strerror(errno));
    return p;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Incompressible bytes. */
static void fill_random(uint8_t *p, size_t len, uint64_t seed)
{
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = splitmix(&seed);

        memcpy(p + i, &v, len - i < 8 ? len - i : 8);
    }
}

/* Compressible bytes: text-like records that differ per page and seed. */
static void fill_pattern(uint8_t *p, size_t len, uint64_t seed)
{
    size_t off = 0;

    for (uint64_t k = 0; off < len; k++) {
        char line[64];
        int n = snprintf(line, sizeof(line), "key:%llu value:%llu;",
                         (unsigned long long)(k % 97), (unsigned long long)(seed * 31 + k / 97));

        for (int i = 0; i < n && off < len; i++)
            p[off++] = (uint8_t)line[i];
    }
}

/* Two regions: A (room for A_CAP pages, a_len of them in the snapshot) and B. */
#define A_CAP 32
#define B_LEN 4

struct world {
    uint8_t *a, *b;
    uint64_t a_len;                 /* pages */
    uint64_t ha[A_CAP], hb[B_LEN];
    struct snap_hashes hs;
    uint8_t fp[32];
};

static void world_init(struct world *w, uint64_t a_len)
{
    memset(w, 0, sizeof(*w));
    w->a = map_pages(A_CAP);
    w->b = map_pages(B_LEN);
    w->a_len = a_len;
    w->hs.page[0] = w->ha;
    w->hs.npages[0] = A_CAP;
    w->hs.page[1] = w->hb;
    w->hs.npages[1] = B_LEN;
    for (int i = 0; i < 32; i++)
        w->fp[i] = (uint8_t)(0xc0 + i);
}

static struct snap_meta world_meta(const struct world *w, uint64_t pos, uint32_t kind,
                                   uint64_t base)
{
    struct snap_meta m;

    memset(&m, 0, sizeof(m));
    m.session_id = 77;
    m.position = pos;
    m.base_position = base;
    m.seq[0] = pos;
    m.seq[1] = 2 * pos;
    m.out_no[0] = pos + 1;
    m.out_no[1] = pos + 3;
    memcpy(m.fingerprint, w->fp, 32);
    m.max_message = 1u << 20;
    m.kind = kind;
    m.nregions = 2;
    m.regions[0] = (struct snap_region){ (uintptr_t)w->a, w->a_len * PG };
    m.regions[1] = (struct snap_region){ (uintptr_t)w->b, B_LEN * PG };
    return m;
}

/* What the snapshot covers: A's first a_len pages, then B. */
struct image {
    uint64_t a_len;
    uint8_t *bytes;
};

static struct image image_save(const struct world *w)
{
    struct image im = { w->a_len, malloc((w->a_len + B_LEN) * PG) };

    memcpy(im.bytes, w->a, w->a_len * PG);
    memcpy(im.bytes + w->a_len * PG, w->b, B_LEN * PG);
    return im;
}

static void image_check(const struct world *w, const struct image *im, const char *what)
{
    for (uint64_t i = 0; i < im->a_len; i++)
        cr_assert(!memcmp(w->a + i * PG, im->bytes + i * PG, PG), "%s: region A page %llu differs",
                  what, (unsigned long long)i);
    for (uint64_t i = 0; i < B_LEN; i++)
        cr_assert(!memcmp(w->b + i * PG, im->bytes + (im->a_len + i) * PG, PG),
                  "%s: region B page %llu differs", what, (unsigned long long)i);
}

static void world_wipe(struct world *w)
{
    memset(w->a, 0xaa, A_CAP * PG);
    memset(w->b, 0xaa, B_LEN * PG);
}

static void write_ok(const char *dir, const struct snap_meta *m, struct snap_hashes *hs,
                     struct snap_stats *st)
{
    char err[512];
    int rc = snap_write(dir, m, hs, st, err, sizeof(err));

    cr_assert_eq(rc, 0, "snap_write at %llu: %d %s", (unsigned long long)m->position, rc, err);
}

/* ---- round trips ---- */

static void round_trip(int level)
{
    char *dir = tmp_dir(), path[512], err[512];
    struct world w;
    struct snap_meta m, got;
    struct snap_stats st;
    struct image im;
    struct stat sb;
    uint64_t pos[4];
    int n;

    snap_set_compression(level);
    world_init(&w, 16);
    fill_pattern(w.a, 12 * PG, 1);      /* pages 12..15 stay zero */
    fill_random(w.b, B_LEN * PG, 2);
    m = world_meta(&w, 5, SNAP_FULL, 0);
    write_ok(dir, &m, &w.hs, &st);
    cr_assert_eq(st.pages_written, 20);
    cr_assert_eq(st.pages_total, 20);
    snap_path(path, sizeof(path), dir, 5, SNAP_FULL);
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(st.bytes, (uint64_t)sb.st_size, "stats.bytes %llu, file %lld",
                 (unsigned long long)st.bytes, (long long)sb.st_size);
    cr_assert_eq(count_files(dir), 1, "only the snapshot in dir (no temp file left)");

    cr_assert_eq(snap_read(path, w.fp, 0, &got, err, sizeof(err)), 0, "%s", err);
    cr_assert(!memcmp(&got, &m, sizeof(m)), "metadata round trip");

    im = image_save(&w);
    world_wipe(&w);
    cr_assert_eq(snap_read(path, w.fp, 1, &got, err, sizeof(err)), 0, "%s", err);
    image_check(&w, &im, "snap_read apply");

    world_wipe(&w);
    cr_assert_eq(snap_find_chain(dir, pos, 4, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 1);
    cr_assert_eq(pos[0], 5);
    cr_assert_eq(snap_restore_chain(dir, pos, n, w.fp, &got, err, sizeof(err)), 0, "%s", err);
    cr_assert(!memcmp(&got, &m, sizeof(m)), "metadata from snap_restore_chain");
    image_check(&w, &im, "snap_restore_chain");
    free(im.bytes);
    rm_dir(dir);
}

Test(snap, round_trip_compressed) { round_trip(1); }

/* With the writer's buffers kept (a worker), an unchanged page is written as the last file
 * encoded it; a changed one never is. Many files, two pages changing in each, so the kept
 * encodings fill up and start again several times; every file restores to what it was. */
Test(snap, unchanged_pages_keep_their_encoding, .timeout = 60)
{
    char *dir = tmp_dir(), path[512], err[512];
    struct world w;
    struct snap_meta m, got;
    struct snap_stats st;

    snap_keep_buffers(1);
    snap_set_compression(1);
    world_init(&w, 8);
    fill_pattern(w.a, 8 * PG, 1);
    fill_pattern(w.b, B_LEN * PG, 2);
    for (uint64_t pos = 1; pos <= 120; pos++) {
        /* a new text on two pages: compressible, so each is a new zstd frame */
        fill_pattern(w.a + (pos % 8) * PG, PG, 1000 + pos);
        fill_pattern(w.b + (pos % B_LEN) * PG, PG, 5000 + pos);
        m = world_meta(&w, pos, SNAP_FULL, 0);
        write_ok(dir, &m, &w.hs, &st);
        cr_assert_eq(st.pages_written, 8 + B_LEN);
        struct image im = image_save(&w);
        world_wipe(&w);
        snap_path(path, sizeof(path), dir, pos, SNAP_FULL);
        cr_assert_eq(snap_read(path, w.fp, 1, &got, err, sizeof(err)), 0, "%s", err);
        image_check(&w, &im, "a full written with kept encodings");
        free(im.bytes);
        unlink(path);
    }
    snap_keep_buffers(0);
    rm_dir(dir);
}
Test(snap, round_trip_uncompressed) { round_trip(0); }

/* The header alone: what an edge reads before it ships a file (the rest is not checked). */
Test(snap, header_alone)
{
    char *dir = tmp_dir(), path[512], err[512];
    struct world w;
    struct snap_meta m = { 0 }, got;

    world_init(&w, 8);
    fill_random(w.a, 8 * PG, 5);
    m = world_meta(&w, 42, SNAP_DELTA, 40);
    write_ok(dir, &m, NULL, NULL);
    snap_path(path, sizeof(path), dir, 42, SNAP_DELTA);
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_eq(snap_read_header(fd, &got, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(got.position, 42);
    cr_expect_eq(got.base_position, 40);
    cr_expect_eq(got.kind, SNAP_DELTA);
    cr_expect_eq(got.seq[0], 42);
    cr_expect_eq(got.seq[1], 84);
    cr_expect_arr_eq(got.fingerprint, w.fp, 32);
    /* a flipped header byte is caught by the header's own checksum */
    uint8_t b;
    cr_assert_eq(pread(fd, &b, 1, 44), 1);
    b ^= 1;
    cr_assert_eq(pwrite(fd, &b, 1, 44), 1);
    cr_expect_eq(snap_read_header(fd, &got, err, sizeof(err)), -EBADMSG);
    cr_expect(strstr(err, "header checksum"), "%s", err);
    /* a file shorter than a header and a trailer */
    cr_assert_eq(ftruncate(fd, 100), 0);
    cr_expect_eq(snap_read_header(fd, &got, err, sizeof(err)), -EBADMSG);
    close(fd);
    rm_dir(dir);
}

Test(snap, name_format)
{
    char buf[64];

    snap_name(buf, sizeof(buf), 1, SNAP_FULL);
    cr_assert_str_eq(buf, "snap-00000000000000000001.full");
    snap_name(buf, sizeof(buf), UINT64_MAX, SNAP_DELTA);
    cr_assert_str_eq(buf, "snap-18446744073709551615.delta");
}

/* Patterned pages shrink with compression; random ones are stored raw either way. */
Test(snap, compression_on_and_off)
{
    char *dir_on = tmp_dir(), *dir_off = tmp_dir(), path[512], err[512];
    struct snap_stats on, off;
    struct snap_meta m, got;
    struct world w;
    struct image im;

    world_init(&w, 16);
    for (int kind = 0; kind < 2; kind++) {
        if (kind == 0)
            fill_pattern(w.a, 16 * PG, 7), fill_pattern(w.b, B_LEN * PG, 8);
        else
            fill_random(w.a, 16 * PG, 7), fill_random(w.b, B_LEN * PG, 8);
        m = world_meta(&w, 10 + (uint64_t)kind, SNAP_FULL, 0);
        snap_set_compression(1);
        write_ok(dir_on, &m, NULL, &on);
        snap_set_compression(0);
        write_ok(dir_off, &m, NULL, &off);
        snap_set_compression(1);
        if (kind == 0)
            cr_assert_lt(on.bytes * 4, off.bytes, "patterned: %llu bytes compressed, %llu raw",
                         (unsigned long long)on.bytes, (unsigned long long)off.bytes);
        else
            cr_assert_eq(on.bytes, off.bytes, "random: %llu bytes compressed, %llu raw",
                         (unsigned long long)on.bytes, (unsigned long long)off.bytes);

        im = image_save(&w);
        for (int d = 0; d < 2; d++) {
            snap_path(path, sizeof(path), d ? dir_off : dir_on, m.position, SNAP_FULL);
            world_wipe(&w);
            cr_assert_eq(snap_read(path, w.fp, 1, &got, err, sizeof(err)), 0, "%s", err);
            image_check(&w, &im, d ? "raw" : "compressed");
        }
        free(im.bytes);
    }
    rm_dir(dir_on);
    rm_dir(dir_off);
}

/* ---- incremental chains ---- */

static void delta_chain(int level)
{
    char *dir = tmp_dir(), err[512];
    struct snap_stats st;
    struct snap_meta m, got;
    struct image img[5];
    struct world w;
    uint64_t pos[8];
    int n;

    snap_set_compression(level);
    world_init(&w, 16);
    fill_pattern(w.a, 16 * PG, 1);
    fill_random(w.b, B_LEN * PG, 2);

    m = world_meta(&w, 10, SNAP_FULL, 0);
    write_ok(dir, &m, &w.hs, &st);
    cr_assert_eq(st.pages_written, 20);
    for (int i = 0; i < A_CAP; i++)
        cr_assert_eq(w.ha[i] != 0, i < 16, "hash table A entry %d after the full", i);
    img[0] = image_save(&w);

    /* Two pages change. */
    w.a[3 * PG + 100] ^= 1;
    w.a[7 * PG + 4095] ^= 0x80;
    m = world_meta(&w, 20, SNAP_DELTA, 10);
    write_ok(dir, &m, &w.hs, &st);
    cr_assert_eq(st.pages_written, 2, "delta 20 wrote %llu pages", (unsigned long long)st.pages_written);
    cr_assert_eq(st.pages_total, 20);
    img[1] = image_save(&w);

    /* Two others change; one is rewritten with its own content (no change). */
    w.a[0] ^= 0xff;
    fill_random(w.b + PG, PG, 99);
    memmove(w.a + 5 * PG, w.a + 5 * PG, PG);
    m = world_meta(&w, 30, SNAP_DELTA, 20);
    write_ok(dir, &m, &w.hs, &st);
    cr_assert_eq(st.pages_written, 2, "delta 30 wrote %llu pages", (unsigned long long)st.pages_written);
    img[2] = image_save(&w);

    /* Region A grows by 4 pages (one left zero): only those are new. */
    fill_pattern(w.a + 16 * PG, 3 * PG, 5);
    w.a_len = 20;
    m = world_meta(&w, 40, SNAP_DELTA, 30);
    write_ok(dir, &m, &w.hs, &st);
    cr_assert_eq(st.pages_written, 4, "delta 40 wrote %llu pages", (unsigned long long)st.pages_written);
    cr_assert_eq(st.pages_total, 24);
    img[3] = image_save(&w);

    /* Nothing changed: an empty delta. */
    m = world_meta(&w, 50, SNAP_DELTA, 40);
    write_ok(dir, &m, &w.hs, &st);
    cr_assert_eq(st.pages_written, 0);
    img[4] = image_save(&w);

    cr_assert_eq(snap_find_chain(dir, pos, 8, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(err, "");
    cr_assert_eq(n, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(pos[i], 10u * (uint64_t)(i + 1), "chain[%d] = %llu", i, (unsigned long long)pos[i]);

    /* Every prefix of the chain restores the state at its end. */
    for (int k = 1; k <= 5; k++) {
        char what[32];

        world_wipe(&w);
        cr_assert_eq(snap_restore_chain(dir, pos, k, w.fp, &got, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(got.position, pos[k - 1]);
        cr_assert_eq(got.regions[0].len, img[k - 1].a_len * PG);
        snprintf(what, sizeof(what), "chain of %d", k);
        image_check(&w, &img[k - 1], what);
    }
    cr_assert_eq(got.seq[1], 100);
    cr_assert_eq(got.out_no[0], 51);
    for (int i = 0; i < 5; i++)
        free(img[i].bytes);
    rm_dir(dir);
}

Test(snap, delta_chain_compressed, .timeout = 30) { delta_chain(1); }
Test(snap, delta_chain_uncompressed, .timeout = 30) { delta_chain(0); }

/* The hash tables follow the regions: entries beyond a region's length are cleared, so a
 * region that shrinks and grows back is written in full. */
Test(snap, hashes_follow_regions)
{
    char *dir = tmp_dir();
    struct snap_stats st;
    struct snap_meta m;
    struct world w;

    world_init(&w, 16);
    fill_pattern(w.a, A_CAP * PG, 3);
    m = world_meta(&w, 1, SNAP_FULL, 0);
    write_ok(dir, &m, &w.hs, &st);
    w.a_len = 8;
    m = world_meta(&w, 2, SNAP_DELTA, 1);
    write_ok(dir, &m, &w.hs, &st);
    cr_assert_eq(st.pages_written, 0);
    for (int i = 8; i < A_CAP; i++)
        cr_assert_eq(w.ha[i], 0, "entry %d beyond the shrunk region", i);
    w.a_len = 16;
    m = world_meta(&w, 3, SNAP_DELTA, 2);
    write_ok(dir, &m, &w.hs, &st);
    cr_assert_eq(st.pages_written, 8);

    /* A delta without hash tables writes every page. */
    m = world_meta(&w, 4, SNAP_DELTA, 3);
    write_ok(dir, &m, NULL, &st);
    cr_assert_eq(st.pages_written, 20);
    rm_dir(dir);
}

/* ---- corruption ---- */

/* A small snapshot with every kind of record: zstd, raw, zero, in two regions. */
struct small {
    char *dir;
    char path[512];
    struct world w;
    uint8_t *file;
    size_t len;
    uint8_t *sentinel;   /* what memory holds while bad files are read */
};

static void small_make(struct small *s, uint32_t kind)
{
    struct snap_meta m;

    snap_set_compression(1);
    s->dir = tmp_dir();
    world_init(&s->w, 3);
    fill_pattern(s->w.a, PG, 1);            /* zstd */
    fill_random(s->w.a + PG, PG, 2);        /* raw; page 2 zero */
    fill_pattern(s->w.b, B_LEN * PG, 3);
    m = world_meta(&s->w, 9, SNAP_FULL, 0);
    write_ok(s->dir, &m, &s->w.hs, NULL);
    if (kind == SNAP_DELTA) {
        s->w.a[5] ^= 1;
        s->w.a[PG + 5] ^= 1;
        s->w.a[2 * PG + 5] = 0;             /* unchanged */
        s->w.b[3 * PG] ^= 1;
        m = world_meta(&s->w, 12, SNAP_DELTA, 9);
        write_ok(s->dir, &m, &s->w.hs, NULL);
    }
    snap_path(s->path, sizeof(s->path), s->dir, m.position, kind);
    s->file = load(s->path, &s->len);
    s->sentinel = malloc((A_CAP + B_LEN) * PG);
    fill_random(s->sentinel, (A_CAP + B_LEN) * PG, 42);
    memcpy(s->w.a, s->sentinel, A_CAP * PG);
    memcpy(s->w.b, s->sentinel + A_CAP * PG, B_LEN * PG);
}

static void small_free(struct small *s)
{
    free(s->file);
    free(s->sentinel);
    rm_dir(s->dir);
}

/* snap_read of path must fail with -EBADMSG and leave memory alone. */
static void expect_bad(struct small *s, const char *path, const char *what, size_t at)
{
    struct snap_meta got;
    char err[512] = "";
    int rc = snap_read(path, s->w.fp, 1, &got, err, sizeof(err));

    cr_assert_eq(rc, -EBADMSG, "%s at %zu: snap_read returned %d (%s)", what, at, rc, err);
    cr_assert_neq(err[0], 0, "%s at %zu: no reason given", what, at);
    cr_assert(!memcmp(s->w.a, s->sentinel, A_CAP * PG) &&
              !memcmp(s->w.b, s->sentinel + A_CAP * PG, B_LEN * PG),
              "%s at %zu: memory changed by a bad file", what, at);
}

static void small_good(struct small *s)
{
    struct snap_meta got;
    char err[512];

    store(s->path, s->file, s->len);
    cr_assert_eq(snap_read(s->path, s->w.fp, 0, &got, err, sizeof(err)), 0, "intact: %s", err);
}

static void every_byte(uint32_t kind)
{
    struct small s;
    int fd;

    small_make(&s, kind);
    cr_assert_gt(s.len, 4096u);
    small_good(&s);
    fd = open(s.path, O_WRONLY);
    cr_assert_neq(fd, -1);
    for (size_t i = 0; i < s.len; i++) {
        uint8_t bad[2] = { (uint8_t)(s.file[i] ^ 0xff), (uint8_t)(s.file[i] + 1) };

        for (int v = 0; v < 2; v++) {
            cr_assert_eq(pwrite(fd, &bad[v], 1, (off_t)i), 1);
            expect_bad(&s, s.path, v ? "byte +1" : "byte ^0xff", i);
        }
        cr_assert_eq(pwrite(fd, &s.file[i], 1, (off_t)i), 1);
    }
    close(fd);
    small_good(&s);
    small_free(&s);
}

Test(snap, every_byte_corruption_full, .timeout = 30) { every_byte(SNAP_FULL); }
Test(snap, every_byte_corruption_delta, .timeout = 30) { every_byte(SNAP_DELTA); }

Test(snap, every_truncation, .timeout = 30)
{
    struct small s;
    char path[600];

    small_make(&s, SNAP_FULL);
    snprintf(path, sizeof(path), "%s/cut", s.dir);
    for (size_t len = 0; len < s.len; len++) {
        store(path, s.file, len);
        expect_bad(&s, path, "truncated to", len);
    }
    small_free(&s);
}

Test(snap, trailing_garbage)
{
    struct small s;
    char path[600];
    uint8_t *buf;
    size_t extra[] = { 1, 7, 32, 4096 + 20, 0 /* a second copy of the file */ };

    small_make(&s, SNAP_FULL);
    snprintf(path, sizeof(path), "%s/long", s.dir);
    buf = malloc(2 * s.len);
    for (size_t k = 0; k < sizeof(extra) / sizeof(extra[0]); k++) {
        size_t add = extra[k] ? extra[k] : s.len;

        memcpy(buf, s.file, s.len);
        if (extra[k])
            memset(buf + s.len, k & 1 ? 0 : 0xff, add);
        else
            memcpy(buf + s.len, s.file, s.len);
        store(path, buf, s.len + add);
        expect_bad(&s, path, "garbage appended", add);
    }
    /* The trailer repeated. */
    memcpy(buf, s.file, s.len);
    memcpy(buf + s.len, s.file + s.len - SNAP_TRAILER_LEN, SNAP_TRAILER_LEN);
    store(path, buf, s.len + SNAP_TRAILER_LEN);
    expect_bad(&s, path, "trailer repeated", SNAP_TRAILER_LEN);
    free(buf);
    small_free(&s);
}

/* Random files, and a valid header followed by random bytes: refused, no crash. */
Test(snap, garbage_files, .timeout = 30)
{
    struct small s;
    char path[600];
    uint8_t *buf;
    uint64_t seed = 5;

    small_make(&s, SNAP_FULL);
    snprintf(path, sizeof(path), "%s/junk", s.dir);
    buf = malloc(3 * s.len);
    for (int k = 0; k < 300; k++) {
        size_t len = (size_t)(splitmix(&seed) % (3 * s.len));

        fill_random(buf, len, (uint64_t)k);
        if (k & 1 && len > SNAP_HDR_LEN)
            memcpy(buf, s.file, SNAP_HDR_LEN);
        store(path, buf, len);
        expect_bad(&s, path, "garbage of length", len);
    }
    free(buf);
    small_free(&s);
}

Test(snap, fingerprint_mismatch)
{
    struct small s;
    struct snap_meta got;
    uint8_t other[32];
    uint64_t pos = 9;
    char err[512];

    small_make(&s, SNAP_FULL);
    memcpy(other, s.w.fp, 32);
    other[31] ^= 1;
    cr_assert_eq(snap_read(s.path, other, 1, &got, err, sizeof(err)), -EXDEV);
    cr_assert_not_null(strstr(err, "layout fingerprint differs"), "err: %s", err);
    cr_assert(!memcmp(s.w.a, s.sentinel, A_CAP * PG), "memory changed by a refused file");
    cr_assert_eq(snap_restore_chain(s.dir, &pos, 1, other, &got, err, sizeof(err)), -EXDEV);
    cr_assert_not_null(strstr(err, "layout fingerprint differs"), "err: %s", err);
    cr_assert(!memcmp(s.w.a, s.sentinel, A_CAP * PG), "memory changed by a refused chain");
    cr_assert_eq(snap_read(s.path, NULL, 0, &got, err, sizeof(err)), 0, "%s", err);
    small_free(&s);
}

/* The fingerprint covers every loaded object, not only the program and the app: loading
 * one more library changes it, unloading it restores it; and the arena base counts. */
Test(snap, fingerprint_covers_every_loaded_object)
{
    uint8_t a[32], b[32], c[32];
    char err[256];
    const char *lib = CESSNA_BUILD_DIR "/tests/apps/crashy.so";

    cr_assert_eq(snap_layout_fingerprint(0x200000000000ull, a, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(snap_layout_fingerprint(0x200000000000ull, b, err, sizeof(err)), 0, "%s", err);
    cr_assert(!memcmp(a, b, 32), "the same layout must give the same fingerprint");
    cr_assert_eq(snap_layout_fingerprint(0x300000000000ull, c, err, sizeof(err)), 0, "%s", err);
    cr_assert(memcmp(a, c, 32), "the arena base must count");

    void *h = dlopen(lib, RTLD_LAZY | RTLD_LOCAL);   /* its cessna_* calls stay unbound */
    cr_assert_not_null(h, "dlopen %s: %s", lib, dlerror());
    cr_assert_eq(snap_layout_fingerprint(0x200000000000ull, b, err, sizeof(err)), 0, "%s", err);
    cr_assert(memcmp(a, b, 32), "a library loaded (not the app module) must change it");
    dlclose(h);
    cr_assert_eq(snap_layout_fingerprint(0x200000000000ull, b, err, sizeof(err)), 0, "%s", err);
    cr_assert(!memcmp(a, b, 32), "unloaded again: the fingerprint is back");
}

/* max_message_bytes travels in the header (the app saw it as -EMSGSIZE): it round-trips, and
 * a chain whose links disagree on it is broken. */
Test(snap, max_message_in_header)
{
    char *dir = tmp_dir(), path[512], err[1024];
    struct snap_meta m, got;
    struct world w;

    world_init(&w, 2);
    fill_pattern(w.a, 2 * PG, 1);
    m = world_meta(&w, 10, SNAP_FULL, 0);
    m.max_message = 4096;
    write_ok(dir, &m, NULL, NULL);
    snap_path(path, sizeof(path), dir, 10, SNAP_FULL);
    cr_assert_eq(snap_read(path, w.fp, 0, &got, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(got.max_message, 4096);

    m = world_meta(&w, 20, SNAP_DELTA, 10);
    m.max_message = 8192;
    write_ok(dir, &m, NULL, NULL);
    cr_assert_eq(snap_restore_chain(dir, (uint64_t[]){ 10, 20 }, 2, w.fp, &got, err, sizeof(err)),
                 -EBADMSG);
    cr_assert_not_null(strstr(err, "broken chain"), "err: %s", err);
    rm_dir(dir);
}

/* A version-1 file (no max_message) is refused by name, not misread. */
Test(snap, older_version_refused)
{
    struct small s;
    char err[512];
    struct snap_meta got;

    small_make(&s, SNAP_FULL);
    cr_assert_eq(SNAP_VERSION, 2);
    s.file[8] = 1;   /* version, then a valid header hash over the header bytes */
    uint64_t h = XXH3_64bits(s.file, 264);
    memcpy(s.file + 264, &h, 8);
    store(s.path, s.file, s.len);
    cr_assert_eq(snap_read(s.path, s.w.fp, 0, &got, err, sizeof(err)), -EBADMSG);
    cr_assert_not_null(strstr(err, "unsupported version 1"), "err: %s", err);
    small_free(&s);
}

/* ---- chains on disk ---- */

/* Write a snapshot of a small world at pos (deltas carry every page: no hash tables). */
static void put_snap(const char *dir, struct world *w, uint64_t pos, uint32_t kind, uint64_t base)
{
    struct snap_meta m;

    fill_pattern(w->a, w->a_len * PG, pos);
    m = world_meta(w, pos, kind, base);
    write_ok(dir, &m, NULL, NULL);
}

static void corrupt(const char *dir, uint64_t pos, uint32_t kind, size_t at)
{
    char path[512];
    uint8_t c;
    int fd;

    snap_path(path, sizeof(path), dir, pos, kind);
    fd = open(path, O_RDWR);
    cr_assert_neq(fd, -1);
    cr_assert_eq(pread(fd, &c, 1, (off_t)at), 1);
    c ^= 0x10;
    cr_assert_eq(pwrite(fd, &c, 1, (off_t)at), 1);
    close(fd);
}

static void expect_chain(const char *dir, const uint64_t *want, int nwant, const char *what,
                         char *err, size_t errlen)
{
    uint64_t pos[16];
    int n = -1, rc = snap_find_chain(dir, pos, 16, &n, err, errlen);

    cr_assert_eq(rc, 0, "%s: snap_find_chain %d %s", what, rc, err);
    cr_assert_eq(n, nwant, "%s: chain of %d, want %d (%s)", what, n, nwant, err);
    for (int i = 0; i < n; i++)
        cr_assert_eq(pos[i], want[i], "%s: chain[%d] = %llu, want %llu", what, i,
                     (unsigned long long)pos[i], (unsigned long long)want[i]);
}

Test(snap, find_chain_newest_full)
{
    char *dir = tmp_dir(), err[1024];
    struct world w;

    world_init(&w, 2);
    put_snap(dir, &w, 10, SNAP_FULL, 0);
    put_snap(dir, &w, 20, SNAP_DELTA, 10);
    put_snap(dir, &w, 30, SNAP_FULL, 0);
    put_snap(dir, &w, 40, SNAP_DELTA, 30);
    put_snap(dir, &w, 50, SNAP_DELTA, 40);
    {
        char p[600];

        snprintf(p, sizeof(p), "%s/notes.txt", dir);
        store(p, "x", 1);
        snprintf(p, sizeof(p), "%s/snap-1.full", dir);
        store(p, "x", 1);
    }
    expect_chain(dir, (uint64_t[]){ 30, 40, 50 }, 3, "newest full", err, sizeof(err));
    cr_assert_str_eq(err, "", "nothing wrong, yet err says: %s", err);
    rm_dir(dir);
}

Test(snap, find_chain_stops_at_broken_link)
{
    char *dir = tmp_dir(), err[1024];
    struct world w;

    world_init(&w, 2);
    put_snap(dir, &w, 10, SNAP_FULL, 0);
    put_snap(dir, &w, 20, SNAP_DELTA, 10);
    put_snap(dir, &w, 30, SNAP_DELTA, 25);
    put_snap(dir, &w, 40, SNAP_DELTA, 30);
    expect_chain(dir, (uint64_t[]){ 10, 20 }, 2, "broken link", err, sizeof(err));
    rm_dir(dir);
}

Test(snap, find_chain_stops_at_corrupt_delta)
{
    char *dir = tmp_dir(), err[1024];
    struct world w;

    world_init(&w, 2);
    put_snap(dir, &w, 10, SNAP_FULL, 0);
    put_snap(dir, &w, 20, SNAP_DELTA, 10);
    put_snap(dir, &w, 30, SNAP_DELTA, 20);
    corrupt(dir, 20, SNAP_DELTA, SNAP_HDR_LEN + 100);
    expect_chain(dir, (uint64_t[]){ 10 }, 1, "corrupt delta", err, sizeof(err));
    cr_assert_not_null(strstr(err, "snap-00000000000000000020.delta"), "err: %s", err);
    rm_dir(dir);
}

Test(snap, find_chain_skips_corrupt_full)
{
    char *dir = tmp_dir(), err[1024];
    struct world w;

    world_init(&w, 2);
    put_snap(dir, &w, 10, SNAP_FULL, 0);
    put_snap(dir, &w, 20, SNAP_DELTA, 10);
    put_snap(dir, &w, 30, SNAP_FULL, 0);
    corrupt(dir, 30, SNAP_FULL, 40);
    expect_chain(dir, (uint64_t[]){ 10, 20 }, 2, "corrupt newest full", err, sizeof(err));
    cr_assert_not_null(strstr(err, "snap-00000000000000000030.full"), "err: %s", err);
    rm_dir(dir);
}

/* A delta left by a write that failed after its rename shares its base with the next one:
 * the chain takes the newest. */
Test(snap, find_chain_takes_newest_link)
{
    char *dir = tmp_dir(), err[1024];
    struct world w;

    world_init(&w, 2);
    put_snap(dir, &w, 10, SNAP_FULL, 0);
    put_snap(dir, &w, 20, SNAP_DELTA, 10);
    put_snap(dir, &w, 30, SNAP_DELTA, 10);
    put_snap(dir, &w, 40, SNAP_DELTA, 30);
    expect_chain(dir, (uint64_t[]){ 10, 30, 40 }, 3, "two deltas on one base", err, sizeof(err));
    rm_dir(dir);
}

Test(snap, find_chain_none)
{
    char *dir = tmp_dir(), err[1024], path[600];
    uint64_t pos[4];
    struct world w;
    int n = -1;

    cr_assert_eq(snap_find_chain(dir, pos, 4, &n, err, sizeof(err)), -ENOENT);
    cr_assert_eq(n, 0);
    snprintf(path, sizeof(path), "%s/nope", dir);
    cr_assert_eq(snap_find_chain(path, pos, 4, &n, err, sizeof(err)), -ENOENT);

    /* Deltas alone make no chain; nor does a corrupt full. */
    world_init(&w, 2);
    put_snap(dir, &w, 10, SNAP_FULL, 0);
    put_snap(dir, &w, 20, SNAP_DELTA, 10);
    corrupt(dir, 10, SNAP_FULL, 300);
    cr_assert_eq(snap_find_chain(dir, pos, 4, &n, err, sizeof(err)), -ENOENT);
    cr_assert_not_null(strstr(err, "no full snapshot"), "err: %s", err);
    rm_dir(dir);
}

Test(snap, find_chain_max)
{
    char *dir = tmp_dir(), err[1024];
    uint64_t pos[2];
    struct world w;
    int n;

    world_init(&w, 2);
    put_snap(dir, &w, 10, SNAP_FULL, 0);
    put_snap(dir, &w, 20, SNAP_DELTA, 10);
    put_snap(dir, &w, 30, SNAP_DELTA, 20);
    cr_assert_eq(snap_find_chain(dir, pos, 2, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_assert_eq(pos[1], 20);
    cr_assert_neq(err[0], 0, "a cut chain is reported");
    rm_dir(dir);
}

/* snap_restore_chain checks each link before it applies the file. */
Test(snap, restore_chain_refuses_broken_link)
{
    char *dir = tmp_dir(), err[1024];
    struct snap_meta got;
    struct image im;
    struct world w;

    world_init(&w, 2);
    put_snap(dir, &w, 10, SNAP_FULL, 0);
    im = image_save(&w);
    put_snap(dir, &w, 20, SNAP_DELTA, 10);
    put_snap(dir, &w, 30, SNAP_DELTA, 20);
    world_wipe(&w);
    cr_assert_eq(snap_restore_chain(dir, (uint64_t[]){ 10, 30 }, 2, w.fp, &got, err, sizeof(err)),
                 -EBADMSG);
    cr_assert_not_null(strstr(err, "broken chain"), "err: %s", err);
    image_check(&w, &im, "the full alone is applied");
    cr_assert_eq(snap_restore_chain(dir, (uint64_t[]){ 20 }, 1, w.fp, &got, err, sizeof(err)),
                 -ENOENT, "a chain must start with a full");
    free(im.bytes);
    rm_dir(dir);
}

/* ---- failed writes ---- */

static void hashes_copy(const struct world *w, uint64_t *out)
{
    memcpy(out, w->ha, sizeof(w->ha));
    memcpy(out + A_CAP, w->hb, sizeof(w->hb));
}

Test(snap, failed_write_leaves_hashes)
{
    char *dir = tmp_dir(), bad[600], err[512];
    uint64_t before[A_CAP + B_LEN], after[A_CAP + B_LEN];
    struct snap_stats st = { 1, 2, 3 };
    struct snap_meta m;
    struct world w;
    int rc;

    world_init(&w, 16);
    fill_pattern(w.a, 16 * PG, 1);
    m = world_meta(&w, 10, SNAP_FULL, 0);
    write_ok(dir, &m, &w.hs, NULL);
    hashes_copy(&w, before);
    fill_random(w.a, 16 * PG, 2);       /* every page changes */

    /* A path under a regular file: ENOTDIR even as root. */
    snprintf(bad, sizeof(bad), "%s/plain", dir);
    store(bad, "x", 1);
    snprintf(bad, sizeof(bad), "%s/plain/sub", dir);
    m = world_meta(&w, 20, SNAP_DELTA, 10);
    rc = snap_write(bad, &m, &w.hs, &st, err, sizeof(err));
    cr_assert_eq(rc, -ENOTDIR, "rc %d %s", rc, err);
    cr_assert_not_null(strstr(err, "open"), "the failed step is named: %s", err);
    hashes_copy(&w, after);
    cr_assert(!memcmp(before, after, sizeof(before)), "hashes changed by a failed write");
    cr_assert_eq(st.pages_written, 2, "stats untouched on failure");

    snprintf(bad, sizeof(bad), "%s/missing", dir);
    cr_assert_eq(snap_write(bad, &m, &w.hs, NULL, err, sizeof(err)), -ENOENT, "%s", err);
    hashes_copy(&w, after);
    cr_assert(!memcmp(before, after, sizeof(before)), "hashes changed by a failed write");

    /* Bad metadata. */
    m.base_position = 20;
    cr_assert_eq(snap_write(dir, &m, &w.hs, NULL, err, sizeof(err)), -EINVAL);
    m = world_meta(&w, 20, SNAP_DELTA, 10);
    m.regions[1].len = 100;
    cr_assert_eq(snap_write(dir, &m, &w.hs, NULL, err, sizeof(err)), -EINVAL);
    m = world_meta(&w, 20, SNAP_DELTA, 10);
    m.regions[1].addr = m.regions[0].addr + PG;
    cr_assert_eq(snap_write(dir, &m, &w.hs, NULL, err, sizeof(err)), -EINVAL, "overlap");
    hashes_copy(&w, after);
    cr_assert(!memcmp(before, after, sizeof(before)), "hashes changed by a refused write");
    rm_dir(dir);
}

/* A write that fails half way (file size limit: EFBIG) leaves no temp file behind. */
Test(snap, failed_write_unlinks_temp)
{
    char *dir = tmp_dir(), err[512];
    uint64_t before[A_CAP + B_LEN], after[A_CAP + B_LEN];
    struct rlimit old, lim;
    struct snap_meta m;
    struct world w;
    int rc;

    world_init(&w, 16);
    fill_pattern(w.a, 16 * PG, 1);
    m = world_meta(&w, 10, SNAP_FULL, 0);
    write_ok(dir, &m, &w.hs, NULL);
    hashes_copy(&w, before);
    fill_random(w.a, 16 * PG, 2);

    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 8192;
    signal(SIGXFSZ, SIG_IGN);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    m = world_meta(&w, 20, SNAP_DELTA, 10);
    rc = snap_write(dir, &m, &w.hs, NULL, err, sizeof(err));
    setrlimit(RLIMIT_FSIZE, &old);
    cr_assert_eq(rc, -EFBIG, "rc %d %s", rc, err);
    cr_assert_not_null(strstr(err, "write"), "the failed step is named: %s", err);
    cr_assert_eq(count_files(dir), 1, "the temp file is gone, the full stays");
    hashes_copy(&w, after);
    cr_assert(!memcmp(before, after, sizeof(before)), "hashes changed by a failed write");
    rm_dir(dir);
}

/* ---- prune ---- */

Test(snap, prune_keeps_the_chain)
{
    char *dir = tmp_dir(), err[1024], p[600];
    struct world w;

    world_init(&w, 2);
    put_snap(dir, &w, 10, SNAP_FULL, 0);
    put_snap(dir, &w, 20, SNAP_DELTA, 10);
    put_snap(dir, &w, 30, SNAP_FULL, 0);
    put_snap(dir, &w, 40, SNAP_DELTA, 30);
    snprintf(p, sizeof(p), "%s/snap-00000000000000000015.delta.tmp.123", dir);
    store(p, "x", 1);
    snprintf(p, sizeof(p), "%s/snap-00000000000000000045.delta.tmp.9", dir);
    store(p, "x", 1);
    snprintf(p, sizeof(p), "%s/notes.txt", dir);
    store(p, "x", 1);

    cr_assert_eq(snap_prune(dir, 35), -ENOENT, "no full at 35: nothing removed");
    cr_assert_eq(count_files(dir), 7);
    cr_assert_eq(snap_prune(dir, 30), 3);
    cr_assert_eq(count_files(dir), 7, "4 kept and 3 spares");
    for (int i = 0; i < 3; i++) {
        struct stat st;
        snprintf(p, sizeof(p), "%s/spare.%d", dir, i);
        cr_assert(stat(p, &st) == 0 && st.st_size > 0, "spare.%d is there, not emptied (the "
                  "same session's: the next write goes over it)", i);
    }
    cr_assert(file_exists(dir, "snap-00000000000000000030.full"));
    cr_assert(file_exists(dir, "snap-00000000000000000040.delta"));
    cr_assert(file_exists(dir, "snap-00000000000000000045.delta.tmp.9"));
    cr_assert(file_exists(dir, "notes.txt"));
    expect_chain(dir, (uint64_t[]){ 30, 40 }, 2, "after prune", err, sizeof(err));
    cr_assert_eq(snap_prune(dir, 30), 0);
    rm_dir(dir);
}

/* snap_retire, as the supervisor uses it on a directory it recycles (empty): any file becomes
 * an empty spare (same inode), a spare is emptied, and which names are spares. Without
 * empty (a prune of the same session's chain) the contents stay. */
Test(snap, retire_makes_empty_spares_and_leaves_spares)
{
    char *dir = tmp_dir(), p[600];
    struct stat before, after;

    cr_assert(snap_is_spare("spare.0") && snap_is_spare("spare.11"));
    cr_assert(!snap_is_spare("spare.12") && !snap_is_spare("spare.01") &&
              !snap_is_spare("spare.") && !snap_is_spare("spare.-1") &&
              !snap_is_spare("spare.1x") && !snap_is_spare("snap-00000000000000000001.full"));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    cr_assert(dfd >= 0);
    snprintf(p, sizeof(p), "%s/events-00000000000000000001.log", dir);
    int fd = open(p, O_WRONLY | O_CREAT, 0644);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, "some events", 11), 11);
    close(fd);
    cr_assert_eq(stat(p, &before), 0);
    cr_assert_eq(snap_retire(dfd, "events-00000000000000000001.log", 0), 0);
    cr_assert(!file_exists(dir, "events-00000000000000000001.log"));
    snprintf(p, sizeof(p), "%s/spare.0", dir);
    cr_assert_eq(stat(p, &after), 0);
    cr_assert(after.st_ino == before.st_ino && after.st_size == 11, "the same inode, as it was");
    cr_assert_eq(snap_retire(dfd, "spare.0", 1), 0, "a spare stays, emptied");
    cr_assert_eq(stat(p, &after), 0);
    cr_assert(after.st_ino == before.st_ino && after.st_size == 0, "the same inode, emptied");
    cr_assert(file_exists(dir, "spare.0") && !file_exists(dir, "spare.1"));
    snprintf(p, sizeof(p), "%s/other", dir);
    store(p, "more", 4);
    cr_assert_eq(snap_retire(dfd, "other", 1), 0);
    snprintf(p, sizeof(p), "%s/spare.1", dir);
    cr_assert(stat(p, &after) == 0 && after.st_size == 0, "retired and emptied");
    static char big[100 * 1024];
    snprintf(p, sizeof(p), "%s/big", dir);
    store(p, big, sizeof(big));
    cr_assert_eq(snap_retire(dfd, "big", 0), 0);
    snprintf(p, sizeof(p), "%s/spare.2", dir);
    cr_assert(stat(p, &after) == 0 && after.st_size == 0, "over 64 KiB: emptied all the same");
    cr_assert_eq(snap_retire(dfd, "no-such-file", 1), 0, "gone already");
    close(dfd);
    rm_dir(dir);
}

/* By name, without reading the directory: that one file becomes a spare, from the slot the
 * caller believes free on (and past a taken one); the rest of the chain stays. */
Test(snap, retire_one_by_name)
{
    char *dir = tmp_dir(), p[600], name[64];
    struct stat before, after;

    snap_name(name, sizeof(name), 7, SNAP_FULL);
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    store(p, "old full", 8);
    cr_assert_eq(stat(p, &before), 0);
    snap_name(name, sizeof(name), 9, SNAP_FULL);
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    store(p, "new full", 8);
    snprintf(p, sizeof(p), "%s/spare.1", dir);
    store(p, "", 0);
    cr_assert_eq(snap_retire_one(dir, 7, SNAP_FULL, 1), 0);
    cr_assert(!file_exists(dir, "snap-00000000000000000007.full"));
    cr_assert(file_exists(dir, "snap-00000000000000000009.full"), "the newer one stays");
    snprintf(p, sizeof(p), "%s/spare.2", dir);
    cr_assert_eq(stat(p, &after), 0, "spare.1 was taken: spare.2");
    cr_assert(after.st_ino == before.st_ino && after.st_size == 8, "the same inode, as it was");
    cr_assert_eq(snap_retire_one(dir, 7, SNAP_FULL, 0), 0, "gone already");
    cr_assert(!file_exists(dir, "spare.0") && !file_exists(dir, "spare.3"));
    rm_dir(dir);
}

/* What a prune retires, the next snapshot written takes over: the same inode, the new
 * contents, loadable; past 12 spares, retired files are removed. */
Test(snap, written_snapshots_reuse_spares)
{
    char *dir = tmp_dir(), err[1024], p[600];
    struct world w;
    struct stat spare, written;

    world_init(&w, 2);
    for (uint64_t pos = 1; pos <= 15; pos++)
        put_snap(dir, &w, pos, pos == 1 ? SNAP_FULL : SNAP_DELTA, pos - 1);
    put_snap(dir, &w, 16, SNAP_FULL, 0);
    cr_assert_eq(snap_prune(dir, 16), 15);
    cr_assert_eq(count_files(dir), 13, "the full and 12 spares; 3 files removed");
    snprintf(p, sizeof(p), "%s/spare.11", dir);
    cr_assert_eq(stat(p, &spare), 0);
    put_snap(dir, &w, 17, SNAP_DELTA, 16);
    snprintf(p, sizeof(p), "%s/snap-00000000000000000017.delta", dir);
    cr_assert_eq(stat(p, &written), 0);
    cr_assert_eq(written.st_ino, spare.st_ino, "the delta was written over spare.11, the top");
    cr_assert(!file_exists(dir, "spare.11") && file_exists(dir, "spare.10"));
    /* told there are 3 (spare.0-2), the writer takes spare.2, here longer than what goes
     * over it: the file is cut to its own length (and loads) */
    snprintf(p, sizeof(p), "%s/spare.2", dir);
    static char junk[100 * 1024];
    memset(junk, 0x5a, sizeof(junk));
    store(p, junk, sizeof(junk));
    cr_assert_eq(stat(p, &spare), 0);
    snap_set_spares(3);
    put_snap(dir, &w, 18, SNAP_DELTA, 17);
    snap_set_spares(-1);
    snprintf(p, sizeof(p), "%s/snap-00000000000000000018.delta", dir);
    cr_assert_eq(stat(p, &written), 0);
    cr_assert_eq(written.st_ino, spare.st_ino, "the delta was written over spare.2");
    cr_assert_lt(written.st_size, (off_t)sizeof(junk), "cut to its own length");
    expect_chain(dir, (uint64_t[]){ 16, 17, 18 }, 3, "on spares", err, sizeof(err));
    rm_dir(dir);
}

/* The supervisor hands the next writer a full it no longer needs (snap_set_reuse): the new
 * file is written over that one (the same inode, nothing created, no spare taken), loads,
 * and the hand-over is used once; a full that is gone already (a prune retired it) sends
 * the writer to the spares as before. */
Test(snap, a_full_handed_on_is_written_over)
{
    char *dir = tmp_dir(), err[1024], p[600];
    struct world w;
    struct stat old, spare, written;

    world_init(&w, 2);
    put_snap(dir, &w, 5, SNAP_FULL, 0);
    put_snap(dir, &w, 6, SNAP_FULL, 0);
    snprintf(p, sizeof(p), "%s/spare.0", dir);
    store(p, "", 0);
    cr_assert_eq(stat(p, &spare), 0);
    snprintf(p, sizeof(p), "%s/snap-00000000000000000005.full", dir);
    cr_assert_eq(stat(p, &old), 0);
    snap_set_spares(1);
    snap_set_reuse(5);
    put_snap(dir, &w, 7, SNAP_FULL, 0);
    snprintf(p, sizeof(p), "%s/snap-00000000000000000007.full", dir);
    cr_assert_eq(stat(p, &written), 0);
    cr_assert_eq(written.st_ino, old.st_ino, "written over the full handed on");
    cr_assert(!file_exists(dir, "snap-00000000000000000005.full"));
    cr_assert(file_exists(dir, "spare.0"), "the spare is still there");
    expect_chain(dir, (uint64_t[]){ 7 }, 1, "over the old full", err, sizeof(err));

    /* used once: the next write takes the spare */
    put_snap(dir, &w, 8, SNAP_DELTA, 7);
    snprintf(p, sizeof(p), "%s/snap-00000000000000000008.delta", dir);
    cr_assert_eq(stat(p, &written), 0);
    cr_assert_eq(written.st_ino, spare.st_ino, "then the spare");

    /* handed on but gone: a spare, else a new file */
    snap_set_reuse(5);
    put_snap(dir, &w, 9, SNAP_DELTA, 8);
    expect_chain(dir, (uint64_t[]){ 7, 8, 9 }, 3, "after a missing hand-over", err, sizeof(err));
    cr_assert(file_exists(dir, "snap-00000000000000000006.full"), "nothing else was touched");

    /* another session's file of that name (a writer outliving its session, in a directory
     * someone else has now) is left where it was */
    struct snap_meta m = world_meta(&w, 6, SNAP_FULL, 0);
    m.session_id = 78;
    snprintf(p, sizeof(p), "%s/snap-00000000000000000006.full", dir);
    unlink(p);
    write_ok(dir, &m, NULL, NULL);
    cr_assert_eq(stat(p, &old), 0);
    snap_set_reuse(6);
    put_snap(dir, &w, 10, SNAP_DELTA, 9);
    snap_set_spares(-1);
    cr_assert_eq(stat(p, &written), 0, "another session's file stays under its name");
    cr_assert_eq(written.st_ino, old.st_ino);
    cr_assert_eq(count_named_like(dir, ".tmp"), 0, "no temp file left");
    expect_chain(dir, (uint64_t[]){ 7, 8, 9, 10 }, 4, "after a refused hand-over", err,
                 sizeof(err));

    /* The hand-over takes its new name before it is written: a write that fails leaves
     * nothing under that name (nor under the old one: it was given up). */
    struct rlimit lim, was;
    int rc;
    w.a_len = 16;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &was), 0);
    lim = was;
    lim.rlim_cur = 8192;
    signal(SIGXFSZ, SIG_IGN);
    snap_set_reuse(7);
    m = world_meta(&w, 11, SNAP_FULL, 0);
    fill_random(w.a, 16 * PG, 3);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    rc = snap_write(dir, &m, NULL, NULL, err, sizeof(err));
    setrlimit(RLIMIT_FSIZE, &was);
    cr_assert_eq(rc, -EFBIG, "rc %d %s", rc, err);
    cr_assert(strstr(err, "snap-00000000000000000011.full"), "names the file: %s", err);
    cr_assert(!file_exists(dir, "snap-00000000000000000011.full"), "nothing under the new name");
    cr_assert(!file_exists(dir, "snap-00000000000000000007.full"), "the old name was given up");
    cr_assert_eq(count_named_like(dir, ".tmp"), 0, "no temp file left");
    signal(SIGXFSZ, SIG_DFL);

    /* A file already under the new name (another writer's of that position, perhaps
     * durable) is never replaced by a hand-over still to be written: the hand-over stays
     * where it was, and the write takes a temp name. */
    w.a_len = 2;
    put_snap(dir, &w, 12, SNAP_FULL, 0);
    put_snap(dir, &w, 13, SNAP_FULL, 0);
    snprintf(p, sizeof(p), "%s/snap-00000000000000000012.full", dir);
    cr_assert_eq(stat(p, &old), 0);
    snprintf(p, sizeof(p), "%s/snap-00000000000000000013.full", dir);
    cr_assert_eq(stat(p, &spare), 0);
    snap_set_reuse(12);
    put_snap(dir, &w, 13, SNAP_FULL, 0);
    cr_assert_eq(stat(p, &written), 0);
    cr_assert_neq(written.st_ino, old.st_ino, "the hand-over did not take the name");
    cr_assert(file_exists(dir, "snap-00000000000000000012.full"), "the hand-over stays");
    cr_assert_eq(count_named_like(dir, ".tmp"), 0, "no temp file left");
    expect_chain(dir, (uint64_t[]){ 13 }, 1, "written again by its temp name", err, sizeof(err));
    rm_dir(dir);
}
