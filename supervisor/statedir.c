/* statedir.c - what the supervisor keeps in state_dir, and what it removes.
 *
 * One supervisor per state_dir: STATE_DIR/supervisor.lock is held with flock() while it
 * runs and holds its pid; a second one is refused with that pid. The lock goes with the
 * process (a crash leaves no stale lock).
 *
 * Each session has STATE_DIR/ID (snapshots and event logs). A cleanly closed session's
 * directory is given back; a failed session's is kept for offline replay (cessna-replay),
 * the newest failed_sessions_keep of them, and given back when a newer one evicts it.
 * Directories found at startup (earlier runs) count as kept, oldest first.
 *
 * A directory given back is recycled rather than removed: its files become empty spares
 * (snap_retire: at most 12, the rest are unlinked) and it is renamed STATE_DIR/.free-N, a
 * name no session id can have, into a pool of at most SDIR_POOL_MAX (or max_sessions)
 * directories. A new session's directory is the oldest of the pool renamed to its id
 * (sdir_take), so that neither a mkdir nor its first snapshot files allocate an inode:
 * on ext4, allocating among many recently freed inodes is slow, and a node with steady
 * session churn frees them all the time. Past the cap a directory is removed as before.
 * Free directories left by an earlier run are checked the same way and adopted.
 *
 * session_dirs_ahead = N makes free directories ahead (mkdir .free-N, a few per loop
 * iteration once nothing else waits) until the live sessions and the free directories
 * together number N, so that a burst of new sessions after a start needs no mkdir in the
 * loop (and makes none: each takes a free one); the pool's cap is then at least N.
 *
 * The work never blocks the loop: directories wait in a queue and sdir_step(), called once
 * per loop iteration, retires or unlinks at most SDIR_STEP files. A directory enters the
 * pool only after a whole pass over it found nothing but spares, so that a file a stray
 * snapshot child wrote meanwhile is never handed to the next session. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "snap.h"
#include "statedir.h"
#include "sup.h"

#define SDIR_STEP 32   /* files retired or unlinked per loop iteration at most */
#define SDIR_PASSES 4  /* a directory that is still not empty after this many passes is left */
#define SDIR_POOL_MAX 1024  /* free directories kept at most (or max_sessions, if fewer) */
#define SDIR_AHEAD_STEP 4   /* directories made ahead per loop iteration at most */
#define FREE_PREFIX ".free-"
#define POOL_ENTRY(n, spares) ((n) << 4 | (spares))   /* spares: at most 12 */
#define POOL_N(e)      ((e) >> 4)
#define POOL_SPARES(e) ((uint32_t)((e) & 15))

struct idq {           /* a FIFO of session ids */
    uint64_t *v;
    size_t head, len, cap;
};

static struct {
    int dfd;           /* state_dir */
    struct idq kept;   /* failed sessions' directories, oldest first */
    struct idq doomed; /* session directories given back */
    struct idq adopt;  /* free directories of an earlier run (their N), to check first */
    struct idq pool;   /* free directories ready for new sessions, oldest first: each its N
                        * and the spares in it, POOL_ENTRY(n, spares) */
    uint64_t next_free;/* N of the next .free-N */
    DIR *cur;          /* the directory being recycled or removed */
    uint64_t cur_id;   /* its session, or 0: a free directory being adopted */
    uint64_t cur_free; /* the N of that free directory */
    char cur_name[32];
    int passes;
    int recycle;       /* cur goes to the pool (files retired), else it is removed */
    int dirty;         /* this pass over cur found something besides spares */
    uint32_t spares;   /* the spares this pass over cur found */
    uint32_t ahead_failed; /* session_dirs_ahead when a mkdir ahead failed (0: none did):
                            * not tried again until the key changes (a reload) */
    uint32_t ahead_round;  /* the session_dirs_ahead being made now (a reload starts anew) */
    uint32_t ahead_said;   /* the session_dirs_ahead whose "ready" was logged */
    struct timespec ahead_start;   /* when this round began */
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

/* ".free-N": N, or -EINVAL for any other name. */
static int parse_free(const char *name, uint64_t *n)
{
    char *end;

    if (strncmp(name, FREE_PREFIX, sizeof(FREE_PREFIX) - 1) != 0)
        return -EINVAL;
    name += sizeof(FREE_PREFIX) - 1;
    if (name[0] < '0' || name[0] > '9' || (name[0] == '0' && name[1]))
        return -EINVAL;   /* as free_name() writes it: no leading zero */
    errno = 0;
    *n = strtoull(name, &end, 10);
    return *end || errno ? -EINVAL : 0;
}

static void free_name(char *buf, size_t len, uint64_t n)
{
    snprintf(buf, len, FREE_PREFIX "%llu", ull(n));
}

/* Free directories made ahead at most: session_dirs_ahead, or max_sessions when fewer. */
static size_t ahead_target(void)
{
    uint32_t m = S.cfg.max_sessions, a = S.cfg.session_dirs_ahead;

    return m && m < a ? m : a;
}

/* Free directories kept at most: SDIR_POOL_MAX, or max_sessions when that is fewer; at least
 * the directories made ahead. */
static size_t pool_cap(void)
{
    uint32_t m = S.cfg.max_sessions;
    size_t cap = m && m < SDIR_POOL_MAX ? m : SDIR_POOL_MAX;

    return cap > ahead_target() ? cap : ahead_target();
}

/* The live sessions' directories and the free ones are fewer than session_dirs_ahead (a
 * session that takes a free one leaves the sum as it was: a burst makes none), and making
 * them has not failed. */
static int ahead_short(void)
{
    return D.dfd >= 0 && D.pool.len + S.nsessions < ahead_target() &&
           D.ahead_failed != S.cfg.session_dirs_ahead;
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
        int is_free = parse_free(d->d_name, &id) == 0;
        if ((!is_free && parse_id(d->d_name, &id) < 0) ||
            fstatat(D.dfd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1 || !S_ISDIR(st.st_mode))
            continue;
        if (is_free) {   /* checked by sdir_step before a session gets it */
            idq_push(&D.adopt, id);
            if (id >= D.next_free)
                D.next_free = id + 1;
            continue;
        }
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
    if (D.adopt.len)
        LOG(LOG_INFO, "msg=\"free session directories of earlier runs\" found=%zu pool_max=%zu",
            D.adopt.len, pool_cap());
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

int sdir_take(uint64_t id, uint32_t *spares)
{
    char name[32], from[32];

    if (!id || D.dfd < 0)
        return -ENOENT;
    snprintf(name, sizeof(name), "%llu", ull(id));
    while (D.pool.len) {
        uint64_t n = idq_pop(&D.pool);
        free_name(from, sizeof(from), POOL_N(n));
        if (renameat2(D.dfd, from, D.dfd, name, RENAME_NOREPLACE) == 0) {
            S.stats.dirs_reused++;
            *spares = POOL_SPARES(n);
            return 0;
        }
        int e = errno;
        if (e == EEXIST) {          /* the session has its directory already (a wake) */
            idq_push(&D.pool, n);   /* n stays free (now the newest) */
            return -EEXIST;
        }
        if (e != ENOENT) {          /* left where it is: the next start checks it again */
            LOG(LOG_WARN, "msg=\"free session directory not used\" dir=%s/%s error=\"%s\"",
                S.cfg.state_dir, from, strerror(e));
            return -e;
        }
    }
    return -ENOENT;
}

size_t sdir_free_dirs(void)
{
    return D.pool.len;
}

static int recycling(void)
{
    return D.cur || D.doomed.len || D.adopt.len;
}

int sdir_busy(void)
{
    return recycling() || ahead_short();
}

/* A directory could not be made ahead: no more are tried until the key changes. */
static void stop_ahead(const char *name, int e)
{
    LOG(LOG_WARN, "msg=\"free session directories not made ahead: new sessions make their "
        "own\" dir=%s/%s free=%zu sessions=%u wanted=%zu error=\"%s\"", S.cfg.state_dir, name,
        D.pool.len, S.nsessions, ahead_target(), strerror(e));
    D.ahead_failed = S.cfg.session_dirs_ahead;
}

size_t sdir_ahead_pending(void)
{
    return ahead_short() ? ahead_target() - D.pool.len - S.nsessions : 0;
}

/* Make up to budget free directories ahead (after the recycling: it fills the pool too). */
static void make_ahead(int budget)
{
    char name[32];

    if (D.ahead_round != S.cfg.session_dirs_ahead) {
        D.ahead_round = S.cfg.session_dirs_ahead;
        clock_gettime(CLOCK_MONOTONIC, &D.ahead_start);
    }
    while (budget-- > 0 && ahead_short()) {
        free_name(name, sizeof(name), D.next_free);
        if (mkdirat(D.dfd, name, 0700) == -1) {
            if (errno == EEXIST) {   /* not made by us: the next name */
                D.next_free++;
                continue;
            }
            stop_ahead(name, errno);
            return;
        }
        if (idq_push(&D.pool, POOL_ENTRY(D.next_free, 0)) < 0) {
            unlinkat(D.dfd, name, AT_REMOVEDIR);
            stop_ahead(name, ENOMEM);
            return;
        }
        D.next_free++;
    }
    if (D.ahead_said != D.ahead_round && !ahead_short()) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        LOG(LOG_INFO, "msg=\"free session directories ready\" free=%zu session_dirs_ahead=%u "
            "seconds=%.3f", D.pool.len, S.cfg.session_dirs_ahead,
            (double)(now.tv_sec - D.ahead_start.tv_sec) +
            (double)(now.tv_nsec - D.ahead_start.tv_nsec) / 1e9);
        D.ahead_said = D.ahead_round;
    }
}

/* Start over on cur, from its first entry. */
static void next_pass(void)
{
    rewinddir(D.cur);
    D.dirty = 0;
    D.spares = 0;
}

/* Removing cur did not work: log it, leave it where it is. */
static void give_up(const char *what, int e)
{
    LOG(LOG_WARN, "msg=\"%s\" dir=%s/%s error=\"%s\"", what, S.cfg.state_dir, D.cur_name,
        strerror(e));
    closedir(D.cur);
    D.cur = NULL;
}

/* The end of a pass over cur. */
static void finish_dir(void)
{
    if (D.recycle) {
        char name[32];
        if (D.dirty && ++D.passes < SDIR_PASSES) {
            next_pass();   /* to see that the pass left only spares (and nothing came since) */
            return;
        }
        if (!D.dirty) {
            if (!D.cur_id) {   /* an adopted free directory: in place already */
                idq_push(&D.pool, POOL_ENTRY(D.cur_free, D.spares));
                closedir(D.cur);
                D.cur = NULL;
                return;
            }
            free_name(name, sizeof(name), D.next_free);
            if (renameat2(D.dfd, D.cur_name, D.dfd, name, RENAME_NOREPLACE) == 0) {
                idq_push(&D.pool, POOL_ENTRY(D.next_free, D.spares));
                D.next_free++;
                S.stats.dirs_removed++;
                closedir(D.cur);
                D.cur = NULL;
                return;
            }
            if (errno == ENOENT) {
                closedir(D.cur);
                D.cur = NULL;
                return;
            }
            if (errno == EEXIST) {   /* not made by us: the next name, at the next call */
                D.next_free++;
                return;
            }
            LOG(LOG_DEBUG, "msg=\"session directory not recycled\" dir=%s/%s error=\"%s\"",
                S.cfg.state_dir, D.cur_name, strerror(errno));
        }
        D.recycle = 0;   /* something keeps writing there, or the rename failed: remove it */
        D.passes = 0;
        next_pass();
        return;
    }
    if (unlinkat(D.dfd, D.cur_name, AT_REMOVEDIR) == 0 || errno == ENOENT) {
        if (D.cur_id)
            S.stats.dirs_removed++;
    } else if (errno == ENOTEMPTY && ++D.passes < SDIR_PASSES) {
        next_pass();   /* a snapshot child wrote a file meanwhile */
        return;
    } else {
        give_up(D.cur_id ? "session directory not removed" : "free directory not removed",
                errno);
        return;
    }
    closedir(D.cur);
    D.cur = NULL;
}

/* Open the next directory to recycle or remove. 0, or -1 when it could not be opened (it is
 * dropped: gone already, or logged). */
static int open_next(void)
{
    if (D.doomed.len) {
        D.cur_id = idq_pop(&D.doomed);
        snprintf(D.cur_name, sizeof(D.cur_name), "%llu", ull(D.cur_id));
    } else {
        D.cur_id = 0;
        D.cur_free = idq_pop(&D.adopt);
        free_name(D.cur_name, sizeof(D.cur_name), D.cur_free);
    }
    D.passes = 0;
    D.dirty = 0;
    D.spares = 0;
    D.recycle = D.pool.len < pool_cap();   /* decided now: only this code fills the pool */
    int fd = openat(D.dfd, D.cur_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd == -1 || !(D.cur = fdopendir(fd))) {
        if (errno != ENOENT)
            LOG(LOG_WARN, "msg=\"session directory not removed\" dir=%s/%s error=\"%s\"",
                S.cfg.state_dir, D.cur_name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return 0;
}

/* One entry of cur: retired into a spare (recycling) or unlinked. */
static void step_entry(const struct dirent *d)
{
    int fd = dirfd(D.cur), type = d->d_type;

    if (D.recycle && type == DT_UNKNOWN) {
        struct stat st;
        if (fstatat(fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1)
            return;   /* gone */
        type = S_ISREG(st.st_mode) ? DT_REG : S_ISDIR(st.st_mode) ? DT_DIR : DT_UNKNOWN;
    }
    if (D.recycle && type == DT_DIR) {
        D.recycle = 0;   /* not ours: the directory is removed (and left, as before) */
        D.passes = 0;
        D.dirty = 1;
        return;
    }
    D.dirty = 1;
    int r = D.recycle && type == DT_REG ? snap_retire(fd, d->d_name, 1)
                                        : unlinkat(fd, d->d_name, 0) == -1 ? -errno : 0;
    if (r < 0 && r != -ENOENT)
        LOG(LOG_DEBUG, "msg=\"unlink\" dir=%s file=%s error=\"%s\"", D.cur_name, d->d_name,
            strerror(-r));
}

void sdir_step(void)
{
    int budget = SDIR_STEP;

    while (budget > 0 && recycling()) {
        struct dirent *d;
        if (!D.cur && open_next() < 0) {
            budget--;
            continue;
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
        if (D.recycle && snap_is_spare(d->d_name)) {
            /* It stays for the next session, emptied: the ended session's prunes left its
             * old contents there (snap_retire), which the next one must not read. */
            int r = snap_retire(dirfd(D.cur), d->d_name, 1);
            if (r < 0 && r != -ENOENT)
                LOG(LOG_DEBUG, "msg=\"spare not emptied\" dir=%s file=%s error=\"%s\"",
                    D.cur_name, d->d_name, strerror(-r));
            D.spares += r == 0;
            budget--;
            continue;
        }
        step_entry(d);
        budget--;
    }
    if (budget > 0 && ahead_short())   /* budget left: the recycling is done */
        make_ahead(budget < SDIR_AHEAD_STEP ? budget : SDIR_AHEAD_STEP);
}
