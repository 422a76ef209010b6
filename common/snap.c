/* snap.c - see snap.h. */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>
#define ZSTD_STATIC_LINKING_ONLY   /* ZSTD_initStaticCCtx: one context in place, see page_cctx */
#include <zstd.h>

#include "snap.h"

#define WBUF_CAP (256u * 1024u)
#define SPARE_KEEP_BYTES (64 * 1024)   /* snap_retire: a spare this small keeps its contents */
/* Store a page compressed only when that saves at least this much of it. */
#define ZSTD_MAX_STORED (SNAP_PAGE - SNAP_PAGE / 8)

static const uint8_t hdr_magic[8] = { 'C', 'S', 'N', 'A', 'P', 0, 0, 1 };
static const uint8_t trl_magic[8] = { 'C', 'S', 'N', 'A', 'P', 'E', 'N', 'D' };

static int snap_level = 1;
static int snap_sync = 1;   /* snap_set_sync */
static int snap_spares = -1;   /* snap_set_spares */

void snap_set_spares(int n)
{
    snap_spares = n;
}

static uint64_t snap_reuse;   /* snap_set_reuse */

void snap_set_reuse(uint64_t position)
{
    snap_reuse = position;
}

/* snap_keep_buffers: the writer's buffers, kept between files. */
enum { SCRATCH_HASHES, SCRATCH_WRITE, SCRATCH_ZSTD, SCRATCHES };
static int keep_buffers;
static struct { void *p; size_t cap; } scratch_kept[SCRATCHES];
static XXH3_state_t *xs_kept;

void snap_keep_buffers(int on)
{
    keep_buffers = on;
}

static void *scratch_get(int which, size_t need)
{
    if (!keep_buffers)
        return malloc(need);
    if (scratch_kept[which].cap < need) {
        free(scratch_kept[which].p);   /* its contents are of no use: no realloc copy */
        scratch_kept[which].p = malloc(need);
        scratch_kept[which].cap = scratch_kept[which].p ? need : 0;
    }
    return scratch_kept[which].p;
}

static void scratch_put(void *p)
{
    if (!keep_buffers)
        free(p);
}

static XXH3_state_t *xs_get(void)
{
    if (!keep_buffers)
        return XXH3_createState();
    if (!xs_kept)
        xs_kept = XXH3_createState();
    return xs_kept;
}

static void xs_put(XXH3_state_t *xs)
{
    if (!keep_buffers)
        XXH3_freeState(xs);
}

/* A written page's encoding, kept (with the writer's buffers) for the next file: a page
 * whose hash did not change is written as it was encoded then instead of being compressed
 * again. A small state is written full every time, and most of its pages do not move (an
 * app module's data page took 17-26 us to compress, more than the rest of the file). Only
 * for the states a worker writes itself (SNAP_INLINE_PAGES); the bytes are appended, and
 * everything is forgotten when they would pass ENC_BYTES. Matched by content hash, as a
 * delta's unchanged pages are: a forked writer's copy is as good as the worker's. */
#define ENC_PAGES SNAP_INLINE_PAGES
#define ENC_BYTES (24u << 10)   /* under libc's mmap threshold (32 KiB in a worker) */

static struct {
    uint64_t hash[ENC_PAGES];
    uint32_t flags[ENC_PAGES], len[ENC_PAGES], off[ENC_PAGES];
    uint8_t known[ENC_PAGES];
    uint8_t *bytes;
    uint32_t used;
} enc;

static int enc_take(uint64_t g, uint64_t hash, uint32_t *flags, uint32_t *len,
                    const uint8_t **data)
{
    if (g >= ENC_PAGES || !enc.known[g] || enc.hash[g] != hash)
        return 0;
    *flags = enc.flags[g];
    *len = enc.len[g];
    if (*flags == SNAP_REC_ZSTD)
        *data = enc.bytes + enc.off[g];
    return 1;
}

static void enc_note(uint64_t g, uint64_t hash, uint32_t flags, uint32_t len,
                     const uint8_t *data)
{
    if (g >= ENC_PAGES)
        return;
    enc.known[g] = 0;
    if (flags == SNAP_REC_ZSTD) {
        if (!enc.bytes && !(enc.bytes = malloc(ENC_BYTES)))
            return;
        if (len > ENC_BYTES - enc.used) {   /* full of old encodings: start again */
            memset(enc.known, 0, sizeof(enc.known));
            enc.used = 0;
            if (len > ENC_BYTES)
                return;
        }
        memcpy(enc.bytes + enc.used, data, len);
        enc.off[g] = enc.used;
        enc.used += len;
    }
    enc.hash[g] = hash;
    enc.flags[g] = flags;
    enc.len[g] = len;
    enc.known[g] = 1;
}

void snap_set_sync(int on)
{
    snap_sync = on;
}

void snap_set_compression(int level)
{
    snap_level = level;
}

/* The writer compresses one 4 KiB page at a time, with one context kept in place for the
 * process: creating and freeing a context per snapshot (an mmap of its tables, their page
 * faults, a munmap and its TLB shootdown) cost more than compressing a small state's pages
 * (perf, 3,000 sessions snapshotting: a fifth of the workers' time). Its tables are sized for
 * a page (4 KiB window, 1 Ki-entry hash and chain tables): about 45 KiB, resident once a
 * process has written a snapshot (the same files for any decoder). NULL when this
 * zstd wants more room than we keep (the writer then makes a context per file). */
#define CCTX_ROOM (64u * 1024u)

static ZSTD_CCtx *page_cctx(int level)
{
    static union { max_align_t align; uint8_t b[CCTX_ROOM]; } room;
    static ZSTD_CCtx *cctx;
    static int cctx_level;

    if (cctx && cctx_level == level)
        return cctx;
    ZSTD_compressionParameters cp = ZSTD_getCParams(level, SNAP_PAGE, 0);
    cp.windowLog = 12;
    cp.chainLog = cp.chainLog < 10 ? cp.chainLog : 10;
    cp.hashLog = cp.hashLog < 10 ? cp.hashLog : 10;
    cctx = NULL;
    if (ZSTD_estimateCCtxSize_usingCParams(cp) > sizeof(room.b) ||
        !(cctx = ZSTD_initStaticCCtx(room.b, sizeof(room.b))))
        return NULL;
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, (int)cp.windowLog);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_chainLog, (int)cp.chainLog);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, (int)cp.hashLog);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_searchLog, (int)cp.searchLog);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_minMatch, (int)cp.minMatch);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_targetLength, (int)cp.targetLength);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_strategy, (int)cp.strategy);
    cctx_level = level;
    return cctx;
}

/* ---- layout fingerprint ---- */

#define FP_MAX_OBJECTS 256

struct fp_scan {
    uint64_t v[2 * FP_MAX_OBJECTS];   /* per loaded object: build id, base address */
    int n, overflow;
};

/* The GNU build id of a loaded object, hashed (0 if it has none). */
static uint64_t build_id(const struct dl_phdr_info *info)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
        const uint8_t *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *n = (const ElfW(Nhdr) *)p;
            const uint8_t *desc = p + sizeof(*n) + ((n->n_namesz + 3) & ~3u);
            if (n->n_type == NT_GNU_BUILD_ID)
                return XXH3_64bits(desc, n->n_descsz);
            p = desc + ((n->n_descsz + 3) & ~3u);
        }
    }
    return 0;
}

static int fp_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct fp_scan *sc = arg;

    (void)size;
    /* The vDSO is the kernel's: nothing an app keeps points into it. */
    if (!strncmp(info->dlpi_name, "linux-vdso", 10) || !strncmp(info->dlpi_name, "linux-gate", 10))
        return 0;
    if (sc->n == FP_MAX_OBJECTS) {
        sc->overflow = 1;
        return 1;
    }
    uint64_t id = build_id(info);
    if (!id)   /* no build id: its name at least */
        id = XXH3_64bits(info->dlpi_name, strlen(info->dlpi_name));
    sc->v[2 * sc->n] = id;
    sc->v[2 * sc->n + 1] = info->dlpi_addr;
    sc->n++;
    return 0;
}

int snap_layout_fingerprint(uint64_t arena_base, uint8_t out[32], char *err, size_t errlen)
{
    struct fp_scan *sc = calloc(1, sizeof(*sc));

    if (!sc) {
        snprintf(err, errlen, "layout fingerprint: out of memory");
        return -ENOMEM;
    }
    dl_iterate_phdr(fp_object, sc);
    if (sc->overflow) {
        snprintf(err, errlen, "more than %d loaded objects: cannot fingerprint the layout",
                 FP_MAX_OBJECTS);
        free(sc);
        return -E2BIG;
    }
    /* two 128-bit hashes of (build ids, load addresses), seeded with the arena base */
    size_t len = (size_t)sc->n * 2 * sizeof(uint64_t);
    XXH128_hash_t a = XXH3_128bits_withSeed(sc->v, len, arena_base);
    XXH128_hash_t b = XXH3_128bits_withSeed(sc->v, len, ~arena_base);
    memcpy(out, &a, 16);
    memcpy(out + 16, &b, 16);
    free(sc);
    return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;

    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Append to a "; "-separated list of non-fatal problems. */
static void add_err(char *err, size_t errlen, const char *msg)
{
    size_t n;

    if (!err || !errlen)
        return;
    n = strnlen(err, errlen);
    if (n + 1 >= errlen)
        return;
    snprintf(err + n, errlen - n, "%s%s", n ? "; " : "", msg);
}

static uint64_t region_pages(const struct snap_region *r)
{
    return r->len / SNAP_PAGE;
}

static uint64_t total_pages(const struct snap_meta *m)
{
    uint64_t t = 0;

    for (uint32_t r = 0; r < m->nregions; r++)
        t += region_pages(&m->regions[r]);   /* each < 2^52: no overflow */
    return t;
}

/* Consistency of metadata, shared by writer (-EINVAL) and reader (-EBADMSG). */
static int check_meta(const struct snap_meta *m, char *why, size_t whylen)
{
    if (m->kind != SNAP_FULL && m->kind != SNAP_DELTA) {
        set_err(why, whylen, "kind %u is neither full nor delta", m->kind);
        return -1;
    }
    if (m->kind == SNAP_FULL && m->base_position != 0) {
        set_err(why, whylen, "full snapshot with base position %llu (want 0)",
                (unsigned long long)m->base_position);
        return -1;
    }
    if (m->kind == SNAP_DELTA && m->base_position >= m->position) {
        set_err(why, whylen, "delta at position %llu on base %llu: the base must be older",
                (unsigned long long)m->position, (unsigned long long)m->base_position);
        return -1;
    }
    if (m->nregions > SNAP_MAX_REGIONS) {
        set_err(why, whylen, "%u regions (at most %d)", m->nregions, SNAP_MAX_REGIONS);
        return -1;
    }
    for (uint32_t r = 0; r < m->nregions; r++) {
        const struct snap_region *a = &m->regions[r];

        if (a->addr % SNAP_PAGE || a->len % SNAP_PAGE || a->len > UINT64_MAX - a->addr) {
            set_err(why, whylen, "region %u [%#llx, +%#llx) is not page-aligned or wraps", r,
                    (unsigned long long)a->addr, (unsigned long long)a->len);
            return -1;
        }
        for (uint32_t s = 0; s < r; s++) {
            const struct snap_region *b = &m->regions[s];

            if (a->len && b->len && a->addr < b->addr + b->len && b->addr < a->addr + a->len) {
                set_err(why, whylen, "regions %u and %u overlap", s, r);
                return -1;
            }
        }
    }
    return 0;
}

static void hdr_encode(uint8_t *h, const struct snap_meta *m, uint32_t flags, uint64_t nrecords)
{
    memset(h, 0, SNAP_HDR_LEN);
    memcpy(h, hdr_magic, 8);
    put32(h + 8, SNAP_VERSION);
    put32(h + 12, SNAP_HDR_LEN);
    put32(h + 16, SNAP_PAGE);
    put32(h + 20, m->kind);
    put32(h + 24, flags);
    put32(h + 28, m->nregions);
    put64(h + 32, m->session_id);
    put64(h + 40, m->position);
    put64(h + 48, m->base_position);
    put64(h + 56, m->seq[0]);
    put64(h + 64, m->seq[1]);
    put64(h + 72, m->out_no[0]);
    put64(h + 80, m->out_no[1]);
    memcpy(h + 88, m->fingerprint, 32);
    put64(h + 120, nrecords);
    for (uint32_t r = 0; r < m->nregions; r++) {
        put64(h + 128 + 16 * r, m->regions[r].addr);
        put64(h + 136 + 16 * r, m->regions[r].len);
    }
    put32(h + 256, m->max_message);
    put64(h + 264, XXH3_64bits(h, 264));
}

/* Decode and check a header; have = bytes available (the file size). */
static int hdr_decode(const uint8_t *h, uint64_t have, struct snap_meta *m, uint64_t *nrecords,
                      char *why, size_t whylen)
{
    char sub[160];
    uint32_t flags;

    if (have < SNAP_HDR_LEN + SNAP_TRAILER_LEN) {
        set_err(why, whylen, "truncated: %llu bytes, less than a header and a trailer",
                (unsigned long long)have);
        return -EBADMSG;
    }
    if (memcmp(h, hdr_magic, 8)) {
        set_err(why, whylen, "bad magic: not a snapshot file");
        return -EBADMSG;
    }
    if (get64(h + 264) != XXH3_64bits(h, 264)) {
        set_err(why, whylen, "header checksum mismatch: header corrupt");
        return -EBADMSG;
    }
    if (get32(h + 8) != SNAP_VERSION) {
        set_err(why, whylen, "unsupported version %u (this build reads %u)", get32(h + 8),
                SNAP_VERSION);
        return -EBADMSG;
    }
    if (get32(h + 12) != SNAP_HDR_LEN || get32(h + 16) != SNAP_PAGE) {
        set_err(why, whylen, "header length %u / page size %u (want %u / %u)", get32(h + 12),
                get32(h + 16), SNAP_HDR_LEN, SNAP_PAGE);
        return -EBADMSG;
    }
    flags = get32(h + 24);
    if (flags & ~SNAP_HF_ZSTD) {
        set_err(why, whylen, "unknown header flags %#x", flags);
        return -EBADMSG;
    }
    memset(m, 0, sizeof(*m));
    m->kind = get32(h + 20);
    m->nregions = get32(h + 28);
    m->session_id = get64(h + 32);
    m->position = get64(h + 40);
    m->base_position = get64(h + 48);
    m->seq[0] = get64(h + 56);
    m->seq[1] = get64(h + 64);
    m->out_no[0] = get64(h + 72);
    m->out_no[1] = get64(h + 80);
    memcpy(m->fingerprint, h + 88, 32);
    m->max_message = get32(h + 256);
    if (get32(h + 260)) {
        set_err(why, whylen, "reserved header bytes 260..263 are not zero");
        return -EBADMSG;
    }
    *nrecords = get64(h + 120);
    for (uint32_t r = 0; r < SNAP_MAX_REGIONS; r++) {
        uint64_t addr = get64(h + 128 + 16 * r), len = get64(h + 136 + 16 * r);

        if (r < m->nregions && r < SNAP_MAX_REGIONS) {
            m->regions[r].addr = addr;
            m->regions[r].len = len;
        } else if (addr || len) {
            set_err(why, whylen, "unused region slot %u is not zero", r);
            return -EBADMSG;
        }
    }
    if (check_meta(m, sub, sizeof(sub))) {
        set_err(why, whylen, "bad header: %s", sub);
        return -EBADMSG;
    }
    if (*nrecords > total_pages(m) ||
        (m->kind == SNAP_FULL && *nrecords != total_pages(m))) {
        set_err(why, whylen, "%llu page records for %llu pages in a %s snapshot",
                (unsigned long long)*nrecords, (unsigned long long)total_pages(m),
                m->kind == SNAP_FULL ? "full" : "delta");
        return -EBADMSG;
    }
    return 0;
}

/* ---- writer ---- */

/* A buffered writer that hashes what goes through it (Redis's rio, in small). */
struct wbuf {
    int fd;
    uint8_t *buf;
    size_t used, cap;
    uint64_t bytes;
    XXH3_state_t *xs;
};

static int wbuf_flush(struct wbuf *w)
{
    size_t off = 0;

    while (off < w->used) {
        ssize_t n = write(w->fd, w->buf + off, w->used - off);

        if (n == -1) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += (size_t)n;
    }
    w->used = 0;
    return 0;
}

/* Buffer without hashing (the trailer). */
static int wbuf_raw(struct wbuf *w, const void *p, size_t len)
{
    const uint8_t *s = p;

    w->bytes += len;
    while (len) {
        size_t k = w->cap - w->used;
        int rc;

        if (k > len)
            k = len;
        memcpy(w->buf + w->used, s, k);
        w->used += k;
        s += k;
        len -= k;
        if (w->used == w->cap && (rc = wbuf_flush(w)))
            return rc;
    }
    return 0;
}

static int wbuf_put(struct wbuf *w, const void *p, size_t len)
{
    XXH3_64bits_update(w->xs, p, len);
    return wbuf_raw(w, p, len);
}

static int page_is_zero(const uint8_t *p)
{
    return p[0] == 0 && !memcmp(p, p + 1, SNAP_PAGE - 1);
}

static int must_write(const struct snap_meta *m, const struct snap_hashes *hs, uint32_t r,
                      uint64_t i, uint64_t h)
{
    uint64_t old;

    if (m->kind == SNAP_FULL || !hs || !hs->page[r] || i >= hs->npages[r])
        return 1;
    old = hs->page[r][i];
    return old == 0 || old != h;
}

int snap_write(const char *dir, const struct snap_meta *m, struct snap_hashes *hashes,
               struct snap_stats *stats, char *err, size_t errlen)
{
    return snap_write_at(-1, dir, m, hashes, stats, err, errlen);
}

/* Files of snapshots no longer needed are kept as "spare.N" (at most SNAP_SPARES in a
 * directory) and the next snapshot written there overwrites one, instead of every snapshot
 * creating an inode and every prune freeing one: on ext4, allocating inodes among many
 * recently freed ones was a quarter of a busy worker's CPU. */
#define SNAP_SPARES 12   /* a chain is a full and up to 8 deltas (supervisor/recovery.c) */

static void spare_name(char *buf, size_t len, int i)
{
    snprintf(buf, len, "spare.%d", i);
}

int snap_is_spare(const char *name)
{
    char *end;
    long i;

    if (strncmp(name, "spare.", 6) != 0 || name[6] < '0' || name[6] > '9')
        return 0;
    i = strtol(name + 6, &end, 10);
    return !*end && i < SNAP_SPARES && (i == 0 || name[6] != '0');
}

static int empty_file(int dfd, const char *name)
{
    int fd = openat(dfd, name, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);

    if (fd == -1)
        return -errno;
    close(fd);
    return 0;
}

/* snap_retire and snap_retire_one: name in dfd, or in dir when dir is not NULL (dfd is
 * AT_FDCWD then); the spare slots are tried from `first` on. */
static int retire(int dfd, const char *dir, const char *name, int empty, int first)
{
    char from[PATH_MAX], spare[PATH_MAX];
    int n;

    n = dir ? snprintf(from, sizeof(from), "%s/%s", dir, name)
            : snprintf(from, sizeof(from), "%s", name);
    if (n < 0 || (size_t)n >= sizeof(from))
        return -ENAMETOOLONG;
    if (snap_is_spare(name))
        return empty ? empty_file(dfd, from) : 0;
    for (int k = 0; k < SNAP_SPARES; k++) {
        int i = (first + k) % SNAP_SPARES;
        char base[16];
        spare_name(base, sizeof(base), i);
        if (dir)
            snprintf(spare, sizeof(spare), "%s/%s", dir, base);
        else
            snprintf(spare, sizeof(spare), "%s", base);
        /* Not emptied when small: freeing its blocks would be a discard the caller waits
         * for on a filesystem mounted with -o discard (the supervisor's loop stalled in it,
         * 19% of the time with 3,000 sessions snapshotting); the writer overwrites it. A
         * large one is emptied all the same: spares must not double a session's disk. */
        if (renameat2(dfd, from, dfd, spare, RENAME_NOREPLACE) == 0) {
            struct stat st;
            if (!empty && fstatat(dfd, spare, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                st.st_size <= SPARE_KEEP_BYTES)
                return 0;
            return empty_file(dfd, spare);
        }
        if (errno != EEXIST)
            break;   /* ENOENT: gone already; anything else: remove it instead */
    }
    return unlinkat(dfd, from, 0) == 0 || errno == ENOENT ? 0 : -errno;
}

int snap_retire(int dfd, const char *name, int empty)
{
    return retire(dfd, NULL, name, empty, 0);
}

int snap_retire_one(const char *dir, uint64_t position, uint32_t kind, int first_spare)
{
    char name[64];

    snap_name(name, sizeof(name), position, kind);
    return retire(AT_FDCWD, dir, name, 0, first_spare < 0 ? 0 : first_spare % SNAP_SPARES);
}

/* A spare renamed to tmp and opened for writing, or -1 when none is there. Not emptied: the
 * writer writes over it and cuts it to its new length at the end (the same blocks again for
 * a file of about the same size, so nothing is freed or discarded). Spares fill from spare.0
 * up, so the highest one believed there (snap_set_spares) is taken first: one rename when
 * the count is right. */
static int take_spare(int dfd, const char *tmp)
{
    char spare[16];
    int top = snap_spares < 0 || snap_spares > SNAP_SPARES ? SNAP_SPARES : snap_spares;

    for (int i = top - 1; i >= 0; i--) {
        spare_name(spare, sizeof(spare), i);
        if (renameat(dfd, spare, dfd, tmp) == -1)
            continue;   /* not there, or taken by another writer first */
        int fd = openat(dfd, tmp, O_WRONLY | O_CLOEXEC);
        if (fd == -1)
            unlinkat(dfd, tmp, 0);
        return fd;
    }
    return -1;
}

/* The full the supervisor gave up (snap_set_reuse), opened for writing and renamed to the
 * new snapshot's name, or -1 when none was given or it is not there (retired by a prune).
 * One rename instead of the supervisor's retire, the writer's take_spare and its rename of
 * the temp file: the new name is in place before the file is written, which is safe because
 * nothing trusts a snapshot by its name alone (the supervisor only after this writer's
 * SNAP_DONE and a sync, cessna-replay only a file whose checksum holds), and the supervisor
 * hands a file on to one request only. The new name must be free (RENAME_NOREPLACE): a file
 * there is another writer's of the same position (a writer outliving its worker), perhaps
 * durable, and stays; this write then takes the temp path. Its header must name this session
 * and that position: a writer outliving its session may be in a directory someone else has
 * now, whose file of that name is not to be taken. *st: the file as taken (its identity,
 * its old length). */
static int take_reuse(int dfd, const char *name, uint64_t session_id, struct stat *st)
{
    uint8_t h[SNAP_HDR_LEN];
    char old[64];
    uint64_t pos = snap_reuse;

    if (!pos)
        return -1;
    snap_name(old, sizeof(old), pos, SNAP_FULL);
    snap_reuse = 0;
    int fd = openat(dfd, old, O_RDWR | O_CLOEXEC);
    if (fd == -1)
        return -1;
    if (pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) || memcmp(h, hdr_magic, 8) != 0 ||
        get64(h + 32) != session_id || get64(h + 40) != pos || fstat(fd, st) == -1 ||
        renameat2(dfd, old, dfd, name, RENAME_NOREPLACE) == -1) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A failed write into a handed-on file: its new name goes if it still names that file
 * (ours, as taken). openat and fstat: a worker's filter refuses a stat by path. */
static void drop_in_place(int dfd, const char *name, const struct stat *ours)
{
    struct stat named;
    int nfd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);

    if (nfd == -1)
        return;
    if (fstat(nfd, &named) == 0 && ours->st_ino == named.st_ino && ours->st_dev == named.st_dev)
        unlinkat(dfd, name, 0);
    close(nfd);
}

int snap_write_at(int dirfd, const char *dir, const struct snap_meta *m,
                  struct snap_hashes *hashes, struct snap_stats *stats, char *err, size_t errlen)
{
    char why[160], name[64], tmp[96];
    uint8_t hdr[SNAP_HDR_LEN], trl[SNAP_TRAILER_LEN], rec[SNAP_REC_HDR_LEN];
    struct stat st;   /* a reused file as taken */
    uint64_t first[SNAP_MAX_REGIONS] = { 0 }, total, nrec = 0, *newh = NULL;
    struct wbuf w = { .fd = -1 };
    ZSTD_CCtx *cctx = NULL, *own_cctx = NULL;
    uint8_t *zbuf = NULL;
    size_t zcap = ZSTD_compressBound(SNAP_PAGE);
    int level = snap_level, dfd = -1, created = 0, reused = 0, in_place = 0, use_enc, rc;
    const char *step, *file = NULL;   /* what failed, and in which file of dir */

    set_err(err, errlen, "%s", "");
    if (check_meta(m, why, sizeof(why))) {
        set_err(err, errlen, "meta: %s", why);
        return -EINVAL;
    }

    /* The new hash of every page: which pages go in, and the table once durable. */
    total = total_pages(m);
    if (total > SIZE_MAX / sizeof(uint64_t)) {
        set_err(err, errlen, "meta: %llu pages", (unsigned long long)total);
        return -EINVAL;
    }
    newh = scratch_get(SCRATCH_HASHES, total ? total * sizeof(uint64_t) : 1);
    if (!newh) {
        rc = -ENOMEM;
        step = "malloc";
        goto fail;
    }
    for (uint64_t r = 0, at = 0; r < m->nregions; r++) {
        const uint8_t *base = (const uint8_t *)(uintptr_t)m->regions[r].addr;
        uint64_t np = region_pages(&m->regions[r]);

        first[r] = at;
        for (uint64_t i = 0; i < np; i++, at++) {
            newh[at] = XXH3_64bits(base + i * SNAP_PAGE, SNAP_PAGE);
            nrec += must_write(m, hashes, (uint32_t)r, i, newh[at]);
        }
    }

    snap_name(name, sizeof(name), m->position, m->kind);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", name, (int)getpid());
    dfd = dirfd >= 0 ? dirfd : open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd == -1) {
        rc = -errno;
        step = "open dir";
        goto fail;
    }
    w.fd = take_reuse(dfd, name, m->session_id, &st);
    in_place = w.fd != -1;
    file = in_place ? name : tmp;
    if (w.fd == -1)
        w.fd = take_spare(dfd, tmp);
    reused = w.fd != -1;
    if (w.fd == -1)
        w.fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w.fd == -1) {
        rc = -errno;
        step = "open";
        goto fail;
    }
    created = 1;
    /* No bigger than the file can be: a small state's buffer then comes from the heap, not
     * from an mmap whose munmap (after the write) costs TLB shootdowns and page faults on
     * every snapshot. */
    w.cap = SNAP_HDR_LEN + SNAP_TRAILER_LEN + nrec * (SNAP_REC_HDR_LEN + SNAP_PAGE);
    w.cap = w.cap < WBUF_CAP ? w.cap : WBUF_CAP;
    w.buf = scratch_get(SCRATCH_WRITE, w.cap);
    w.xs = xs_get();
    if (level) {
        cctx = page_cctx(level);
        if (!cctx)
            cctx = own_cctx = ZSTD_createCCtx();
        zbuf = scratch_get(SCRATCH_ZSTD, zcap);
    }
    if (!w.buf || !w.xs || (level && (!cctx || !zbuf))) {
        rc = -ENOMEM;
        step = "malloc";
        goto fail;
    }
    XXH3_64bits_reset(w.xs);
    use_enc = keep_buffers && cctx && !own_cctx && total <= ENC_PAGES;

    step = "write";
    hdr_encode(hdr, m, level ? SNAP_HF_ZSTD : 0, nrec);
    if ((rc = wbuf_put(&w, hdr, sizeof(hdr))))
        goto fail;
    for (uint32_t r = 0; r < m->nregions; r++) {
        const uint8_t *base = (const uint8_t *)(uintptr_t)m->regions[r].addr;
        uint64_t np = region_pages(&m->regions[r]);

        for (uint64_t i = 0; i < np; i++) {
            const uint8_t *page = base + i * SNAP_PAGE, *data = page;
            uint32_t flags = SNAP_REC_RAW, len = SNAP_PAGE;

            if (!must_write(m, hashes, r, i, newh[first[r] + i]))
                continue;
            if (use_enc && enc_take(first[r] + i, newh[first[r] + i], &flags, &len, &data)) {
                /* as the last file had it */
            } else if (page_is_zero(page)) {
                flags = SNAP_REC_ZERO;
                len = 0;
            } else if (cctx) {
                size_t cs = own_cctx ? ZSTD_compressCCtx(cctx, zbuf, zcap, page, SNAP_PAGE, level)
                                     : ZSTD_compress2(cctx, zbuf, zcap, page, SNAP_PAGE);

                if (!ZSTD_isError(cs) && cs > 0 && cs <= ZSTD_MAX_STORED) {
                    flags = SNAP_REC_ZSTD;
                    len = (uint32_t)cs;
                    data = zbuf;
                }
                if (use_enc)
                    enc_note(first[r] + i, newh[first[r] + i], flags, len, data);
            }
            put32(rec, r);
            put32(rec + 4, flags);
            put64(rec + 8, i);
            put32(rec + 16, len);
            if ((rc = wbuf_put(&w, rec, sizeof(rec))) || (rc = wbuf_put(&w, data, len)))
                goto fail;
        }
    }
    memcpy(trl, trl_magic, 8);
    put64(trl + 8, nrec);
    put64(trl + 16, w.bytes + SNAP_TRAILER_LEN);
    put64(trl + 24, XXH3_64bits_digest(w.xs));
    if ((rc = wbuf_raw(&w, trl, sizeof(trl))) || (rc = wbuf_flush(&w)))
        goto fail;
    /* A reused file's old tail, if it was longer. Most often it is as long (a small state,
     * the same pages): then no truncate, which costs a filesystem update even for nothing. */
    if (reused && ((!in_place && fstat(w.fd, &st) == -1) || st.st_size > (off_t)w.bytes) &&
        ftruncate(w.fd, (off_t)w.bytes) == -1) {
        rc = -errno;
        step = "truncate";
        goto fail;
    }

    if (snap_sync && fsync(w.fd) == -1) {
        rc = -errno;
        step = "fsync";
        goto fail;
    }
    rc = close(w.fd);
    w.fd = -1;
    if (rc == -1) {
        rc = -errno;
        step = "close";
        goto fail;
    }
    if (!in_place && renameat(dfd, tmp, dfd, name) == -1) {
        rc = -errno;
        step = "rename";
        goto fail;
    }
    created = 0;
    file = name;
    if (snap_sync && fsync(dfd) == -1) {
        /* Not known durable: take it away so no chain is built on it. */
        rc = -errno;
        step = "fsync dir";
        unlinkat(dfd, name, 0);
        goto fail;
    }

    /* Durable: now the hash tables may move on. */
    if (hashes) {
        for (uint32_t r = 0; r < SNAP_MAX_REGIONS; r++) {
            uint64_t np = r < m->nregions ? region_pages(&m->regions[r]) : 0;
            uint64_t keep = np < hashes->npages[r] ? np : hashes->npages[r];

            if (!hashes->page[r])
                continue;
            memcpy(hashes->page[r], newh + first[r], keep * sizeof(uint64_t));
            if (hashes->used[r] > keep)
                memset(hashes->page[r] + keep, 0, (hashes->used[r] - keep) * sizeof(uint64_t));
            hashes->used[r] = keep;
        }
    }
    if (stats) {
        stats->bytes = w.bytes;
        stats->pages_written = nrec;
        stats->pages_total = total;
    }
    rc = 0;
    goto out;

fail:
    set_err(err, errlen, "%s %s%s%s: %s", step, dir, file ? "/" : "", file ? file : "",
            strerror(-rc));
out:
    if (created && in_place)
        drop_in_place(dfd, name, &st);
    else if (created)
        unlinkat(dfd, tmp, 0);
    if (w.fd != -1)
        close(w.fd);
    if (dfd != -1 && dfd != dirfd)
        close(dfd);
    ZSTD_freeCCtx(own_cctx);
    xs_put(w.xs);
    scratch_put(zbuf);
    scratch_put(w.buf);
    scratch_put(newh);
    return rc;
}

/* ---- reader ---- */

/* What a caller of read_snap() requires beyond a valid file. */
struct expect {
    uint32_t kind;                  /* 0: any */
    uint64_t position;              /* checked when kind != 0 */
    const struct snap_meta *prev;   /* non-NULL: must be the next link after prev */
};

/* May m follow prev in a chain? */
static int link_ok(const struct snap_meta *prev, const struct snap_meta *m, char *why,
                   size_t whylen)
{
    if (m->kind != SNAP_DELTA || m->base_position != prev->position) {
        set_err(why, whylen, "broken chain: %s at %llu has base %llu, previous is %llu",
                m->kind == SNAP_DELTA ? "delta" : "full", (unsigned long long)m->position,
                (unsigned long long)m->base_position, (unsigned long long)prev->position);
        return -1;
    }
    if (m->session_id != prev->session_id || m->max_message != prev->max_message ||
        memcmp(m->fingerprint, prev->fingerprint, sizeof(m->fingerprint))) {
        set_err(why, whylen, "broken chain: session or layout fingerprint differs from base %llu",
                (unsigned long long)prev->position);
        return -1;
    }
    for (uint32_t r = 0; r < m->nregions && r < prev->nregions; r++) {
        if (m->regions[r].addr != prev->regions[r].addr) {
            set_err(why, whylen, "broken chain: region %u moved from %#llx to %#llx", r,
                    (unsigned long long)prev->regions[r].addr,
                    (unsigned long long)m->regions[r].addr);
            return -1;
        }
    }
    return 0;
}

static int read_full(int fd, uint8_t *buf, size_t len, off_t at)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, at + (off_t)got);

        if (n == -1) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EBADMSG;    /* the file shrank under us */
        got += (size_t)n;
    }
    return 0;
}

int snap_read_header(int fd, struct snap_meta *m, char *err, size_t errlen)
{
    uint8_t h[SNAP_HDR_LEN];
    struct stat st;
    uint64_t nrecords;
    int rc;

    if (fstat(fd, &st) == -1) {
        set_err(err, errlen, "fstat: %s", strerror(errno));
        return -errno;
    }
    if ((uint64_t)st.st_size >= SNAP_HDR_LEN && (rc = read_full(fd, h, sizeof(h), 0)) < 0) {
        set_err(err, errlen, "read: %s", strerror(-rc));
        return rc;
    }
    return hdr_decode(h, (uint64_t)st.st_size, m, &nrecords, err, errlen);
}

/* Walk the records of a fully read file: structure (pass 0), zstd test-decode (pass 1,
 * after the checksum), or apply to memory (pass 2). */
static int walk_records(const uint8_t *buf, size_t end, const struct snap_meta *m,
                        uint64_t nrec, int pass, ZSTD_DCtx **dctx, char *why, size_t whylen)
{
    uint8_t scratch[SNAP_PAGE];
    size_t off = SNAP_HDR_LEN;
    uint64_t prev_r = 0, prev_i = 0;

    for (uint64_t k = 0; k < nrec; k++) {
        const uint8_t *p = buf + off, *data;
        uint32_t r, flags, len;
        uint64_t i;
        uint8_t *dst;

        if (end - off < SNAP_REC_HDR_LEN) {
            set_err(why, whylen, "truncated: record %llu of %llu starts at %zu, data ends at %zu",
                    (unsigned long long)k, (unsigned long long)nrec, off, end);
            return -EBADMSG;
        }
        r = get32(p);
        flags = get32(p + 4);
        i = get64(p + 8);
        len = get32(p + 16);
        data = p + SNAP_REC_HDR_LEN;
        if (pass == 0) {
            if (r >= m->nregions || i >= region_pages(&m->regions[r])) {
                set_err(why, whylen, "record %llu: page %llu of region %u is outside the regions",
                        (unsigned long long)k, (unsigned long long)i, r);
                return -EBADMSG;
            }
            if (k > 0 && (r < prev_r || (r == prev_r && i <= prev_i))) {
                set_err(why, whylen, "record %llu: page %u/%llu out of order",
                        (unsigned long long)k, r, (unsigned long long)i);
                return -EBADMSG;
            }
            if (!((flags == SNAP_REC_RAW && len == SNAP_PAGE) ||
                  (flags == SNAP_REC_ZSTD && len > 0 && len < SNAP_PAGE) ||
                  (flags == SNAP_REC_ZERO && len == 0))) {
                set_err(why, whylen, "record %llu: flags %u with stored length %u",
                        (unsigned long long)k, flags, len);
                return -EBADMSG;
            }
            if (end - off - SNAP_REC_HDR_LEN < len) {
                set_err(why, whylen, "truncated: record %llu of %llu (%u bytes at %zu) runs past "
                        "the data, which ends at %zu", (unsigned long long)k,
                        (unsigned long long)nrec, len, off + SNAP_REC_HDR_LEN, end);
                return -EBADMSG;
            }
            prev_r = r;
            prev_i = i;
        } else if (pass == 1) {
            if (flags == SNAP_REC_ZSTD) {
                size_t n;

                if (!*dctx && !(*dctx = ZSTD_createDCtx())) {
                    set_err(why, whylen, "zstd: out of memory");
                    return -ENOMEM;
                }
                n = ZSTD_decompressDCtx(*dctx, scratch, sizeof(scratch), data, len);
                if (ZSTD_isError(n) || n != SNAP_PAGE) {
                    set_err(why, whylen, "record %llu: compressed page does not decode to %d bytes",
                            (unsigned long long)k, SNAP_PAGE);
                    return -EBADMSG;
                }
            }
        } else {
            dst = (uint8_t *)(uintptr_t)(m->regions[r].addr + i * SNAP_PAGE);
            if (flags == SNAP_REC_RAW)
                memcpy(dst, data, SNAP_PAGE);
            else if (flags == SNAP_REC_ZERO)
                memset(dst, 0, SNAP_PAGE);
            else if (ZSTD_isError(ZSTD_decompressDCtx(*dctx, dst, SNAP_PAGE, data, len)))
                return -EIO;    /* decoded fine in pass 1: cannot happen */
        }
        off += SNAP_REC_HDR_LEN + len;
    }
    if (pass == 0 && off != end) {
        set_err(why, whylen, "%zu bytes after the last of %llu records: trailing garbage",
                end - off, (unsigned long long)nrec);
        return -EBADMSG;
    }
    return 0;
}

static int read_snap(const char *path, const uint8_t *expect_fp, int apply,
                     const struct expect *ex, struct snap_meta *out, char *err, size_t errlen)
{
    char why[256];
    uint8_t hdr[SNAP_HDR_LEN], *buf = NULL;
    const uint8_t *trl;
    struct snap_meta m;
    struct stat st;
    uint64_t nrec, maxlen, size;
    size_t end;
    ZSTD_DCtx *dctx = NULL;
    int fd, rc;

    set_err(err, errlen, "%s", "");
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        rc = -errno;
        set_err(err, errlen, "open %s: %s", path, strerror(-rc));
        return rc;
    }
    if (fstat(fd, &st) == -1) {
        rc = -errno;
        set_err(err, errlen, "fstat %s: %s", path, strerror(-rc));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        set_err(err, errlen, "%s: not a regular file", path);
        goto out;
    }
    size = (uint64_t)st.st_size;

    /* The header alone first: it bounds the size and carries the fingerprint. */
    rc = read_full(fd, hdr, size < sizeof(hdr) ? (size_t)size : sizeof(hdr), 0);
    if (rc == 0)
        rc = hdr_decode(hdr, size, &m, &nrec, why, sizeof(why));
    else if (rc == -EBADMSG)
        set_err(why, sizeof(why), "truncated while reading");
    else
        snprintf(why, sizeof(why), "read: %s", strerror(-rc));
    if (rc)
        goto bad;
    if (ex && ex->kind && (m.kind != ex->kind || m.position != ex->position)) {
        set_err(why, sizeof(why), "holds a %s at position %llu, the name says a %s at %llu",
                m.kind == SNAP_FULL ? "full" : "delta", (unsigned long long)m.position,
                ex->kind == SNAP_FULL ? "full" : "delta", (unsigned long long)ex->position);
        rc = -EBADMSG;
        goto bad;
    }
    if (ex && ex->prev && link_ok(ex->prev, &m, why, sizeof(why))) {
        rc = -EBADMSG;
        goto bad;
    }
    if (expect_fp && memcmp(expect_fp, m.fingerprint, sizeof(m.fingerprint))) {
        rc = -EXDEV;
        set_err(err, errlen, "%s: layout fingerprint differs: snapshot from another build or "
                "layout", path);
        goto out;
    }
    /* The largest file nrec records make; on overflow there is no bound to check. */
    if (!__builtin_mul_overflow(nrec, (uint64_t)(SNAP_REC_HDR_LEN + SNAP_PAGE), &maxlen) &&
        !__builtin_add_overflow(maxlen, (uint64_t)(SNAP_HDR_LEN + SNAP_TRAILER_LEN), &maxlen) &&
        size > maxlen) {
        set_err(why, sizeof(why), "%llu bytes, more than its %llu records can fill (%llu): "
                "trailing garbage", (unsigned long long)size, (unsigned long long)nrec,
                (unsigned long long)maxlen);
        rc = -EBADMSG;
        goto bad;
    }

    buf = malloc((size_t)size);
    if (!buf) {
        rc = -ENOMEM;
        set_err(err, errlen, "%s: cannot allocate %llu bytes", path, (unsigned long long)size);
        goto out;
    }
    rc = read_full(fd, buf, (size_t)size, 0);
    if (rc == -EBADMSG)
        set_err(why, sizeof(why), "truncated while reading");
    else if (rc)
        snprintf(why, sizeof(why), "read: %s", strerror(-rc));
    else if (memcmp(buf, hdr, sizeof(hdr))) {
        set_err(why, sizeof(why), "header changed while reading");
        rc = -EBADMSG;
    }
    if (rc)
        goto bad;

    end = (size_t)size - SNAP_TRAILER_LEN;
    if ((rc = walk_records(buf, end, &m, nrec, 0, &dctx, why, sizeof(why))))
        goto bad;
    trl = buf + end;
    rc = -EBADMSG;
    if (memcmp(trl, trl_magic, 8)) {
        set_err(why, sizeof(why), "bad trailer magic");
        goto bad;
    }
    if (get64(trl + 8) != nrec) {
        set_err(why, sizeof(why), "trailer counts %llu records, the header %llu",
                (unsigned long long)get64(trl + 8), (unsigned long long)nrec);
        goto bad;
    }
    if (get64(trl + 16) != size) {
        set_err(why, sizeof(why), "trailer says %llu bytes, the file has %llu",
                (unsigned long long)get64(trl + 16), (unsigned long long)size);
        goto bad;
    }
    if (get64(trl + 24) != XXH3_64bits(buf, end)) {
        set_err(why, sizeof(why), "checksum mismatch: file corrupt");
        goto bad;
    }
    if ((rc = walk_records(buf, end, &m, nrec, 1, &dctx, why, sizeof(why))))
        goto bad;

    /* Verified: only now may memory change. */
    if (apply && (rc = walk_records(buf, end, &m, nrec, 2, &dctx, why, sizeof(why)))) {
        set_err(err, errlen, "%s: applying a verified file failed", path);
        goto out;
    }
    *out = m;
    rc = 0;
    goto out;

bad:
    set_err(err, errlen, "%s: %s", path, why);
out:
    ZSTD_freeDCtx(dctx);
    free(buf);
    close(fd);
    return rc;
}

int snap_read(const char *path, const uint8_t *expect_fingerprint, int apply,
              struct snap_meta *m, char *err, size_t errlen)
{
    return read_snap(path, expect_fingerprint, apply, NULL, m, err, errlen);
}

/* ---- directories and chains ---- */

void snap_name(char *buf, size_t len, uint64_t position, uint32_t kind)
{
    snprintf(buf, len, "snap-%020llu.%s", (unsigned long long)position,
             kind == SNAP_FULL ? "full" : "delta");
}

/* Parse "snap-<20 digits>.full|.delta" with an optional ".tmp.<digits>". */
static int parse_name(const char *s, uint64_t *pos, uint32_t *kind, int *tmp)
{
    uint64_t v = 0;

    if (strncmp(s, "snap-", 5))
        return -1;
    s += 5;
    for (int i = 0; i < 20; i++, s++) {
        unsigned d = (unsigned)(*s - '0');

        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (!strncmp(s, ".full", 5))
        *kind = SNAP_FULL, s += 5;
    else if (!strncmp(s, ".delta", 6))
        *kind = SNAP_DELTA, s += 6;
    else
        return -1;
    *pos = v;
    *tmp = 0;
    if (!*s)
        return 0;
    if (strncmp(s, ".tmp.", 5) || !s[5])
        return -1;
    for (s += 5; *s; s++)
        if (*s < '0' || *s > '9')
            return -1;
    *tmp = 1;
    return 0;
}

struct ent {
    uint64_t pos;
    uint32_t kind;
    int state;              /* 0 not yet verified, 1 good, -1 bad */
    struct snap_meta m;
};

static int ent_cmp(const void *a, const void *b)
{
    const struct ent *x = a, *y = b;

    if (x->pos != y->pos)
        return x->pos < y->pos ? -1 : 1;
    return x->kind < y->kind ? -1 : x->kind > y->kind;
}

static int ent_verify(const char *dir, struct ent *e, char *err, size_t errlen)
{
    char path[PATH_MAX], name[64], why[PATH_MAX + 256];
    struct expect ex = { .kind = e->kind, .position = e->pos };

    if (e->state)
        return e->state;
    snap_name(name, sizeof(name), e->pos, e->kind);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    why[0] = 0;
    if (read_snap(path, NULL, 0, &ex, &e->m, why, sizeof(why))) {
        e->state = -1;
        add_err(err, errlen, why);
    } else {
        e->state = 1;
    }
    return e->state;
}

int snap_find_chain(const char *dir, uint64_t *positions, int max, int *n, char *err, size_t errlen)
{
    struct ent *ents = NULL, *grown;
    size_t nents = 0, cap = 0;
    struct dirent *de;
    DIR *d;
    int rc = -ENOENT, found = 0;

    set_err(err, errlen, "%s", "");
    *n = 0;
    if (max < 1)
        return -EINVAL;
    d = opendir(dir);
    if (!d) {
        rc = -errno;
        set_err(err, errlen, "opendir %s: %s", dir, strerror(-rc));
        return rc;
    }
    while ((de = readdir(d))) {
        uint64_t pos;
        uint32_t kind;
        int tmp;

        if (parse_name(de->d_name, &pos, &kind, &tmp) || tmp)
            continue;
        if (nents == cap) {
            cap = cap ? 2 * cap : 16;
            grown = realloc(ents, cap * sizeof(*ents));
            if (!grown) {
                rc = -ENOMEM;
                set_err(err, errlen, "listing %s: out of memory", dir);
                goto out;
            }
            ents = grown;
        }
        ents[nents++] = (struct ent){ .pos = pos, .kind = kind };
    }
    if (nents)
        qsort(ents, nents, sizeof(*ents), ent_cmp);

    /* The newest full that verifies, then follow links, newest candidate first. */
    for (size_t f = nents; f-- > 0;) {
        const struct snap_meta *cur;

        if (ents[f].kind != SNAP_FULL || ent_verify(dir, &ents[f], err, errlen) != 1)
            continue;
        positions[0] = ents[f].pos;
        *n = 1;
        cur = &ents[f].m;
        for (;;) {
            size_t next = 0;
            char why[256];

            for (size_t j = nents; j-- > f + 1 && !next;) {
                if (ents[j].kind != SNAP_DELTA || ents[j].pos <= cur->position)
                    continue;
                if (ent_verify(dir, &ents[j], err, errlen) == 1 &&
                    !link_ok(cur, &ents[j].m, why, sizeof(why)))
                    next = j;
            }
            if (!next)
                break;
            if (*n == max) {
                add_err(err, errlen, "chain longer than the room for it: cut");
                break;
            }
            positions[(*n)++] = ents[next].pos;
            cur = &ents[next].m;
        }
        found = 1;
        break;
    }
    if (found) {
        rc = 0;
    } else {
        char msg[PATH_MAX + 64];

        snprintf(msg, sizeof(msg), "no full snapshot that verifies in %s", dir);
        add_err(err, errlen, msg);
    }
out:
    closedir(d);
    free(ents);
    return rc;
}

int snap_restore_chain(const char *dir, const uint64_t *positions, int n,
                       const uint8_t *expect_fingerprint, struct snap_meta *m,
                       char *err, size_t errlen)
{
    struct snap_meta prev, cur;
    char path[PATH_MAX], name[64];
    int rc;

    set_err(err, errlen, "%s", "");
    if (n < 1) {
        set_err(err, errlen, "empty chain");
        return -EINVAL;
    }
    for (int i = 0; i < n; i++) {
        struct expect ex = {
            .kind = i ? SNAP_DELTA : SNAP_FULL,
            .position = positions[i],
            .prev = i ? &prev : NULL,
        };

        snap_name(name, sizeof(name), positions[i], ex.kind);
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
            set_err(err, errlen, "%s: path too long", dir);
            return -ENAMETOOLONG;
        }
        rc = read_snap(path, expect_fingerprint, 1, &ex, &cur, err, errlen);
        if (rc)
            return rc;
        prev = cur;
    }
    *m = prev;
    return 0;
}

int snap_prune(const char *dir, uint64_t keep_from)
{
    char name[64];
    struct dirent *de;
    struct stat st;
    DIR *d;
    int removed = 0, rc = 0;

    d = opendir(dir);
    if (!d)
        return -errno;
    snap_name(name, sizeof(name), keep_from, SNAP_FULL);
    if (fstatat(dirfd(d), name, &st, 0) == -1) {
        rc = -errno;
        closedir(d);
        return rc;
    }
    while ((de = readdir(d))) {
        uint64_t pos;
        uint32_t kind;
        int tmp;

        if (parse_name(de->d_name, &pos, &kind, &tmp) || pos >= keep_from)
            continue;
        int r = snap_retire(dirfd(d), de->d_name, 0);
        if (r == 0)
            removed++;
        else
            rc = r;
    }
    closedir(d);
    return rc ? rc : removed;
}
