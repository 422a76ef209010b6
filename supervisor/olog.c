/* olog.c - the ordering log file of a session: STATE_DIR/ID/events-FIRST.log, the events
 * after its last durable snapshot, for offline replay (cessna-replay).
 *
 * Recovery never reads it: the supervisor holds those events in memory (evstore.h) until a
 * snapshot covers them. So the file is written only when someone needs it: when the session
 * fails (its directory is kept for offline replay) and on request (`cessna-ctl log ID`).
 * It is the held-event store itself, written in one go: the store's records have the log's
 * layout (evrec_put), so nothing is copied or written per message. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "evlog.h"
#include "log.h"
#include "sup.h"

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Log files other than `keep` in dir: older dumps, covered by a snapshot since. */
static void remove_other_logs(const char *dir, const char *keep)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    while (d && (de = readdir(d))) {
        if (strncmp(de->d_name, "events-", 7) == 0 && strcmp(de->d_name, keep) != 0)
            unlinkat(dirfd(d), de->d_name, 0);
    }
    if (d)
        closedir(d);
}

int olog_dump(struct session *s, char *path, size_t pathlen, char *err, size_t errlen)
{
    char dir[PATH_MAX], tmp[PATH_MAX + 80], name[64];
    uint8_t hdr[EVLOG_HDR_LEN];
    uint64_t first = s->ev.count ? s->ev.first : s->next_pos;
    int fd, rc;

    snprintf(dir, sizeof(dir), "%s/%llu", S.cfg.state_dir, ull(s->id));
    evlog_name(name, sizeof(name), first);
    snprintf(path, pathlen, "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1) {
        snprintf(err, errlen, "event log %s: %s", tmp, strerror(errno));
        return -errno;
    }
    evlog_header(hdr, s->id, first);
    rc = write_all(fd, hdr, sizeof(hdr));
    if (rc == 0)
        rc = write_all(fd, s->ev.buf, s->ev.len);
    if (close(fd) == -1 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) == -1)
        rc = -errno;
    if (rc < 0) {
        snprintf(err, errlen, "event log %s: %s", path, strerror(-rc));
        unlink(tmp);
        S.stats.log_failures++;
        return rc;
    }
    remove_other_logs(dir, name);
    return 0;
}

void olog_on_failure(struct session *s)
{
    char path[PATH_MAX + 80], err[PATH_MAX + 160];

    if (!s->ctl)
        return;     /* it never had a worker: nothing to replay */
    if (olog_dump(s, path, sizeof(path), err, sizeof(err)) < 0)
        LOG(LOG_WARN, "session=%llu msg=\"event log not written: offline replay of this "
            "session is not possible\" error=\"%s\"", ull(s->id), err);
}
