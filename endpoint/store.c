/* store.c - see store.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "snap.h"
#include "store.h"
#include "wire.h"

void store_init(struct store *st, const char *root, uint64_t session_id)
{
    memset(st, 0, sizeof(*st));
    st->root = root;
    st->session_id = session_id;
    st->fd = -1;
}

uint64_t store_last(const struct store *st)
{
    return st->n ? st->chain[st->n - 1].position : 0;
}

static void file_path(const struct store *st, const struct store_file *f, char *buf, size_t len)
{
    char name[64];

    snap_name(name, sizeof(name), f->position, f->base ? SNAP_DELTA : SNAP_FULL);
    snprintf(buf, len, "%s/%s", st->dir, name);
}

static void drop_file(struct store *st, struct store_file *f)
{
    char path[PATH_MAX + 64];

    if (f->bytes) {
        free(f->bytes);
    } else if (st->root) {
        file_path(st, f, path, sizeof(path));
        unlink(path);
    }
    memset(f, 0, sizeof(*f));
}

static void abort_assembly(struct store *st)
{
    if (st->fd >= 0) {
        close(st->fd);
        unlink(st->tmp);
        st->fd = -1;
    }
    free(st->buf);
    st->buf = NULL;
    st->busy = false;
}

void store_remove(struct store *st)
{
    abort_assembly(st);
    for (size_t i = 0; i < st->n; i++)
        drop_file(st, &st->chain[i]);
    free(st->chain);
    st->chain = NULL;
    st->n = st->cap = 0;
    if (st->root && st->dir[0] && rmdir(st->dir) == -1 && errno != ENOENT)
        LOG(LOG_WARN, "session=%" PRIu64 " msg=\"cannot remove the store directory\" dir=%s "
            "err=\"%s\"", st->session_id, st->dir, strerror(errno));
    st->dir[0] = 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) == -1)
        rc = -errno;
    close(fd);
    return rc;
}

/* The first piece of a file: check it against the chain, open where it goes. */
static int begin(struct store *st, const struct wire_frame *f, char *err, size_t errlen)
{
    uint64_t pos = f->u.snap_put.position, base = f->u.snap_put.base;

    if (f->u.snap_put.offset != 0) {
        snprintf(err, errlen, "SNAP_PUT of snapshot %" PRIu64 " starts at offset %" PRIu64
                 ", not 0", pos, f->u.snap_put.offset);
        return -EPROTO;
    }
    if (pos <= store_last(st)) {
        snprintf(err, errlen, "SNAP_PUT of snapshot %" PRIu64 " is not newer than the stored "
                 "%" PRIu64, pos, store_last(st));
        return -EPROTO;
    }
    if (base && base != store_last(st)) {
        snprintf(err, errlen, "SNAP_PUT of delta %" PRIu64 " on base %" PRIu64 ", but the "
                 "stored chain ends at %" PRIu64, pos, base, store_last(st));
        return -EPROTO;
    }
    if (f->u.snap_put.total == 0) {
        snprintf(err, errlen, "SNAP_PUT of snapshot %" PRIu64 " with total 0", pos);
        return -EPROTO;
    }
    st->busy = true;
    st->position = pos;
    st->base = base;
    st->total = f->u.snap_put.total;
    st->got = 0;
    if (!st->root)
        return 0;
    if (!st->dir[0]) {
        snprintf(st->dir, sizeof(st->dir), "%s/%" PRIu64, st->root, st->session_id);
        if (mkdir(st->dir, 0700) == -1 && errno != EEXIST) {
            snprintf(err, errlen, "store: mkdir %s: %s", st->dir, strerror(errno));
            st->dir[0] = 0;
            st->busy = false;
            return -EIO;
        }
    }
    struct store_file probe = { .position = pos, .base = base };
    char path[PATH_MAX + 64];
    file_path(st, &probe, path, sizeof(path));
    snprintf(st->tmp, sizeof(st->tmp), "%s.tmp", path);
    st->fd = open(st->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (st->fd < 0) {
        snprintf(err, errlen, "store: open %s: %s", st->tmp, strerror(errno));
        st->busy = false;
        return -EIO;
    }
    return 0;
}

static int append(struct store *st, const uint8_t *p, size_t len, char *err, size_t errlen)
{
    if (!st->root) {
        uint8_t *b = realloc(st->buf, st->got + len ? st->got + len : 1);
        if (!b) {
            snprintf(err, errlen, "store: out of memory for snapshot %" PRIu64, st->position);
            return -ENOMEM;
        }
        st->buf = b;
        memcpy(b + st->got, p, len);
        return 0;
    }
    while (len) {
        ssize_t n = write(st->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "store: write %s: %s", st->tmp, strerror(errno));
            return -EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The last piece arrived: make the file durable and check it. */
static int finish(struct store *st, char *err, size_t errlen)
{
    struct store_file nf = { .position = st->position, .base = st->base, .len = st->total };

    if (!st->root) {
        nf.bytes = st->buf;
        st->buf = NULL;
    } else {
        char path[PATH_MAX + 64], why[256];
        struct snap_meta m;
        file_path(st, &nf, path, sizeof(path));
        if (fsync(st->fd) == -1 || close(st->fd) == -1) {
            snprintf(err, errlen, "store: fsync %s: %s", st->tmp, strerror(errno));
            return -EIO;
        }
        st->fd = -1;
        if (rename(st->tmp, path) == -1) {
            snprintf(err, errlen, "store: rename %s: %s", st->tmp, strerror(errno));
            unlink(st->tmp);
            return -EIO;
        }
        int rc = fsync_dir(st->dir);
        if (rc < 0) {
            snprintf(err, errlen, "store: fsync dir %s: %s", st->dir, strerror(-rc));
            unlink(path);
            return -EIO;
        }
        rc = snap_read(path, NULL, 0, &m, why, sizeof(why));
        if (rc == 0 && (m.session_id != st->session_id || m.position != nf.position ||
                        m.base_position != nf.base))
            rc = -EINVAL, snprintf(why, sizeof(why), "its header says session %" PRIu64
                                   " position %" PRIu64 " base %" PRIu64, m.session_id,
                                   m.position, m.base_position);
        if (rc < 0) {
            snprintf(err, errlen, "snapshot %" PRIu64 " does not verify: %s", nf.position, why);
            unlink(path);
            return -EPROTO;
        }
    }
    if (!nf.base) {   /* a new full: the older chain goes */
        for (size_t i = 0; i < st->n; i++)
            drop_file(st, &st->chain[i]);
        st->n = 0;
    }
    if (st->n == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 8;
        struct store_file *c = realloc(st->chain, cap * sizeof(*c));
        if (!c) {
            drop_file(st, &nf);
            snprintf(err, errlen, "store: out of memory");
            return -ENOMEM;
        }
        st->chain = c;
        st->cap = cap;
    }
    st->chain[st->n++] = nf;
    return 1;
}

int store_put(struct store *st, const struct wire_frame *f, char *err, size_t errlen)
{
    int rc;

    /* A first piece while a file is half assembled: its sender is gone (an edge lost, hung
     * or timed out while shipping it; edges ship a session's files one after the other), and
     * the edge that took the session over starts its own. The half file was never part of
     * the chain: it goes. (Refused as out of order, it ended the session at its new edge.) */
    if (st->busy && f->u.snap_put.offset == 0)
        abort_assembly(st);
    if (!st->busy && (rc = begin(st, f, err, errlen)) < 0)
        return rc;
    if (f->u.snap_put.position != st->position || f->u.snap_put.base != st->base ||
        f->u.snap_put.total != st->total || f->u.snap_put.offset != st->got) {
        snprintf(err, errlen, "SNAP_PUT piece (position %" PRIu64 ", offset %" PRIu64 ") out "
                 "of order: want snapshot %" PRIu64 " at offset %" PRIu64,
                 f->u.snap_put.position, f->u.snap_put.offset, st->position, st->got);
        abort_assembly(st);
        return -EPROTO;
    }
    if ((rc = append(st, f->u.snap_put.bytes, f->u.snap_put.len, err, errlen)) < 0) {
        abort_assembly(st);
        return rc;
    }
    st->got += f->u.snap_put.len;
    if (st->got < st->total)
        return 0;
    rc = finish(st, err, errlen);
    abort_assembly(st);
    return rc;
}

int store_frames(struct store *st,
                 int (*emit)(void *arg, const uint8_t *hdr, size_t hlen, const uint8_t *p,
                             size_t len),
                 void *arg, char *err, size_t errlen)
{
    static uint8_t piece[WIRE_SNAP_PIECE];
    uint8_t hdr[WIRE_SNAP_PUT_HDR_LEN];
    int rc = 0;

    for (size_t i = 0; i < st->n && rc == 0; i++) {
        struct store_file *f = &st->chain[i];
        char path[PATH_MAX + 64];
        int fd = -1;
        if (!f->bytes) {
            file_path(st, f, path, sizeof(path));
            if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
                snprintf(err, errlen, "store: open %s: %s", path, strerror(errno));
                return -errno;
            }
        }
        for (uint64_t off = 0; off < f->len && rc == 0; ) {
            size_t n = f->len - off < WIRE_SNAP_PIECE ? (size_t)(f->len - off) : WIRE_SNAP_PIECE;
            const uint8_t *p = f->bytes ? f->bytes + off : piece;
            if (fd >= 0 && pread(fd, piece, n, (off_t)off) != (ssize_t)n) {
                snprintf(err, errlen, "store: read %s: %s", path,
                         errno ? strerror(errno) : "short read");
                rc = -EIO;
                break;
            }
            wire_put_snap_put_hdr(hdr, f->position, f->base, f->len, off, n);
            rc = emit(arg, hdr, sizeof(hdr), p, n);
            off += n;
        }
        if (fd >= 0)
            close(fd);
    }
    return rc;
}
