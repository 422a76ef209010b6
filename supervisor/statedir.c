/* statedir.c - what the supervisor keeps in state_dir, and what it removes.
 *
 * One supervisor per state_dir: STATE_DIR/supervisor.lock is held with flock() while it
 * runs and holds its pid; a second one is refused with that pid. The lock goes with the
 * process (a crash leaves no stale lock).
 *
 * Each session has STATE_DIR/ID (snapshots and event logs). A cleanly closed session's
 * directory is removed; a failed session's is kept for offline replay (cessna-replay), the
 * newest failed_sessions_keep of them. Directories found at startup (earlier runs) count as
 * kept, oldest first. Removal never blocks the loop: directories wait in a queue and
 * sdir_step(), called once per loop iteration, unlinks at most SDIR_STEP files. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "sup.h"

#define SDIR_STEP 32   /* files unlinked per loop iteration at most */
#define SDIR_PASSES 4  /* a directory that is still not empty after this many passes is left */

struct idq {           /* a FIFO of session ids */
    uint64_t *v;
    size_t head, len, cap;
};

static struct {
    int dfd;           /* state_dir */
    struct idq kept;   /* failed sessions' directories, oldest first */
    struct idq doomed; /* directories to remove */
    DIR *cur;          /* the directory being removed */
    uint64_t cur_id;
    int passes;
} D = { .dfd = -1 };

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

static int idq_push(struct idq *q, uint64_t id)
{
    if (q->len == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        uint64_t *v = malloc(cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        for (size_t i = 0; i < q->len; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->cap = cap;
        q->head = 0;
    }
    q->v[(q->head + q->len) % q->cap] = id;
    q->len++;
    return 0;
}

static uint64_t idq_pop(struct idq *q)
{
    uint64_t id = q->v[q->head];

    q->head = (q->head + 1) % q->cap;
    q->len--;
    return id;
}

int sdir_lock(char *err, size_t errlen)
{
    char path[PATH_MAX + 32], pid[32];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "%s/supervisor.lock", S.cfg.state_dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd == -1) {
        snprintf(err, errlen, "state_dir lock %s: %s", path, strerror(errno));
        return -errno;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            n = pread(fd, pid, sizeof(pid) - 1, 0);
            pid[n > 0 ? n : 0] = 0;
            pid[strcspn(pid, "\r\n")] = 0;
            snprintf(err, errlen, "state_dir %s is in use by pid %s (lock %s)", S.cfg.state_dir,
                     pid[0] ? pid : "?", path);
        } else {
            snprintf(err, errlen, "state_dir lock %s: flock: %s", path, strerror(e));
        }
        close(fd);
        return -e;
    }
    n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) == -1 || pwrite(fd, pid, (size_t)n, 0) != n) {
        snprintf(err, errlen, "state_dir lock %s: write: %s", path, strerror(errno));
        close(fd);
        return -EIO;
    }
    S.lock_fd = fd;
    return 0;
}

static int parse_id(const char *name, uint64_t *id)
{
    char *end;

    if (name[0] < '0' || name[0] > '9')
        return -EINVAL;
    errno = 0;
    *id = strtoull(name, &end, 10);
    return *end || errno || !*id ? -EINVAL : 0;
}

struct found { uint64_t id; struct timespec mtime; };

static int by_mtime(const void *a, const void *b)
{
    const struct found *x = a, *y = b;

    if (x->mtime.tv_sec != y->mtime.tv_sec)
        return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
    if (x->mtime.tv_nsec != y->mtime.tv_nsec)
        return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
    return 0;
}

static void enforce_retention(void)
{
    while (D.kept.len > S.cfg.failed_sessions_keep)
        idq_push(&D.doomed, idq_pop(&D.kept));
}

void sdir_init(void)
{
    struct found *f = NULL;
    size_t n = 0, cap = 0;
    struct dirent *d;
    DIR *dir;

    D.dfd = open(S.cfg.state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (D.dfd == -1) {
        LOG(LOG_WARN, "msg=\"state_dir not opened: session directories will not be removed\" "
            "dir=%s error=\"%s\"", S.cfg.state_dir, strerror(errno));
        return;
    }
    int fd = dup(D.dfd);
    dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dir) {
        if (fd >= 0)
            close(fd);
        return;
    }
    while ((d = readdir(dir))) {
        struct stat st;
        uint64_t id;
        if (parse_id(d->d_name, &id) < 0 ||
            fstatat(D.dfd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1 || !S_ISDIR(st.st_mode))
            continue;
        if (n == cap) {
            size_t c = cap ? cap * 2 : 256;
            struct found *p = realloc(f, c * sizeof(*p));
            if (!p)
                break;
            f = p;
            cap = c;
        }
        f[n++] = (struct found){ id, st.st_mtim };
    }
    closedir(dir);
    if (n)
        qsort(f, n, sizeof(*f), by_mtime);
    for (size_t i = 0; i < n; i++)
        idq_push(&D.kept, f[i].id);
    free(f);
    enforce_retention();
    if (n)
        LOG(LOG_INFO, "msg=\"session directories of earlier runs\" found=%zu keep=%u removing=%zu",
            n, S.cfg.failed_sessions_keep, D.doomed.len);
}

void sdir_session_ended(uint64_t id, int failed)
{
    if (!id || D.dfd < 0)
        return;   /* never said HELLO: it has no directory */
    if (!failed) {
        idq_push(&D.doomed, id);
        return;
    }
    idq_push(&D.kept, id);
    enforce_retention();
}

/* Forget q's entries equal to id (order kept). */
static void idq_remove(struct idq *q, uint64_t id)
{
    size_t n = 0;

    for (size_t i = 0; i < q->len; i++) {
        uint64_t v = q->v[(q->head + i) % q->cap];
        if (v != id)
            q->v[(q->head + n++) % q->cap] = v;
    }
    q->len = n;
}

void sdir_reclaim(uint64_t id)
{
    idq_remove(&D.doomed, id);
    idq_remove(&D.kept, id);
    if (D.cur && D.cur_id == id) {
        closedir(D.cur);
        D.cur = NULL;
    }
}

int sdir_busy(void)
{
    return D.cur || D.doomed.len;
}

static void finish_dir(void)
{
    char name[32];

    snprintf(name, sizeof(name), "%llu", ull(D.cur_id));
    if (unlinkat(D.dfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT) {
        S.stats.dirs_removed++;
    } else if (errno == ENOTEMPTY && ++D.passes < SDIR_PASSES) {
        rewinddir(D.cur);   /* a snapshot child wrote a file meanwhile */
        return;
    } else {
        LOG(LOG_WARN, "msg=\"session directory not removed\" dir=%s/%s error=\"%s\"",
            S.cfg.state_dir, name, strerror(errno));
    }
    closedir(D.cur);
    D.cur = NULL;
}

void sdir_step(void)
{
    int budget = SDIR_STEP;

    while (budget > 0 && sdir_busy()) {
        struct dirent *d;
        if (!D.cur) {
            char name[32];
            D.cur_id = idq_pop(&D.doomed);
            D.passes = 0;
            snprintf(name, sizeof(name), "%llu", ull(D.cur_id));
            int fd = openat(D.dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd == -1 || !(D.cur = fdopendir(fd))) {
                if (errno != ENOENT)
                    LOG(LOG_WARN, "msg=\"session directory not removed\" dir=%s/%s error=\"%s\"",
                        S.cfg.state_dir, name, strerror(errno));
                if (fd >= 0)
                    close(fd);
                budget--;
                continue;
            }
        }
        errno = 0;
        d = readdir(D.cur);
        if (!d) {
            finish_dir();
            budget--;
            continue;
        }
        if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
            continue;
        if (unlinkat(dirfd(D.cur), d->d_name, 0) == -1 && errno != ENOENT)
            LOG(LOG_DEBUG, "msg=\"unlink\" dir=%llu file=%s error=\"%s\"", ull(D.cur_id),
                d->d_name, strerror(errno));
        budget--;
    }
}
