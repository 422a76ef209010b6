/* olog.c - writing the ordering log files (common/evlog.h) through io_uring: events are
 * appended to a buffer as they are ordered and written in one batch per loop iteration,
 * with no fsync. Recovery does not need the files (the events are held in memory); they
 * are for offline replay (cessna-replay) of a session that failed. A failing write (a full
 * disk) stops the log of that session with a warning, and nothing else. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evlog.h"
#include "log.h"
#include "sup.h"

#define LOG_PENDING_MAX (64u << 20)   /* more than this waiting for the disk: give up the log */

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

static void log_fail(struct session *s, const char *what, int err)
{
    if (s->log_failed)
        return;
    s->log_failed = 1;
    s->log_pend.len = 0;
    S.stats.log_failures++;
    LOG(LOG_WARN, "session=%llu msg=\"event log stopped: %s\" error=\"%s\" "
        "note=\"recovery is unaffected; offline replay of this session is not possible\"",
        ull(s->id), what, strerror(err));
}

/* A new file for the events from position `first` on; the header is written at once. */
static int open_file(struct session *s, uint64_t first, char *err, size_t errlen)
{
    char path[PATH_MAX + 64], name[64];
    uint8_t hdr[EVLOG_HDR_LEN];
    int fd;

    evlog_name(name, sizeof(name), first);
    snprintf(path, sizeof(path), "%s/%llu/%s", S.cfg.state_dir, ull(s->id), name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1) {
        snprintf(err, errlen, "event log %s: %s", path, strerror(errno));
        return -errno;
    }
    evlog_header(hdr, s->id, first);
    if (write(fd, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr)) {
        snprintf(err, errlen, "event log %s: %s", path, strerror(errno ? errno : EIO));
        close(fd);
        return -EIO;
    }
    if (s->log_fd >= 0)
        close(s->log_fd);
    s->log_fd = fd;
    s->log_off = sizeof(hdr);
    if (s->log_nfiles == (int)(sizeof(s->log_files) / sizeof(s->log_files[0]))) {
        memmove(s->log_files, s->log_files + 1, sizeof(s->log_files) - sizeof(s->log_files[0]));
        s->log_nfiles--;
    }
    s->log_files[s->log_nfiles++] = first;
    return 0;
}

int olog_start(struct session *s, uint64_t first, char *err, size_t errlen)
{
    s->log_fd = -1;
    return open_file(s, first, err, errlen);
}

void olog_append(struct session *s, uint16_t type, const struct shm_rec *r, const void *data,
                 size_t len)
{
    struct outbuf *b = &s->log_pend;
    size_t need = evrec_space(len);

    if (s->log_failed || s->log_fd < 0)
        return;
    if (b->len + need > LOG_PENDING_MAX)
        return log_fail(s, "the disk does not keep up", ENOBUFS);
    if (outbuf_reserve(b, need) < 0)
        return log_fail(s, "out of memory", ENOMEM);
    if (!b->len)
        s->log_pend_first = r->pos;
    evrec_put(b->data + b->len, type, r, data, len);
    b->len += need;
    if (!s->log_dirty) {
        s->log_dirty = 1;
        s->next_log_dirty = S.log_dirty;
        S.log_dirty = s;
    }
}

/* Files whose events a durable snapshot at position p covers are no longer needed. */
static void remove_covered(struct session *s, uint64_t p)
{
    char path[PATH_MAX + 64], name[64];
    int drop = 0;

    while (drop + 1 < s->log_nfiles && s->log_files[drop + 1] <= p + 1) {
        evlog_name(name, sizeof(name), s->log_files[drop]);
        snprintf(path, sizeof(path), "%s/%llu/%s", S.cfg.state_dir, ull(s->id), name);
        unlink(path);
        drop++;
    }
    memmove(s->log_files, s->log_files + drop, (size_t)(s->log_nfiles - drop) * sizeof(uint64_t));
    s->log_nfiles -= drop;
}

static void submit(struct session *s)
{
    char err[256];

    if (s->log_writing || s->log_failed || s->log_fd < 0)
        return;
    if (s->log_rotate) {
        /* After a durable snapshot: new events go to a new file, covered files go. */
        uint64_t first = s->log_pend.len ? s->log_pend_first : s->next_pos;
        int same = s->log_nfiles && s->log_files[s->log_nfiles - 1] == first;
        if (!same && open_file(s, first, err, sizeof(err)) < 0)   /* else: nothing new yet */
            return log_fail(s, err, EIO);
        remove_covered(s, s->log_rotate);
        s->log_rotate = 0;
    }
    if (!s->log_pend.len || s->state == S_FREE)
        return;
    struct outbuf t = s->log_write;
    s->log_write = s->log_pend;
    s->log_pend = t;
    s->log_pend.len = 0;
    s->log_written = 0;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_write(sqe, s->log_fd, s->log_write.data, (unsigned)s->log_write.len, s->log_off);
    io_uring_sqe_set_data64(sqe, UD(OP_LOGWRITE, s->slot, 0));
    s->log_writing = 1;
    s->inflight++;
}

void olog_flush_all(void)
{
    for (struct session *s = S.log_dirty; s; s = s->next_log_dirty) {
        s->log_dirty = 0;
        submit(s);
    }
    S.log_dirty = NULL;
}

void olog_on_write(struct session *s, int res)
{
    s->log_writing = 0;
    sess_release_op(s);
    if (res <= 0)
        return log_fail(s, "write", res < 0 ? -res : EIO);
    s->log_off += (uint64_t)res;
    s->log_written += (size_t)res;
    if (s->log_written < s->log_write.len) {   /* a short write: the rest */
        struct io_uring_sqe *sqe = sup_sqe();
        io_uring_prep_write(sqe, s->log_fd, s->log_write.data + s->log_written,
                            (unsigned)(s->log_write.len - s->log_written), s->log_off);
        io_uring_sqe_set_data64(sqe, UD(OP_LOGWRITE, s->slot, 0));
        s->log_writing = 1;
        s->inflight++;
        return;
    }
    s->log_write.len = 0;
    submit(s);
}

void olog_durable(struct session *s, uint64_t p)
{
    s->log_rotate = p;
    if (!s->log_writing)
        submit(s);
}

/* The session is over. Its files stay for offline replay if it failed; a cleanly closed
 * session's directory is removed (statedir.c). */
void olog_end(struct session *s)
{
    if (s->log_fd >= 0)
        close(s->log_fd);
    s->log_fd = -1;
    free(s->log_pend.data);
    free(s->log_write.data);
    memset(&s->log_pend, 0, sizeof(s->log_pend));
    memset(&s->log_write, 0, sizeof(s->log_write));
}
